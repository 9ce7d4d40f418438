"""End to end over real HTTP: the sandbox calls a CallbackReceiver under uvicorn."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import pytest
import respx

from decisiontelecom_viber import (
    AsyncViberClient,
    CallbackEvent,
    CallbackReceiver,
    ConfigurationError,
    IncomingMessage,
    MessageStatus,
    SendResult,
    StatusCallback,
    ViberMessage,
    signed_callback_url,
    verify_callback_token,
)
from decisiontelecom_viber.sandbox import SandboxServer

from .helpers import eventually, json_response
from .servers import serve_in_thread


SECRET = "callback-secret-0123456789abcdef"
OLD_SECRET = "retired-secret-fedcba9876543210"

MakeClient = Callable[..., AsyncViberClient]
Event = TypeVar("Event", StatusCallback, IncomingMessage)


class Collected:
    """Events the receiver's handlers got (they run in the server's thread)."""

    def __init__(self) -> None:
        self.events: list[CallbackEvent] = []
        self.lock = threading.Lock()

    async def on_status(self, event: StatusCallback) -> None:
        with self.lock:
            self.events.append(event)

    async def on_message(self, event: IncomingMessage) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture(scope="module")
def served_receiver() -> Iterator[tuple[Collected, CallbackReceiver, str]]:
    collected = Collected()
    receiver = CallbackReceiver(
        on_status=collected.on_status,
        on_message=collected.on_message,
        secret=[SECRET, OLD_SECRET],
    )
    with serve_in_thread(receiver) as root:
        yield collected, receiver, f"{root}/viber/callbacks"


@pytest.fixture
def receiver(
    served_receiver: tuple[Collected, CallbackReceiver, str],
) -> tuple[Collected, CallbackReceiver, str]:
    collected = served_receiver[0]
    with collected.lock:
        collected.events.clear()
    return served_receiver


pytestmark = pytest.mark.integration


@pytest.mark.viber_sandbox(seen_fraction=1.0, reply_fraction=1.0)
async def test_status_callbacks_and_a_reply_arrive_typed(
    viber_sandbox: SandboxServer,
    make_client: MakeClient,
    receiver: tuple[Collected, CallbackReceiver, str],
) -> None:
    """The client signs the URL; the receiver gets typed events with the right IDs."""
    collected, _, url = receiver
    client = make_client(
        access_key=viber_sandbox.access_key,
        base_url=viber_sandbox.base_url,
        callback_url=url,
        callback_secret=SECRET,
        callback_reference=lambda message: f"order-{message.receiver}",
    )
    message_id = await client.send_message(
        ViberMessage(
            sender="Acme",
            receiver="972512222222",
            message_type=206,
            source_type=1,
            text="Shall we call you back?",
        )
    )
    viber_sandbox.sandbox.advance(100)

    await eventually(
        lambda: (
            len(collected.of(StatusCallback)) == 3
            and len(collected.of(IncomingMessage)) == 1
        )
    )
    statuses = collected.of(StatusCallback)
    (reply,) = collected.of(IncomingMessage)

    assert [MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.SEEN] == [
        s.status for s in statuses
    ]
    assert {message_id} == {s.message_id for s in statuses}
    assert message_id == reply.reply_to_message_id
    assert "972512222222" == reply.phone_number
    assert "Yes, please" == reply.text
    assert reply.time.tzinfo is not None
    assert {"order-972512222222"} == {e.reference for e in collected.events}
    sent_url = viber_sandbox.sandbox.message(message_id).payload["callback_url"]
    assert verify_callback_token(httpx.URL(sent_url).query, SECRET)


async def test_forged_and_unsigned_requests_are_refused(
    receiver: tuple[Collected, CallbackReceiver, str],
) -> None:
    """Without the secret nobody gets a callback accepted."""
    collected, served, url = receiver
    body = {"message_id": 1, "status": 1}
    forged = signed_callback_url(url, "not-the-secret-at-all-0123456789")
    rotated = signed_callback_url(url, OLD_SECRET)
    async with httpx.AsyncClient() as http:
        unsigned = await http.post(url, json=body)
        wrong = await http.post(forged, json=body)
        tampered = await http.post(
            signed_callback_url(url, SECRET, reference="a").replace("ref=a", "ref=b"),
            json=body,
        )
        old_key = await http.post(rotated, json=body)

    assert (403, 403, 403) == (
        unsigned.status_code,
        wrong.status_code,
        tampered.status_code,
    )
    assert 200 == old_key.status_code
    assert 1 == len(collected.events)
    assert served.stats.rejected >= 3


async def test_bad_payload_is_a_400_not_a_500(
    receiver: tuple[Collected, CallbackReceiver, str],
) -> None:
    """Malformed but signed bodies get 400 with the reason."""
    _, _, url = receiver
    async with httpx.AsyncClient() as http:
        response = await http.post(
            signed_callback_url(url, SECRET),
            content=b'{"message_id": "x", "status": 1}',
        )

    assert 400 == response.status_code
    assert "message_id" in response.text


def callback_ref(result: SendResult) -> str:
    """The ``ref`` of the callback URL the client gave a message it sent."""
    assert isinstance(result.message, ViberMessage)
    assert result.message.callback_url is not None
    return httpx.URL(result.message.callback_url).params["ref"]


class TestClientSigning:
    async def test_messages_without_a_callback_url_get_the_signed_one(
        self, api: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """The configured URL is added and signed; a message's own URL is kept."""
        client = make_client(
            rate_limit=None,
            callback_url="https://hooks.example.com/viber?tenant=7",
            callback_secret=[SECRET, OLD_SECRET],
        )
        route = api.post("/send-viber").mock(json_response(200, {"message_id": 1}))

        await client.send_message(
            ViberMessage.transactional(sender="A", receiver="380501234567", text="t")
        )
        await client.send_message(
            ViberMessage.transactional(
                sender="A",
                receiver="380501234567",
                text="t",
                callback_url="https://own.example.com/cb",
            )
        )

        first, second = (json.loads(call.request.content) for call in route.calls)
        url = httpx.URL(first["callback_url"])
        assert "hooks.example.com" == url.host
        assert "7" == url.params["tenant"]
        assert verify_callback_token(url.query, SECRET)
        assert "https://own.example.com/cb" == second["callback_url"]

    async def test_bulk_items_are_signed_with_their_reference(
        self, api: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """Each item gets its own reference in its URL; results show the URL used."""
        client = make_client(
            rate_limit=None,
            callback_url="https://hooks.example.com/viber",
            callback_secret=SECRET,
            callback_reference=lambda m: f"r-{m.receiver}",
        )
        api.post("/send-viber").mock(json_response(200, {"message_id": 1}))
        messages = [
            ViberMessage.transactional(sender="A", receiver=f"38050{n:07d}", text="t")
            for n in range(3)
        ]

        results = [r async for r in client.send_messages(messages)]

        refs = sorted(callback_ref(r) for r in results)
        assert [f"r-38050{n:07d}" for n in range(3)] == refs

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"callback_secret": SECRET},
            {"callback_reference": str},
            {"callback_url": "not a url", "callback_secret": SECRET},
            {"callback_url": "https://h.example.com/cb", "callback_secret": ""},
        ],
    )
    def test_bad_settings(
        self, make_client: MakeClient, kwargs: dict[str, object]
    ) -> None:
        """A secret without a URL, a bad URL or an empty secret fail at construction."""
        with pytest.raises(ConfigurationError):
            make_client(**kwargs)
