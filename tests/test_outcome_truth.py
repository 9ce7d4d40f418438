"""Every outcome true on every path, against a server doing exactly what tests say.

The server is `tests.rawhttp.RawServer`: raw HTTP/1.1 over loopback, each
answer scripted byte for byte. A request it has read in full is one the API
"has": the SDK must never report it as failed, and must never send a
message twice. Each test is run with the default transport and, where the
path differs, with a user's `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from decisiontelecom_viber import (
    AdaptiveLimiter,
    AmbiguousServerError,
    APIConnectionError,
    AsyncViberClient,
    ClientClosedError,
    ConfigurationError,
    DeadlineExceededError,
    Feedback,
    GatewayTimeoutError,
    InvalidParameterError,
    LimiterError,
    OutcomeUnknownError,
    RateLimit,
    RateLimitError,
    RetryPolicy,
    SendOutcome,
    ServerError,
    StatusTimeoutError,
    UnexpectedResponseError,
    ValidationError,
    ViberMessage,
)

from . import rawhttp as raw
from .helpers import FakeClock, eventually


pytestmark = pytest.mark.integration

KEY = "raw-server-access-key"
MESSAGE = ViberMessage.transactional(sender="Acme", receiver="380501234567", text="hi")
SLACK = 0.75
RATE_LIMITED = {
    "name": "Too Many Requests",
    "message": "Rate limit exceeded",
    "code": 0,
    "status": 429,
}

MakeClient = Callable[..., AsyncViberClient]


@pytest.fixture
async def server() -> AsyncIterator[raw.RawServer]:
    async with raw.RawServer() as running:
        yield running


@pytest.fixture(params=["default-transport", "user-http-client"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_client(transport: str) -> AsyncIterator[MakeClient]:
    """Clients of *server* through the transport under test; closed afterwards."""
    made: list[AsyncViberClient] = []
    users: list[httpx.AsyncClient] = []

    def make(server: raw.RawServer, **kwargs: Any) -> AsyncViberClient:
        kwargs.setdefault("access_key", KEY)
        kwargs.setdefault("rate_limit", None)
        if transport == "user-http-client" and "http_client" not in kwargs:
            kwargs["http_client"] = httpx.AsyncClient(
                timeout=kwargs.pop("timeout", httpx.Timeout(5.0))
            )
            users.append(kwargs["http_client"])
        client = AsyncViberClient(base_url=server.base_url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
    for user in users:
        await user.aclose()


def message(n: int) -> ViberMessage:
    return ViberMessage.transactional(sender="Acme", receiver=f"38050{n:07d}", text="x")


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.elapsed = time.monotonic() - self.started


# -- 1. statuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    "status", [500, 502, 503, 504, 520, 521, 522, 524, 527, 530, 598, 599, 501]
)
async def test_a_gateway_status_is_unknown_and_never_resent(
    server: raw.RawServer, make_client: MakeClient, status: int
) -> None:
    """A CDN's 5xx may follow the API's processing: one request, outcome unknown."""
    server.then(raw.respond(status, "<html>origin timeout</html>"), raw.accepted(1))
    client = make_client(server)

    with pytest.raises(AmbiguousServerError) as info:
        await client.send_message(MESSAGE)

    assert 1 == len(server.received)
    assert SendOutcome.UNKNOWN is SendOutcome.of(info.value)


@pytest.mark.parametrize("status", [301, 302, 307, 404, 405, 408, 409, 413, 418])
async def test_a_status_without_meaning_is_unknown_and_never_resent(
    server: raw.RawServer, make_client: MakeClient, status: int
) -> None:
    """A status the SDK does not know, without an API error body: unknown."""
    server.then(raw.respond(status, "nope", headers=[("Location", "/x")]))
    client = make_client(server)

    with pytest.raises(UnexpectedResponseError):
        await client.send_message(MESSAGE)

    assert 1 == len(server.received)


API_FAILURE = {
    "name": "Internal server error",
    "message": "The server encountered an unexpected condition",
    "code": 2,
}


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_the_apis_own_failures_are_retried(
    server: raw.RawServer, make_client: MakeClient, status: int
) -> None:
    """The API's own 500/502/503 (its error body): not processed, so retried."""
    server.then(
        raw.respond(status, {**API_FAILURE, "status": status}), raw.accepted(77)
    )
    client = make_client(server, retry=RetryPolicy(wait_initial=0.01, wait_max=0.01))

    assert 77 == await client.send_message(MESSAGE)
    assert 2 == len(server.received)


