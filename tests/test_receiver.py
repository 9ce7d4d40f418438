"""CallbackReceiver over ASGI: dispatch, refusals, failures, repeats, lifespan."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import attrs
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from decisiontelecom_viber import ConfigurationError, MessageStatus
from decisiontelecom_viber._asgi import Message
from decisiontelecom_viber._callbacks import IncomingMessage, StatusCallback
from decisiontelecom_viber._receiver import CallbackReceiver, ReceiverStats
from decisiontelecom_viber._signing import signed_callback_url


SECRET = "receiver-secret-0123456789abcdef"
OLD_SECRET = "receiver-old-secret-0123456789ab"
PHONE = "972512222222"
TEXT = "my card number is 4111"
REPLY: dict[str, Any] = {
    "message_token": 44444444444444,
    "phone_number": PHONE,
    "time": 2121212121,
    "message": {"text": TEXT, "tracking_data": "tracking_id:100035"},
}
STATUS: dict[str, Any] = {"message_id": 429, "status": 1}


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


class Recorder:
    """Async handlers that record events; they can be told to fail or to wait."""

    def __init__(self) -> None:
        self.statuses: list[StatusCallback] = []
        self.messages: list[IncomingMessage] = []
        self.failures: list[BaseException] = []
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def _run(self) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)

    async def on_status(self, event: StatusCallback) -> None:
        self.statuses.append(event)
        await self._run()

    async def on_message(self, event: IncomingMessage) -> None:
        self.messages.append(event)
        await self._run()

    @property
    def calls(self) -> int:
        return len(self.statuses) + len(self.messages)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_receiver(recorder: Recorder, **kwargs: Any) -> CallbackReceiver:
    kwargs.setdefault("on_status", recorder.on_status)
    kwargs.setdefault("on_message", recorder.on_message)
    return CallbackReceiver(**kwargs)


async def post(
    app: Any,
    content: bytes | Iterable[bytes] | AsyncIterator[bytes] = b"",
    *,
    url: str = "/callbacks",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, content=content, headers=headers)


class ASGICall:
    """Drives the app directly, for what httpx cannot show (chunks, disconnects)."""

    def __init__(self, messages: Iterable[Message]) -> None:
        self.incoming: list[Message] = list(messages)
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        return self.incoming.pop(0)

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


def http_scope(
    *, headers: Iterable[tuple[bytes, bytes]] = (), query: bytes = b""
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": query,
        "headers": list(headers),
    }


def body_messages(*chunks: bytes) -> list[dict[str, Any]]:
    return [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]


class TestDispatch:
    async def test_status_callback_goes_to_on_status(self, recorder: Recorder) -> None:
        """A status callback is awaited by on_status with its IDs, and answered 200."""
        response = await post(make_receiver(recorder), encode(STATUS))

        assert (200, "ok") == (response.status_code, response.text)
        assert [StatusCallback(message_id=429, status=MessageStatus.DELIVERED)] == (
            recorder.statuses
        )
        assert [] == recorder.messages

    async def test_reply_goes_to_on_message(self, recorder: Recorder) -> None:
        """A 2Way reply is awaited by on_message with token, phone and replied ID."""
        response = await post(make_receiver(recorder), encode(REPLY))

        assert 200 == response.status_code
        [event] = recorder.messages
        assert (44444444444444, PHONE, TEXT, 100035) == (
            event.message_token,
            event.phone_number,
            event.text,
            event.reply_to_message_id,
        )
        assert REPLY == event.raw
        assert [] == recorder.statuses

    async def test_event_without_handler_is_acknowledged(
        self, recorder: Recorder, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No handler for the event type: 200, and a DEBUG line says so."""
        receiver = CallbackReceiver(on_message=recorder.on_message)

        with caplog.at_level(logging.DEBUG, logger="decisiontelecom_viber"):
            response = await post(receiver, encode(STATUS))

        assert 200 == response.status_code
        assert 0 == recorder.calls
        assert ["DEBUG"] == [
            r.levelname for r in caplog.records if "without a handler" in r.message
        ]
        assert ReceiverStats(received=1, dispatched=1) == receiver.stats

    async def test_any_path_is_served(self, recorder: Recorder) -> None:
        """The receiver does not route: every path reaches it."""
        response = await post(make_receiver(recorder), encode(STATUS), url="/a/b/c")

        assert 200 == response.status_code
        assert 1 == recorder.calls

    async def test_mounted_in_starlette(self, recorder: Recorder) -> None:
        """Mounted with Starlette's Mount, it receives callbacks under the prefix."""
        receiver = make_receiver(recorder, secret=SECRET)
        app = Starlette(routes=[Mount("/viber", app=receiver)])
        url = receiver.sign_url("http://test/viber/callbacks", reference="order-9")

        response = await post(app, encode(STATUS), url=url)

        assert 200 == response.status_code
        assert ["order-9"] == [event.reference for event in recorder.statuses]


