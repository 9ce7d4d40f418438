"""`SendOnceGuard` on the paths where the truth is hard: closing, lost Redis replies.

Against a real redis-server and `tests.rawhttp.RawServer` (an API that does
exactly what each test says). The guard frees a key only when the send
provably did not happen, and never strands a key whose claim landed while
its reply was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from decisiontelecom_viber import (
    AsyncViberClient,
    ClientClosedError,
    Feedback,
    OutcomeUnknownError,
    RateLimit,
    RetryPolicy,
    SendOutcome,
    ViberMessage,
)
from decisiontelecom_viber._limits import Priority
from decisiontelecom_viber.redis import (
    RedisUnavailableError,
    SendOnceGuard,
    SendState,
    SendUnresolvedError,
)

from . import rawhttp as raw
from .helpers import eventually


if TYPE_CHECKING:
    from .redis_server import RedisServer


pytestmark = pytest.mark.integration
pytest_plugins = ["tests.redis_server"]

KEY = "guard-truth-key"
MESSAGE = ViberMessage.transactional(sender="Acme", receiver="380501234567", text="x")


@pytest.fixture
async def server() -> AsyncIterator[raw.RawServer]:
    async with raw.RawServer() as running:
        yield running


@pytest.fixture
def guard(redis_client: Redis) -> SendOnceGuard:
    return SendOnceGuard(redis_client, namespace="test:truth")


class Gate:
    """A `Limiter` holding every caller until opened."""

    current_rate = None
    estimated_limit = None

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0

    def bind(self, clock: object) -> None:
        pass

    async def acquire(
        self, deadline: float | None = None, priority: Priority = "normal"
    ) -> Gate:
        self.waiting += 1
        await self.opened.wait()
        return self

    waited = 0.0

    def release(self, feedback: Feedback) -> None:
        pass


async def test_a_send_answered_while_closing_keeps_its_record(
    guard: SendOnceGuard, server: raw.RawServer
) -> None:
    """aclose() during a written send: the send ends with its ID, recorded."""
    answer = asyncio.Event()
    server.then(raw.hold(answer, raw.accepted(51)))
    client = AsyncViberClient(KEY, base_url=server.base_url, rate_limit=None)
    send = asyncio.create_task(guard.send(client, MESSAGE, dedupe_key="k1"))
    await eventually(lambda: len(server.received) == 1)

    closing = asyncio.create_task(client.aclose())
    await asyncio.sleep(0.02)
    answer.set()
    await closing

    assert 51 == await send
    record = await guard.lookup("k1")
    assert record is not None
    assert (SendState.SENT, 51) == (record.state, record.message_id)


async def test_a_send_cut_off_by_closing_stays_unknown(
    guard: SendOnceGuard, server: raw.RawServer
) -> None:
    """aclose() cancelled with the send on the wire: unknown, never freed."""
    server.then(raw.hang())
    client = AsyncViberClient(KEY, base_url=server.base_url, rate_limit=None)
    send = asyncio.create_task(guard.send(client, MESSAGE, dedupe_key="k2"))
    await eventually(lambda: len(server.received) == 1)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.aclose(), 0.1)
    with pytest.raises(OutcomeUnknownError):
        await send

    record = await guard.lookup("k2")
    assert record is not None
    assert SendState.UNKNOWN is record.state
    async with AsyncViberClient(KEY, base_url=server.base_url) as again:
        with pytest.raises(SendUnresolvedError):
            await guard.send(again, MESSAGE, dedupe_key="k2")
    assert 1 == len(server.received)


async def test_a_send_stopped_before_writing_frees_its_key(
    guard: SendOnceGuard, server: raw.RawServer
) -> None:
    """aclose() while the send waits for the limiter: never sent, key free."""
    gate = Gate()
    client = AsyncViberClient(KEY, base_url=server.base_url, rate_limit=gate)
    send = asyncio.create_task(guard.send(client, MESSAGE, dedupe_key="k3"))
    await eventually(lambda: gate.waiting == 1)

    await client.aclose()

    with pytest.raises(ClientClosedError):
        await send
    assert await guard.lookup("k3") is None
    async with AsyncViberClient(KEY, base_url=server.base_url) as again:
        assert 4242 == await guard.send(again, MESSAGE, dedupe_key="k3")
    assert 1 == len(server.received)


# -- lost replies -------------------------------------------------------------------

CLAIM = b"$5\r\nclaim\r\n"  # the claim script's mode argument, as RESP sends it


class ReplyEater:
    """A TCP proxy to Redis that can swallow the reply to the next claim.

    The command goes through (the claim lands in Redis); what Redis answers
    on that connection is thrown away, as when a network drops a reply.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = False
        self.eaten = 0
        # Claims to hold back for *delay* seconds (a slow network path:
        # they reach Redis after the client gave up on them), and other
        # commands to hold back, by a marker of their arguments.
        self.late_claims = 0
        self.delay = 0.6
        self.late: dict[bytes, int] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> ReplyEater:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.upstream_port
        )
        swallowing = asyncio.Event()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if swallowing.is_set():
                    self.eaten += 1
                    continue
                writer.write(data)
                await writer.drain()

        pump = asyncio.create_task(downstream())
        try:
            while data := await reader.read(65536):
                if CLAIM in data and self.late_claims > 0:
                    self.late_claims -= 1
                    await asyncio.sleep(self.delay)
                for marker, count in list(self.late.items()):
                    if count and marker in data:
                        self.late[marker] = count - 1
                        await asyncio.sleep(self.delay)
                if self.armed and CLAIM in data:
                    self.armed = False
                    swallowing.set()
                up_writer.write(data)
                await up_writer.drain()
        except ConnectionError:
            pass
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            for stream in (writer, up_writer):
                stream.close()
            self._tasks.discard(task)