async def test_a_lookup_retries_a_gateway_timeout(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Status lookups are read-only: a 524 is simply asked again."""
    server.then(
        raw.respond(524, ""),
        raw.respond(200, {"message_id": 5, "status": 1}),
    )
    client = make_client(server, retry=RetryPolicy(wait_initial=0.01, wait_max=0.01))

    receipt = await client.get_message_status(5)

    assert 1 == receipt.status
    assert 2 == len(server.received)


# -- 2. deadlines before sending ---------------------------------------------------


async def test_the_limiter_never_lets_a_request_out_past_the_deadline(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Queued at 1/s with a 3 s deadline: the late ones are refused, unsent."""
    clock = FakeClock()
    client = make_client(
        server,
        rate_limit=RateLimit(rate=1, adaptive=False),
        retry=RetryPolicy(timeout=3.0),
        clock=clock,
    )

    outcomes = await asyncio.gather(
        *(client.send_message(message(n)) for n in range(10)), return_exceptions=True
    )

    sent = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, DeadlineExceededError)]
    # Slots at 0, 1 and 2 s; 2.4 s is the last moment to write (3 s less the
    # reserve kept for the answer).
    assert (3, 7) == (len(sent), len(refused))
    assert 3 == len(server.received)
    assert all(SendOutcome.FAILED is SendOutcome.of(e) for e in refused)
    # Refused as soon as their slot was known to come too late, not at it.
    assert clock.now - 1000.0 <= 2.0