class TestRefusals:
    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"])
    async def test_only_post(self, recorder: Recorder, method: str) -> None:
        """Other methods answer 405 with Allow: POST, and nothing is handled."""
        receiver = make_receiver(recorder)

        response = await post(receiver, encode(STATUS), method=method)

        assert (405, "POST") == (response.status_code, response.headers["allow"])
        assert 0 == recorder.calls
        assert ReceiverStats() == receiver.stats

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"not json", "body is not valid JSON"),
            (b"", "body is not valid JSON"),
            (b"[]", "body must be a JSON object, not array"),
            (encode({"message_id": 1}), "status is missing"),
            (encode({**REPLY, "phone_number": [PHONE]}), "phone_number must be a"),
            (b"[" * 50_000, "body is nested too deeply"),
        ],
    )
    async def test_malformed_body_is_400_with_reason(
        self, recorder: Recorder, body: bytes, reason: str
    ) -> None:
        """A malformed body answers 400 with the parser's reason, never 500."""
        receiver = make_receiver(recorder)

        response = await post(receiver, body)

        assert 400 == response.status_code
        assert response.text.startswith(reason), response.text
        assert response.headers["content-type"].startswith("text/plain")
        assert 0 == recorder.calls
        assert ReceiverStats(received=1, rejected=1) == receiver.stats

    async def test_missing_token_is_403(self, recorder: Recorder) -> None:
        """With a secret, a request without a token answers 403."""
        response = await post(make_receiver(recorder, secret=SECRET), encode(STATUS))

        assert (403, "missing token") == (response.status_code, response.text)
        assert 0 == recorder.calls

    async def test_wrong_token_is_403(self, recorder: Recorder) -> None:
        """A token made with another secret answers 403."""
        url = signed_callback_url("http://test/callbacks", "someone-elses-secret")

        response = await post(
            make_receiver(recorder, secret=SECRET), encode(STATUS), url=url
        )

        assert (403, "invalid token") == (response.status_code, response.text)
        assert 0 == recorder.calls

    async def test_token_bound_to_reference(self, recorder: Recorder) -> None:
        """A valid token moved to another reference answers 403."""
        receiver = make_receiver(recorder, secret=SECRET)
        url = receiver.sign_url("http://test/callbacks", reference="order-1")

        response = await post(
            receiver, encode(STATUS), url=url.replace("order-1", "order-2")
        )

        assert 403 == response.status_code
        assert 0 == recorder.calls

    async def test_token_checked_before_the_body(self, recorder: Recorder) -> None:
        """An unauthenticated request gets 403 even when its body is garbage."""
        response = await post(make_receiver(recorder, secret=SECRET), b"garbage")

        assert 403 == response.status_code

    async def test_valid_token_passes_and_reference_reaches_the_event(
        self, recorder: Recorder
    ) -> None:
        """A signed URL is accepted, and its ref shows on the event."""
        receiver = make_receiver(recorder, secret=SECRET)
        url = receiver.sign_url("http://test/callbacks?tenant=acme", reference="o-7")

        response = await post(receiver, encode(REPLY), url=url)

        assert 200 == response.status_code
        assert ["o-7"] == [event.reference for event in recorder.messages]

    async def test_rotation(self, recorder: Recorder) -> None:
        """With [new, old] secrets, URLs signed with either are accepted."""
        receiver = make_receiver(recorder, secret=[SECRET, OLD_SECRET])
        old_url = signed_callback_url("http://test/cb", OLD_SECRET, reference="1")
        new_url = receiver.sign_url("http://test/cb", reference="2")

        statuses = [
            (await post(receiver, encode(STATUS), url=url)).status_code
            for url in (old_url, new_url)
        ]

        assert [200, 200] == statuses
        assert ["1", "2"] == [event.reference for event in recorder.statuses]
        assert new_url == signed_callback_url("http://test/cb", SECRET, reference="2")

    async def test_no_secret_means_no_check(self, recorder: Recorder) -> None:
        """Without a secret any token is ignored; ref is still passed on."""
        receiver = make_receiver(recorder)

        response = await post(receiver, encode(STATUS), url="/cb?ref=r1&token=junk")

        assert 200 == response.status_code
        assert ["r1"] == [event.reference for event in recorder.statuses]

    async def test_content_length_over_limit_is_413(self, recorder: Recorder) -> None:
        """A declared length above max_body_bytes answers 413 before reading."""
        receiver = make_receiver(recorder, max_body_bytes=100)
        call = ASGICall(body_messages(b"x" * 101))

        await receiver(
            http_scope(headers=[(b"content-length", b"101")]), call.receive, call.send
        )

        assert 413 == call.status
        assert 0 == call.received

    async def test_absurd_content_length_is_413(self, recorder: Recorder) -> None:
        """A Content-Length of thousands of digits is too large, not a crash."""
        call = ASGICall(body_messages(encode(STATUS)))

        await make_receiver(recorder)(
            http_scope(headers=[(b"content-length", b"9" * 5000)]),
            call.receive,
            call.send,
        )

        assert 413 == call.status

    async def test_body_at_limit_is_read(self, recorder: Recorder) -> None:
        """A body of exactly max_body_bytes is accepted; one byte more is not."""
        body = encode({**STATUS, "pad": ""})
        body = encode({**STATUS, "pad": "x" * (200 - len(body))})
        receiver = make_receiver(recorder, max_body_bytes=200)

        ok = await post(receiver, body)
        too_big = await post(receiver, body + b" ")

        assert (200, 413) == (ok.status_code, too_big.status_code)
        assert 200 == len(body)

    async def test_streamed_body_stops_one_chunk_past_the_limit(
        self, recorder: Recorder
    ) -> None:
        """Without Content-Length, reading stops at the chunk that crosses the limit."""
        receiver = make_receiver(recorder, max_body_bytes=25)
        call = ASGICall(body_messages(*[b"x" * 10] * 100))

        await receiver(http_scope(), call.receive, call.send)

        assert (413, 3) == (call.status, call.received)
        assert 0 == recorder.calls

    async def test_chunked_body_through_httpx(self, recorder: Recorder) -> None:
        """A chunked upload under the limit is assembled and dispatched."""
        body = encode(STATUS)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 4):
                yield body[i : i + 4]

        response = await post(make_receiver(recorder), chunks())

        assert 200 == response.status_code
        assert [429] == [event.message_id for event in recorder.statuses]

    @pytest.mark.parametrize("value", [b"abc", b"-1", b""])
    async def test_invalid_content_length_is_400(
        self, recorder: Recorder, value: bytes
    ) -> None:
        """A Content-Length that is not a number answers 400."""
        call = ASGICall(body_messages(encode(STATUS)))

        await make_receiver(recorder)(
            http_scope(headers=[(b"content-length", value)]), call.receive, call.send
        )

        assert 400 == call.status

    async def test_client_disconnect_sends_nothing(self, recorder: Recorder) -> None:
        """If the client goes away mid-body, nothing is handled or answered."""
        call = ASGICall(
            [
                {"type": "http.request", "body": b'{"message_id"', "more_body": True},
                {"type": "http.disconnect"},
            ]
        )

        await make_receiver(recorder)(http_scope(), call.receive, call.send)

        assert [] == call.sent
        assert 0 == recorder.calls