@pytest.fixture
async def eater(redis_server: RedisServer) -> AsyncIterator[ReplyEater]:
    async with ReplyEater(redis_server.port) as proxy:
        yield proxy


async def test_a_claim_whose_reply_is_lost_is_released(
    eater: ReplyEater, redis_client: Redis, server: raw.RawServer
) -> None:
    """The claim landed, its reply did not: released, nothing sent, key free."""
    flaky = Redis(host="127.0.0.1", port=eater.port, socket_timeout=0.3)
    guard = SendOnceGuard(flaky, namespace="test:truth")
    await guard.lookup("warm-up")  # loads the scripts: the claim runs at once
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        eater.armed = True
        with pytest.raises(RedisUnavailableError):
            await guard.send(client, MESSAGE, dedupe_key="k4")
        assert eater.eaten >= 1
        assert [] == server.received
        assert (
            await SendOnceGuard(redis_client, namespace="test:truth").lookup("k4")
            is None
        )

        assert 4242 == await guard.send(client, MESSAGE, dedupe_key="k4")
    await flaky.aclose()
    assert 1 == len(server.received)


async def test_a_claim_retried_by_redis_py_is_still_its_own(
    eater: ReplyEater, redis_client: Redis, server: raw.RawServer
) -> None:
    """redis-py's own retries run the claim twice: the second finds it ours."""
    retrying = Redis(
        host="127.0.0.1",
        port=eater.port,
        socket_timeout=0.3,
        retry=Retry(NoBackoff(), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    guard = SendOnceGuard(retrying, namespace="test:truth")
    await guard.lookup("warm-up")
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        eater.armed = True
        message_id = await guard.send(client, MESSAGE, dedupe_key="k5")
    record = await guard.lookup("k5")
    await retrying.aclose()

    assert eater.eaten >= 1
    assert 4242 == message_id
    assert record is not None
    assert SendState.SENT is record.state
    assert 1 == len(server.received)


@pytest.mark.parametrize("retries", [0, 3], ids=["no-retries", "redis-py-retries"])
async def test_late_claims_never_strand_a_key(
    eater: ReplyEater, redis_client: Redis, server: raw.RawServer, retries: int
) -> None:
    """Claims that reach Redis after the guard gave up: the key stays free."""
    options: dict[str, Any] = {}
    if retries:
        options = {
            "retry": Retry(NoBackoff(), retries),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        }
    slow = Redis(host="127.0.0.1", port=eater.port, socket_timeout=0.2, **options)
    guard = SendOnceGuard(slow, namespace="test:truth", lease=5.0)
    await guard.lookup("warm-up")
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        eater.late_claims = retries + 1
        with pytest.raises(RedisUnavailableError):
            await guard.send(client, MESSAGE, dedupe_key="late")
        await guard.aclose()
        await asyncio.sleep(eater.delay + 0.1)  # every late claim has landed
        assert await guard.lookup("late") is None

        assert 4242 == await guard.send(client, MESSAGE, dedupe_key="late")
    await slow.aclose()
    assert 1 == len(server.received)


async def test_a_record_lost_during_the_send_is_written_again(
    guard: SendOnceGuard, redis_client: Redis, server: raw.RawServer
) -> None:
    """Redis restarted (or failed over) while the request was on the wire."""
    answer = asyncio.Event()
    server.then(raw.hold(answer, raw.accepted(61)))
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        send = asyncio.create_task(guard.send(client, MESSAGE, dedupe_key="k6"))
        await eventually(lambda: len(server.received) == 1)
        await redis_client.flushall()  # the record is gone
        answer.set()
        assert 61 == await send

        assert 61 == await guard.send(client, MESSAGE, dedupe_key="k6")
    assert 1 == len(server.received)


async def test_a_hooks_error_after_the_answer_keeps_the_key(
    guard: SendOnceGuard, server: raw.RawServer
) -> None:
    """A response hook's ConnectError: maybe sent, so the key is not freed."""

    async def audit(response: httpx.Response) -> None:
        raise httpx.ConnectError("the audit service is down")

    async with (
        httpx.AsyncClient(event_hooks={"response": [audit]}) as user,
        AsyncViberClient(KEY, base_url=server.base_url, http_client=user) as client,
    ):
        with pytest.raises(OutcomeUnknownError):
            await guard.send(client, MESSAGE, dedupe_key="k7")
        with pytest.raises(SendUnresolvedError):
            await guard.send(client, MESSAGE, dedupe_key="k7")
    assert 1 == len(server.received)


async def test_a_gateways_502_page_keeps_the_key(
    guard: SendOnceGuard, server: raw.RawServer
) -> None:
    """nginx answers 502 when its upstream closed after reading: maybe sent."""
    server.default = raw.respond(502, "<html><h1>502 Bad Gateway</h1></html>")
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        with pytest.raises(OutcomeUnknownError):
            await guard.send(client, MESSAGE, dedupe_key="k8")
        with pytest.raises(SendUnresolvedError):
            await guard.send(client, MESSAGE, dedupe_key="k8")
    assert 1 == len(server.received)


RELEASE = b"$7\r\nrelease\r\n"
SENT = b"$4\r\nsent\r\n"


async def test_late_claims_after_the_lease_never_strand_a_key(
    eater: ReplyEater, redis_client: Redis, server: raw.RawServer
) -> None:
    """A claim delivered later than the lease: the tombstone still stops it."""
    slow = Redis(host="127.0.0.1", port=eater.port, socket_timeout=0.2)
    guard = SendOnceGuard(slow, namespace="test:truth", lease=0.3)
    await guard.lookup("warm-up")
    eater.delay = 0.8
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        eater.late_claims = 1
        with pytest.raises(RedisUnavailableError):
            await guard.send(client, MESSAGE, dedupe_key="very-late")
        await guard.aclose()
        await asyncio.sleep(0.9)  # the claim landed, long past the lease
        assert await guard.lookup("very-late") is None
        assert 4242 == await guard.send(client, MESSAGE, dedupe_key="very-late")
    await slow.aclose()


async def test_a_caller_cancelled_while_its_claim_is_undone_strands_nothing(
    eater: ReplyEater, redis_client: Redis, server: raw.RawServer
) -> None:
    """The undo of a lost claim goes on in the background; aclose waits for it."""
    flaky = Redis(host="127.0.0.1", port=eater.port, socket_timeout=0.2)
    guard = SendOnceGuard(flaky, namespace="test:truth")
    await guard.lookup("warm-up")
    eater.armed = True  # the claim's reply is lost
    eater.late[RELEASE] = 1  # and its undo is slow
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(guard.send(client, MESSAGE, dedupe_key="k9"), 0.4)
        await guard.aclose()
        assert await guard.lookup("k9") is None
        assert 4242 == await guard.send(client, MESSAGE, dedupe_key="k9")
    await flaky.aclose()
    assert 1 == len(server.received)


async def test_a_caller_cancelled_while_its_send_is_recorded_loses_nothing(
    eater: ReplyEater, redis_client: Redis, server: raw.RawServer
) -> None:
    """Sent, then cancelled while the ID is written: it is written all the same."""
    flaky = Redis(host="127.0.0.1", port=eater.port, socket_timeout=1.0)
    guard = SendOnceGuard(flaky, namespace="test:truth")
    await guard.lookup("warm-up")
    eater.late[SENT] = 1
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        task = asyncio.create_task(guard.send(client, MESSAGE, dedupe_key="k10"))
        await eventually(lambda: len(server.received) == 1)
        await asyncio.sleep(0.1)  # the settle is on its way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await guard.aclose()
        record = await guard.lookup("k10")
        assert record is not None
        assert (SendState.SENT, 4242) == (record.state, record.message_id)
        assert 4242 == await guard.send(client, MESSAGE, dedupe_key="k10")
    await flaky.aclose()
    assert 1 == len(server.received)


async def test_a_stale_attempt_cannot_undo_a_resolve(
    guard: SendOnceGuard, server: raw.RawServer
) -> None:
    """forget, a new attempt claims, resolve, that attempt then fails unsent."""
    gate = Gate()
    waiting = AsyncViberClient(KEY, base_url=server.base_url, rate_limit=gate)
    attempt = asyncio.create_task(guard.send(waiting, MESSAGE, dedupe_key="k11"))
    await eventually(lambda: gate.waiting == 1)  # claimed, not sent

    await guard.resolve("k11", 4242)  # a person found the earlier message
    await waiting.aclose()
    with pytest.raises(ClientClosedError):
        await attempt

    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        assert 4242 == await guard.send(client, MESSAGE, dedupe_key="k11")
    assert [] == server.received


async def test_closing_a_guarded_stream_reports_what_was_sent(
    eater: ReplyEater, redis_client: Redis, server: raw.RawServer
) -> None:
    """A worker recording its message ID when the stream closes finishes it."""
    slow = Redis(host="127.0.0.1", port=eater.port, socket_timeout=2.0)
    guard = SendOnceGuard(slow, namespace="test:truth")
    await guard.lookup("warm-up")
    # (Whichever connection the second request takes, it is answered 201.)
    server.then(raw.accepted(200))
    server.default = raw.delayed(0.05, raw.accepted(201))
    eater.late[SENT] = 2  # recording each ID takes a while
    async with AsyncViberClient(KEY, base_url=server.base_url) as client:
        stream = guard.send_messages(
            client, [(f"order-{n}", MESSAGE) for n in range(2)], concurrency=2
        )
        first = await stream.__anext__()
        await stream.aclose()
    await slow.aclose()

    reported = [first, *stream.unconsumed]
    assert {200, 201} == {r.message_id for r in reported}
    assert 2 == len(server.received)


async def test_closing_a_guarded_stream_frees_the_keys_it_never_sent(
    guard: SendOnceGuard, server: raw.RawServer
) -> None:
    """An item waiting for the limiter when the stream closes: failed, key free."""
    async with AsyncViberClient(
        KEY, base_url=server.base_url, rate_limit=RateLimit(rate=0.5, adaptive=False)
    ) as client:
        stream = guard.send_messages(
            client, [(f"order-{n}", MESSAGE) for n in range(2)], concurrency=2
        )
        first = await stream.__anext__()
        await stream.aclose()

    (second,) = stream.unconsumed
    assert SendOutcome.SENT is first.outcome
    assert isinstance(second.error, ClientClosedError)
    assert await guard.lookup(second.dedupe_key or "") is None
    assert 1 == len(server.received)


async def test_a_key_refused_with_429_is_not_on_the_wire_while_it_waits(
    guard: SendOnceGuard, server: raw.RawServer
) -> None:
    """A 429 proves nothing was processed: the retry's wait is not in doubt.

    (Found by an attack: a worker killed while a 429'd send waited for its
    retry left the key unresolved forever.)
    """
    server.then(
        raw.respond(429, {"error": "rate limit"}, headers=[("Retry-After", "1")]),
        raw.accepted(4242),
    )
    retry = RetryPolicy(attempts=2, wait_initial=0.5, wait_max=1.0)
    async with AsyncViberClient(KEY, base_url=server.base_url, retry=retry) as client:
        sending = asyncio.create_task(guard.send(client, MESSAGE, dedupe_key="k429"))
        await eventually(lambda: len(server.received) == 1)
        await asyncio.sleep(0.2)  # answered 429; the retry waits
        waiting = await guard.lookup("k429")
        message_id = await sending
    done = await guard.lookup("k429")

    assert waiting is not None
    assert (SendState.PENDING, False) == (waiting.state, waiting.on_the_wire)
    assert 4242 == message_id
    assert done is not None
    assert (SendState.SENT, True) == (done.state, done.on_the_wire)