async def test_a_retry_after_past_the_deadline_sends_nothing_more(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """429 with Retry-After 28 s under the default 25 s deadline: failed, 1 sent."""
    clock = FakeClock()
    server.then(
        raw.respond(429, RATE_LIMITED, headers=[("Retry-After", "28")]),
        raw.accepted(9),
    )
    client = make_client(server, rate_limit=RateLimit(), clock=clock)

    with pytest.raises((DeadlineExceededError, RateLimitError)) as info:
        await client.send_message(MESSAGE)

    assert 1 == len(server.received)
    assert SendOutcome.FAILED is SendOutcome.of(info.value)
    assert clock.now - 1000.0 <= 25.0


async def test_a_bulk_send_slower_than_its_deadline_sends_every_row(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """36 rows at 40/s, 32 at once, a 0.4 s deadline: queueing is not waiting.

    The last rows wait about 0.9 s for their slot; an item's deadline starts
    when the limiter lets it go, so each is sent with its whole deadline.
    """
    server.default = raw.delayed(0.02, raw.accepted(5))
    client = make_client(
        server,
        rate_limit=RateLimit(rate=40, adaptive=False),
        retry=RetryPolicy(timeout=0.4),
    )

    async with client.send_messages(message(n) for n in range(36)) as results:
        outcomes = [result.outcome async for result in results]

    assert [SendOutcome.SENT] * 36 == outcomes
    assert 36 == len(server.received)


async def test_single_sends_count_the_limiter_wait_against_their_deadline(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """The same queue of single calls: whatever may not finish in time fails, unsent."""
    server.default = raw.delayed(0.02, raw.accepted(5))
    client = make_client(
        server,
        rate_limit=RateLimit(rate=40, adaptive=False),
        retry=RetryPolicy(timeout=0.4),
    )

    outcomes = await asyncio.gather(
        *(client.send_message(message(n)) for n in range(36)), return_exceptions=True
    )

    sent = sum(isinstance(o, int) for o in outcomes)
    assert all(isinstance(o, (int, DeadlineExceededError)) for o in outcomes)
    assert sent == len(server.received)
    assert 10 <= sent <= 16  # slots up to 0.32 s (0.4 s less the answer's reserve)


# -- 3. the deadline binds the whole call ------------------------------------------


async def test_a_trickled_answer_ends_at_the_deadline(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """A byte every 0.15 s never trips a read timeout; the deadline still binds."""
    server.then(raw.trickle(200, b'{"message_id": 123456789}', every=0.15))
    client = make_client(server, retry=RetryPolicy(timeout=1.0))

    with Stopwatch() as watch, pytest.raises(OutcomeUnknownError) as info:
        await client.send_message(MESSAGE)

    assert "deadline" in info.value.reason
    assert watch.elapsed <= 1.0 + SLACK
    assert 1 == len(server.received)


# -- 4. aclose ---------------------------------------------------------------------


class BlockingLimiter:
    """A `Limiter` that holds every caller until released (a long wait)."""

    current_rate = None
    estimated_limit = None

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0

    def bind(self, clock: object) -> None:
        pass

    async def acquire(self, deadline: float | None = None) -> Permit:
        self.waiting += 1
        await self.gate.wait()
        return Permit()


class Permit:
    waited = 0.0

    def release(self, feedback: Feedback) -> None:
        pass


async def test_aclose_finishes_what_was_written_and_fails_what_was_not(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Written sends keep their IDs; waiting ones fail as never sent."""
    answer = asyncio.Event()
    server.then(*[raw.hold(answer, raw.accepted(n)) for n in range(4)])
    written_client = make_client(server)
    limiter = BlockingLimiter()
    waiting_client = make_client(server, rate_limit=limiter)

    written = [asyncio.create_task(written_client.send_message(MESSAGE)) for _ in "ab"]
    waiting = [asyncio.create_task(waiting_client.send_message(MESSAGE)) for _ in "ab"]
    await eventually(lambda: len(server.received) == 2 and limiter.waiting == 2)
    closing = [
        asyncio.create_task(written_client.aclose()),
        asyncio.create_task(waiting_client.aclose()),
    ]
    await asyncio.sleep(0.05)
    assert not closing[0].done()  # waits for the answers on the wire
    answer.set()
    await asyncio.gather(*closing)

    assert [0, 1] == sorted([await task for task in written])
    for task in waiting:
        with pytest.raises(ClientClosedError):
            await task
    assert 2 == len(server.received)


async def test_a_cancelled_aclose_leaves_written_sends_unknown(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """No answer and no patience: written sends are unknown, never "closed"."""
    server.then(raw.hang(), raw.hang())
    client = make_client(server)
    sends = [asyncio.create_task(client.send_message(MESSAGE)) for _ in "ab"]
    await eventually(lambda: len(server.received) == 2)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.aclose(), 0.2)

    for task in sends:
        with pytest.raises(OutcomeUnknownError):
            await task


async def test_calls_after_aclose_are_refused_before_sending(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """After aclose nothing is sent: ClientClosedError, a failed outcome."""
    client = make_client(server)
    await client.aclose()

    with pytest.raises(ClientClosedError) as info:
        await client.send_message(MESSAGE)

    assert [] == server.received
    assert SendOutcome.FAILED is SendOutcome.of(info.value)


# -- 7. exceptions the SDK did not expect ------------------------------------------


class FailingRelease(BlockingLimiter):
    """A custom limiter whose permits blow up when released."""

    async def acquire(self, deadline: float | None = None) -> Permit:
        return BrokenPermit()


class BrokenPermit(Permit):
    def release(self, feedback: Feedback) -> None:
        raise KeyError("the limiter's own bug")


async def test_a_limiter_failing_on_release_does_not_hide_the_message_id(
    server: raw.RawServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The API accepted it: the ID is returned, the limiter's bug logged."""
    server.then(raw.accepted(31))
    client = make_client(server, rate_limit=FailingRelease())

    assert 31 == await client.send_message(MESSAGE)
    assert any("release" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (504, GatewayTimeoutError),
        (520, AmbiguousServerError),
        (400, InvalidParameterError),
    ],
)
async def test_a_raise_for_status_hook_does_not_change_the_outcome(
    server: raw.RawServer, status: int, expected: type[Exception]
) -> None:
    """A user's client that raises for status: the answer still decides."""

    async def raise_for_status(response: httpx.Response) -> None:
        response.raise_for_status()

    server.then(raw.respond(status, ""))
    async with (
        httpx.AsyncClient(event_hooks={"response": [raise_for_status]}) as user,
        AsyncViberClient(KEY, base_url=server.base_url, http_client=user) as client,
    ):
        with pytest.raises(expected):
            await client.send_message(MESSAGE)

    assert 1 == len(server.received)


async def test_an_unexpected_exception_of_a_users_client_is_unknown(
    server: raw.RawServer,
) -> None:
    """A hook's own bug after the request left: unknown, never failed."""

    async def broken(response: httpx.Response) -> None:
        raise LookupError("a bug in the user's hook")

    server.then(raw.accepted(1))
    async with (
        httpx.AsyncClient(event_hooks={"response": [broken]}) as user,
        AsyncViberClient(KEY, base_url=server.base_url, http_client=user) as client,
    ):
        with pytest.raises(OutcomeUnknownError) as info:
            await client.send_message(MESSAGE)

    assert "LookupError" == info.value.cause_type
    assert 1 == len(server.received)


# -- 9. event loops ----------------------------------------------------------------


def test_a_client_from_another_event_loop_refuses_before_sending() -> None:
    """Made at import time, used with asyncio.run twice: call 2 sends nothing.

    Its connections closed with the first loop (no socket is leaked), and
    the second call says what to do instead of failing inside aiohttp.
    """
    with (
        raw.ThreadedRawServer() as server,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        client = AsyncViberClient(KEY, base_url=server.base_url, rate_limit=None)

        first = asyncio.run(client.send_message(MESSAGE))
        with pytest.raises(ConfigurationError, match="another event loop"):
            asyncio.run(client.send_message(MESSAGE))
        asyncio.run(client.aclose())
        del client
        gc.collect()

    assert 4242 == first
    assert 1 == len(server.received)
    assert [] == [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_client_used_in_one_asyncio_run_is_closed_with_its_loop() -> None:
    """asyncio.run ends the loop; the loop's shutdown closes the client's pool."""
    with (
        raw.ThreadedRawServer() as server,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")

        async def main() -> int:
            client = AsyncViberClient(KEY, base_url=server.base_url, rate_limit=None)
            return await client.send_message(MESSAGE)  # never closed

        assert 4242 == asyncio.run(main())
        gc.collect()

    assert [] == [w for w in caught if issubclass(w.category, ResourceWarning)]


# -- 10. abandoned streams ---------------------------------------------------------


def workers_alive() -> bool:
    return any(
        "_Engine" in getattr(task.get_coro(), "__qualname__", "")
        for task in asyncio.all_tasks()
    )


async def test_an_abandoned_stream_stops_sending(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Break out without aclose: no more input is taken, nothing new is written."""
    answer = asyncio.Event()
    server.default = raw.hold(answer, raw.accepted(1))
    client = make_client(server)
    taken: list[int] = []

    def items() -> Any:
        for n in range(1000):
            taken.append(n)
            yield message(n)

    stream = client.send_messages(items(), concurrency=4)
    consumer = asyncio.create_task(stream.__anext__())
    await eventually(lambda: len(server.received) == 4)
    answer.set()
    await consumer
    del consumer
    with pytest.warns(ResourceWarning, match="dropped while sending"):
        del stream
    await eventually(lambda: not workers_alive())
    received = len(server.received)
    await asyncio.sleep(0.05)

    assert received == len(server.received)
    assert len(taken) <= 4 * 2 + 1  # at most the stream's window was taken


# -- 11 and 12. settings and encodings ---------------------------------------------


def test_zero_connections_is_a_configuration_error() -> None:
    """max_connections=0 configures the client wrongly; it is not a message field."""
    with pytest.raises(ConfigurationError, match="max_connections"):
        AsyncViberClient(KEY, max_connections=0)


async def test_only_encodings_that_can_be_decoded_are_asked_for(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Accept-Encoding names what httpx decodes; a gzip answer is read."""
    server.then(raw.compressed({"message_id": 8}, encoding="gzip"))
    client = make_client(server)

    assert 8 == await client.send_message(MESSAGE)
    asked = {
        token.strip()
        for token in server.received[0].headers["accept-encoding"].split(",")
    }
    decodable = set(httpx._decoders.SUPPORTED_DECODERS)
    assert asked <= decodable
    assert "gzip" in asked


# -- found by attacking the above -------------------------------------------------


async def test_closing_during_the_backoff_after_an_unknown_attempt_stays_unknown(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Opted-in retries of unknown outcomes: closing then must not say "not sent"."""
    server.then(raw.respond(504, ""), raw.accepted(1))
    client = make_client(
        server,
        retry=RetryPolicy(retry_unknown_outcome=True, wait_initial=5, wait_max=5),
    )
    send = asyncio.create_task(client.send_message(MESSAGE))
    await eventually(lambda: len(server.received) == 1)
    await asyncio.sleep(0.05)  # in the backoff now

    await client.aclose()

    with pytest.raises(OutcomeUnknownError) as info:
        await send
    assert SendOutcome.UNKNOWN is SendOutcome.of(info.value)
    assert 1 == len(server.received)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_users_client_never_follows_a_redirect(
    server: raw.RawServer, status: int
) -> None:
    """follow_redirects=True on the user's client: the POST is still sent once."""
    server.then(raw.respond(status, "", headers=[("Location", "/v1/api/send-viber")]))
    async with (
        httpx.AsyncClient(follow_redirects=True) as user,
        AsyncViberClient(KEY, base_url=server.base_url, http_client=user) as client,
    ):
        with pytest.raises(UnexpectedResponseError):
            await client.send_message(MESSAGE)

    assert 1 == len(server.received)


async def test_a_hooks_own_connect_error_is_not_a_never_sent_request(
    server: raw.RawServer,
) -> None:
    """A response hook's ConnectError (its log service is down): after the answer."""

    async def log_it(response: httpx.Response) -> None:
        raise httpx.ConnectError("log-collector refused the connection")

    server.then(raw.accepted(1), raw.accepted(2))
    async with (
        httpx.AsyncClient(event_hooks={"response": [log_it]}) as user,
        AsyncViberClient(KEY, base_url=server.base_url, http_client=user) as client,
    ):
        with pytest.raises(OutcomeUnknownError):
            await client.send_message(MESSAGE)

    assert 1 == len(server.received)


async def test_leaving_a_stream_early_keeps_the_results_that_came_meanwhile(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """The requests on the wire finish while closing: their IDs are not lost."""
    gate = asyncio.Event()
    server.then(raw.accepted(100))
    server.default = raw.hold(gate, raw.accepted(101))
    client = make_client(server)

    async with client.send_messages(
        [message(n) for n in range(10)], concurrency=4
    ) as results:
        first = await results.__anext__()
        await eventually(lambda: len(server.received) == 5)
        asyncio.get_running_loop().call_later(0.05, gate.set)

    assert 100 == first.message_id
    assert 4 == len(results.unconsumed)
    assert all(r.outcome is SendOutcome.SENT for r in results.unconsumed)
    assert 5 == results.summary.sent == len(server.received)


@pytest.mark.parametrize("status", [500, 503, 400, 402])
async def test_an_error_status_around_a_message_id_is_unknown(
    server: raw.RawServer, make_client: MakeClient, status: int
) -> None:
    """HTTP 500 {"message_id": 777}: the message may well be accepted."""
    server.then(raw.respond(status, {"message_id": 777}), raw.accepted(1))
    client = make_client(server)

    with pytest.raises(UnexpectedResponseError):
        await client.send_message(MESSAGE)

    assert 1 == len(server.received)


@pytest.mark.parametrize("kind", ["default-transport", "user-http-client"])
async def test_waiting_for_a_connection_ends_before_the_write_by_time(
    server: raw.RawServer, kind: str
) -> None:
    """One connection, busy: the second send gives up unsent, not written late.

    The first answer comes at 0.9 s, within its 1 s deadline; the second
    send may be written only until 0.8 s (its deadline less the answer's
    reserve), so its wait for the connection ends there.
    """
    server.then(raw.delayed(0.9, raw.accepted(1)), raw.accepted(2))
    async with contextlib.AsyncExitStack() as stack:
        options: dict[str, Any] = {"max_connections": 1}
        if kind == "user-http-client":
            user = httpx.AsyncClient(limits=httpx.Limits(max_connections=1))
            options = {"http_client": await stack.enter_async_context(user)}
        client = await stack.enter_async_context(
            AsyncViberClient(
                KEY,
                base_url=server.base_url,
                rate_limit=None,
                retry=RetryPolicy(timeout=1.0, attempts=1),
                **options,
            )
        )
        first = asyncio.create_task(client.send_message(message(1)))
        await eventually(lambda: len(server.received) == 1)
        with pytest.raises((APIConnectionError, DeadlineExceededError)) as info:
            await client.send_message(message(2))

        assert SendOutcome.FAILED is SendOutcome.of(info.value)
        assert 1 == await first
    assert 1 == len(server.received)


async def test_a_single_send_behind_a_long_pause_is_refused_at_once(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """A 429 pauses everyone for 3 s; a call with a 1 s deadline does not wait."""
    server.then(raw.respond(429, RATE_LIMITED, headers=[("Retry-After", "3")]))
    client = make_client(
        server,
        rate_limit=RateLimit(rate=100, adaptive=False),
        retry=RetryPolicy(timeout=1.0),
    )
    stream = client.send_messages([message(n) for n in range(3)], concurrency=3)
    consumer = asyncio.create_task(stream.__anext__())
    await eventually(lambda: client.metrics.rate_limited >= 1)  # the pause is on

    with Stopwatch() as watch, pytest.raises(DeadlineExceededError):
        await client.send_message(message(9))

    assert watch.elapsed < 0.5
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    await stream.aclose()


async def test_a_second_aclose_waits_for_the_first(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Both wait until the send on the wire has its answer."""
    server.then(raw.delayed(0.3, raw.accepted(5)))
    client = make_client(server)
    send = asyncio.create_task(client.send_message(MESSAGE))
    await eventually(lambda: len(server.received) == 1)

    first = asyncio.create_task(client.aclose())
    await asyncio.sleep(0.01)
    await client.aclose()

    assert send.done()
    assert 5 == await send
    await first


async def test_aclose_waits_for_a_call_going_back_to_its_backoff(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """On the wire when closing began, then a 503: no retry, the 503 is the end."""
    server.then(raw.delayed(0.2, raw.respond(503, {**API_FAILURE, "status": 503})))
    client = make_client(
        server, retry=RetryPolicy(wait_initial=2, wait_max=2, wait_jitter=0)
    )
    send = asyncio.create_task(client.send_message(MESSAGE))
    await eventually(lambda: len(server.received) == 1)

    with Stopwatch() as watch:
        await client.aclose()

    assert send.done()
    assert watch.elapsed < 1.0
    with pytest.raises(ServerError) as info:
        await send
    assert SendOutcome.FAILED is SendOutcome.of(info.value)
    assert 1 == len(server.received)


async def test_aclose_aborts_a_send_waiting_for_a_connection(
    server: raw.RawServer,
) -> None:
    """The default transport says when a request gets its connection: before it,
    closing aborts the send (never sent); after it, closing waits."""
    answer = asyncio.Event()
    server.then(raw.hold(answer, raw.accepted(1)), raw.accepted(2))
    client = AsyncViberClient(
        KEY, base_url=server.base_url, rate_limit=None, max_connections=1
    )
    first = asyncio.create_task(client.send_message(message(1)))
    await eventually(lambda: len(server.received) == 1)
    second = asyncio.create_task(client.send_message(message(2)))
    await asyncio.sleep(0.05)  # waiting for the pool's only connection

    closing = asyncio.create_task(client.aclose())
    with pytest.raises(ClientClosedError):
        await second
    answer.set()
    await closing

    assert 1 == await first
    assert 1 == len(server.received)


class OddLimiter(BlockingLimiter):
    """A custom limiter handing out nonsense."""

    def __init__(self, permit: object) -> None:
        super().__init__()
        self.permit = permit

    async def acquire(self, deadline: float | None = None) -> Permit:
        return self.permit  # type: ignore[return-value]


class NoWait(Permit):
    waited = None  # type: ignore[assignment]


@pytest.mark.parametrize("permit", [None, NoWait()], ids=["none", "no-waited"])
async def test_a_limiter_handing_out_nonsense_is_a_limiter_error(
    server: raw.RawServer, make_client: MakeClient, permit: object
) -> None:
    """Not a permit: LimiterError (a ViberError), nothing sent, in bulk too."""
    client = make_client(server, rate_limit=OddLimiter(permit))

    with pytest.raises(LimiterError):
        await client.send_message(MESSAGE)
    async with client.send_messages([MESSAGE]) as results:
        (result,) = [r async for r in results]

    assert isinstance(result.error, LimiterError)
    assert [] == server.received


async def test_arguments_of_the_wrong_kind_are_validation_errors(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Every call raises ViberErrors only, naming the argument."""
    client = make_client(server)

    with pytest.raises(ValidationError, match="message_ids"):
        client.get_message_statuses(None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="timeout"):
        await client.wait_for_status(5, timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="progress_interval"):
        client.send_messages([], progress_interval=-1)
    assert [] == server.received


# -- found by attacking again ------------------------------------------------------


async def test_closing_a_stream_reports_an_item_that_may_have_been_processed(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """Its first attempt was read, then the connection dropped; it is in backoff."""
    server.then(raw.accepted(1), raw.close(after_reading=True), raw.accepted(3))
    client = make_client(
        server,
        retry=RetryPolicy(retry_unknown_outcome=True, wait_initial=5, wait_max=5),
    )
    async with client.send_messages(
        [message(n) for n in range(2)], concurrency=2, ordered=True
    ) as results:
        first = await results.__anext__()
        await eventually(lambda: len(server.received) == 2)
        await asyncio.sleep(0.05)  # item 1 is in its backoff now

    assert SendOutcome.SENT is first.outcome
    (second,) = results.unconsumed
    assert SendOutcome.UNKNOWN is second.outcome
    assert 2 == len(server.received)


async def test_closing_a_stream_stops_a_retry_that_waits(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """On the wire when closed, then a 429 asking for 15 s: no retry, no wait."""
    server.then(
        raw.accepted(1),
        raw.delayed(
            0.2, raw.respond(429, RATE_LIMITED, headers=[("Retry-After", "15")])
        ),
    )
    client = make_client(server)
    stream = client.send_messages([message(n) for n in range(2)], concurrency=2)
    first = await stream.__anext__()
    await eventually(lambda: len(server.received) == 2)

    with Stopwatch() as watch:
        await stream.aclose()

    assert watch.elapsed < 2.0
    assert SendOutcome.SENT is first.outcome
    (second,) = stream.unconsumed
    assert isinstance(second.error, RateLimitError)
    assert 2 == len(server.received)


async def test_a_gateways_5xx_shaped_like_an_api_error_is_still_unknown(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """A 504 whose JSON says status 500: the gateway's word, not the API's."""
    server.then(raw.respond(504, {**API_FAILURE, "status": 500}), raw.accepted(1))
    client = make_client(server)

    with pytest.raises(GatewayTimeoutError):
        await client.send_message(MESSAGE)

    assert 1 == len(server.received)


async def test_a_pause_in_slow_start_watches_every_deadline(
    server: raw.RawServer,
) -> None:
    """One limiter, two clients; a bulk item and cancellations come and go."""
    server.then(raw.delayed(3.0, raw.accepted(1)))
    limiter = AdaptiveLimiter(RateLimit(initial_window=1))
    batch = AsyncViberClient(
        KEY, base_url=server.base_url, rate_limit=limiter, retry=RetryPolicy(timeout=30)
    )
    otp = AsyncViberClient(
        KEY,
        base_url=server.base_url,
        rate_limit=limiter,
        retry=RetryPolicy(timeout=1.0, attempts=1),
    )
    first = asyncio.create_task(batch.send_message(message(1)))
    await eventually(lambda: len(server.received) == 1)
    early = asyncio.create_task(otp.send_message(message(2)))
    await asyncio.sleep(0.05)
    early.cancel()
    stream = batch.send_messages([message(3)], concurrency=1)
    consumer = asyncio.create_task(stream.__anext__())
    await asyncio.sleep(0.05)

    with Stopwatch() as watch, pytest.raises(DeadlineExceededError):
        await otp.send_message(message(4))

    assert watch.elapsed < 1.0 + SLACK
    assert 1 == await first
    assert SendOutcome.SENT is (await consumer).outcome
    await asyncio.gather(early, return_exceptions=True)
    await stream.aclose()
    await batch.aclose()
    await otp.aclose()


async def test_no_request_waits_for_a_connection_past_its_write_by_time(
    server: raw.RawServer,
) -> None:
    """aiohttp rounds timeouts above 5 s up to a second: the SDK allows for it."""
    server.then(raw.delayed(6.3, raw.accepted(1)), raw.accepted(2))
    async with AsyncViberClient(
        KEY,
        base_url=server.base_url,
        rate_limit=None,
        max_connections=1,
        retry=RetryPolicy(timeout=6.5, attempts=1),
    ) as client:
        first = asyncio.create_task(client.send_message(message(1)))
        await eventually(lambda: len(server.received) == 1)
        with pytest.raises((APIConnectionError, DeadlineExceededError)):
            await client.send_message(message(2))  # may write until 5.5 s only
        assert 1 == await first

    assert 1 == len(server.received)


async def test_closing_a_stream_whose_input_is_idle_returns_at_once(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """A worker waiting for a slow producer's next item is simply stopped."""
    queue: asyncio.Queue[ViberMessage] = asyncio.Queue()

    async def produced() -> Any:
        while True:
            yield await queue.get()

    client = make_client(server)
    stream = client.send_messages(produced(), concurrency=1)
    queue.put_nowait(message(0))
    first = await stream.__anext__()

    with Stopwatch() as watch:
        await asyncio.wait_for(stream.aclose(), 5)

    assert SendOutcome.SENT is first.outcome
    assert watch.elapsed < 1.0


async def test_leaving_a_stream_while_its_window_is_full_returns(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """The worker waits for the consumer to take results; the consumer left."""
    client = make_client(server)

    with pytest.raises(LookupError):  # noqa: PT012 - the block is the test
        async with client.send_messages(
            [message(n) for n in range(10)], concurrency=1
        ) as results:
            async for _ in results:
                await eventually(lambda: len(server.received) >= 3)
                raise LookupError("the consumer gives up")

    assert len(server.received) <= 3


# -- a third attack --------------------------------------------------------------


@pytest.mark.parametrize("first", ["user", "close"])
async def test_a_callers_cancel_is_never_taken_for_closing(
    server: raw.RawServer, make_client: MakeClient, first: str
) -> None:
    """A cancel and aclose() in the same turn, either first: the cancel wins.

    Python 3.10 cannot count cancellations: a caller's cancel that comes
    after aclose() aborted the call ends it with ClientClosedError there (a
    true outcome: nothing was sent), not CancelledError.
    """
    limiter = BlockingLimiter()
    client = make_client(server, rate_limit=limiter)
    send = asyncio.create_task(client.send_message(MESSAGE))
    await eventually(lambda: limiter.waiting == 1)

    if first == "user":
        send.cancel()
        closing = asyncio.create_task(client.aclose())
    else:
        closing = asyncio.create_task(client.aclose())
        await asyncio.sleep(0)  # aclose() has aborted the call...
        send.cancel()  # ...and the caller cancels before it wakes up
    await asyncio.gather(send, return_exceptions=True)
    await closing

    if sys.version_info < (3, 11) and first == "close":
        assert isinstance(send.exception(), ClientClosedError)
    else:
        assert send.cancelled()
    assert [] == server.received


@pytest.mark.parametrize(
    "reference",
    ["order-\udcff", 12345, ""],
    ids=["surrogate", "not-a-string", "empty"],
)
async def test_a_callback_reference_the_url_cannot_carry_fails_before_sending(
    server: raw.RawServer, make_client: MakeClient, reference: object
) -> None:
    """A ViberError naming callback_reference (or the URL), in bulk too."""
    client = make_client(
        server,
        callback_url="https://app.example.com/viber",
        callback_secret="s3cret",
        callback_reference=lambda message: reference,
    )

    with pytest.raises((ValidationError, ConfigurationError)):
        await client.send_message(MESSAGE)
    async with client.send_messages([MESSAGE]) as results:
        (result,) = [r async for r in results]

    assert SendOutcome.FAILED is result.outcome
    assert [] == server.received


async def test_waiting_for_a_status_ends_at_its_timeout(
    server: raw.RawServer, make_client: MakeClient
) -> None:
    """wait_for_status(timeout=1) with an API that never answers: 1 s, not 8."""
    server.default = raw.hang()
    client = make_client(server, retry=RetryPolicy(timeout=8.0))

    with Stopwatch() as watch, pytest.raises(StatusTimeoutError):
        await client.wait_for_status(5, timeout=1.0)

    assert watch.elapsed < 1.0 + SLACK