class TestHandlerFailures:
    async def test_exception_is_500_and_logged(
        self, recorder: Recorder, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A handler's exception answers 500 and is logged with its traceback."""
        recorder.failures.append(RuntimeError("database down"))
        receiver = make_receiver(recorder)

        with caplog.at_level(logging.DEBUG, logger="decisiontelecom_viber"):
            response = await post(receiver, encode(REPLY))

        assert 500 == response.status_code
        [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "decisiontelecom_viber" == record.name
        assert record.exc_info is not None
        assert RuntimeError is record.exc_info[0]
        assert ReceiverStats(received=1, failed=1) == receiver.stats

    async def test_cancellation_propagates(self, recorder: Recorder) -> None:
        """CancelledError from a handler is not turned into a 500."""
        recorder.failures.append(asyncio.CancelledError())
        receiver = make_receiver(recorder, deduplicate=10)
        call = ASGICall(body_messages(encode(STATUS)))

        with pytest.raises(asyncio.CancelledError):
            await receiver(http_scope(), call.receive, call.send)

        assert [] == call.sent
        # The cancelled delivery is not remembered: a redelivery is handled.
        response = await post(receiver, encode(STATUS))
        assert 200 == response.status_code
        assert 2 == recorder.calls

    async def test_logs_mask_phone_numbers_and_texts(
        self, recorder: Recorder, caplog: pytest.LogCaptureFixture
    ) -> None:
        """At DEBUG, and when a handler fails, no phone number or text is logged."""
        recorder.failures.append(RuntimeError("boom"))
        receiver = make_receiver(recorder)

        with caplog.at_level(logging.DEBUG):
            await post(receiver, encode(REPLY))
            await post(receiver, encode(REPLY))
            await post(receiver, encode({**REPLY, "phone_number": [PHONE]}))

        assert caplog.records
        assert PHONE not in caplog.text
        assert TEXT not in caplog.text
        assert "**********22" in caplog.text
        assert "44444444444444" in caplog.text


class TestDeduplication:
    async def test_repeat_is_acknowledged_without_handler(
        self, recorder: Recorder
    ) -> None:
        """The same payload twice: the handler runs once, both answers are 200."""
        receiver = make_receiver(recorder, deduplicate=100)

        first = await post(receiver, encode(REPLY))
        second = await post(receiver, json.dumps(REPLY, indent=4).encode())
        reordered = dict(reversed(list(REPLY.items())))
        third = await post(receiver, encode(reordered))

        assert [200, 200, 200] == [r.status_code for r in (first, second, third)]
        assert "ok (duplicate)" == second.text
        assert 1 == recorder.calls
        assert ReceiverStats(received=3, dispatched=1, duplicates=2) == receiver.stats

    async def test_off_by_default(self, recorder: Recorder) -> None:
        """Without deduplicate, every delivery reaches the handler."""
        receiver = make_receiver(recorder)

        await post(receiver, encode(STATUS))
        await post(receiver, encode(STATUS))

        assert 2 == recorder.calls

    async def test_different_payloads_or_references_are_not_repeats(
        self, recorder: Recorder
    ) -> None:
        """Another status, or the same body for another reference, is handled."""
        receiver = make_receiver(recorder, deduplicate=100)

        await post(receiver, encode(STATUS))
        await post(receiver, encode({**STATUS, "status": 6}))
        await post(receiver, encode(STATUS), url="/cb?ref=a")
        await post(receiver, encode(STATUS), url="/cb?ref=b")

        assert 4 == recorder.calls

    async def test_lru_forgets_the_oldest(self, recorder: Recorder) -> None:
        """With room for two, a third payload evicts the least recently seen."""
        receiver = make_receiver(recorder, deduplicate=2)
        a, b, c = (encode({**STATUS, "message_id": n}) for n in (1, 2, 3))

        for body in (a, b, a, c, a, b):
            await post(receiver, body)

        # a, b handled; a repeat (refreshed); c evicts b; a repeat; b handled.
        assert [1, 2, 3, 2] == [event.message_id for event in recorder.statuses]

    async def test_failed_delivery_is_not_remembered(self, recorder: Recorder) -> None:
        """After a handler failure the redelivery is handled; then it is a repeat."""
        recorder.failures.append(RuntimeError("flaky"))
        receiver = make_receiver(recorder, deduplicate=10)

        answers = [(await post(receiver, encode(STATUS))).status_code for _ in range(3)]

        assert [500, 200, 200] == answers
        assert 2 == recorder.calls

    @pytest.mark.parametrize(
        ("fail", "expected"), [(False, (200, 200)), (True, (500, 500))]
    )
    async def test_concurrent_repeat_waits_for_the_first(
        self, recorder: Recorder, fail: bool, expected: tuple[int, int]
    ) -> None:
        """A repeat arriving while the first is handled shares the first's outcome."""
        recorder.gate = asyncio.Event()
        if fail:
            recorder.failures.append(RuntimeError("slow and broken"))
        receiver = make_receiver(recorder, deduplicate=10)
        first = ASGICall(body_messages(encode(STATUS)))
        second = ASGICall(body_messages(encode(STATUS)))

        task1 = asyncio.create_task(receiver(http_scope(), first.receive, first.send))
        await recorder.entered.wait()
        task2 = asyncio.create_task(receiver(http_scope(), second.receive, second.send))
        for _ in range(5):  # let the repeat reach its wait; no real time passes
            await asyncio.sleep(0)
        assert not task2.done()
        recorder.gate.set()
        await asyncio.gather(task1, task2)

        assert expected == (first.status, second.status)
        assert 1 == recorder.calls


class TestLifecycle:
    async def test_lifespan(self) -> None:
        """Startup and shutdown are acknowledged, then the lifespan call returns."""
        call = ASGICall([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        await CallbackReceiver()({"type": "lifespan"}, call.receive, call.send)

        assert [
            {"type": "lifespan.startup.complete"},
            {"type": "lifespan.shutdown.complete"},
        ] == call.sent

    async def test_websocket_is_refused(self) -> None:
        """A websocket connection is closed before it is accepted."""
        call = ASGICall([{"type": "websocket.connect"}])

        await CallbackReceiver()({"type": "websocket"}, call.receive, call.send)

        assert ["websocket.close"] == [m["type"] for m in call.sent]

    def test_stats_are_a_frozen_snapshot(self) -> None:
        """stats returns an immutable snapshot that later requests do not change."""
        stats = CallbackReceiver().stats

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            stats.received = 5  # type: ignore[misc]
        assert ReceiverStats() == stats

    async def test_snapshot_does_not_move(self, recorder: Recorder) -> None:
        """A snapshot taken earlier keeps its numbers."""
        receiver = make_receiver(recorder)
        before = receiver.stats

        await post(receiver, encode(STATUS))

        assert (0, 1) == (before.received, receiver.stats.received)

    @pytest.mark.parametrize(
        "kwargs",
        [
            pytest.param({"secret": ""}, id="empty-secret"),
            pytest.param({"secret": []}, id="no-secrets"),
            pytest.param({"secret": [SECRET, b""]}, id="one-empty-secret"),
            pytest.param({"max_body_bytes": 0}, id="zero-size"),
            pytest.param({"max_body_bytes": True}, id="bool-size"),
            pytest.param({"deduplicate": -1}, id="negative-dedupe"),
            pytest.param({"deduplicate": 1.5}, id="float-dedupe"),
            pytest.param({"token_param": ""}, id="empty-param"),
            pytest.param({"token_param": "ref"}, id="param-is-ref"),
            pytest.param({"on_status": "not callable"}, id="bad-handler"),
        ],
    )
    def test_bad_configuration(self, kwargs: dict[str, Any]) -> None:
        """Invalid arguments fail at construction with ConfigurationError."""
        with pytest.raises(ConfigurationError):
            CallbackReceiver(**kwargs)

    def test_sign_url_needs_a_secret(self) -> None:
        """sign_url without a secret is a configuration error."""
        with pytest.raises(ConfigurationError):
            CallbackReceiver().sign_url("https://example.com/cb")

    async def test_custom_token_param(self, recorder: Recorder) -> None:
        """token_param names the query parameter for both signing and checking."""
        receiver = make_receiver(recorder, secret=SECRET, token_param="sig")
        url = receiver.sign_url("http://test/cb")

        ok = await post(receiver, encode(STATUS), url=url)
        renamed = await post(
            receiver, encode(STATUS), url=url.replace("sig=", "token=")
        )

        assert "sig=" in url
        assert (200, 403) == (ok.status_code, renamed.status_code)
