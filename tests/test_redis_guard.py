"""`SendOnceGuard`: one send per dedupe key, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from redis.asyncio import Redis

from decisiontelecom_viber import (
    AsyncViberClient,
    ConfigurationError,
    InsufficientBalanceError,
    OutcomeUnknownError,
    RateLimit,
    RetryPolicy,
    SendOutcome,
    ValidationError,
    ViberMessage,
)
from decisiontelecom_viber.redis import (
    PossibleDuplicateError,
    RedisUnavailableError,
    SendInProgressError,
    SendOnceGuard,
    SendState,
    SendUnresolvedError,
)
from decisiontelecom_viber.redis._scripts import GuardScripts

from .servers import unused_port


if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from decisiontelecom_viber.sandbox import SandboxServer

    from .redis_server import RedisServer


pytestmark = pytest.mark.integration
pytest_plugins = ["tests.redis_server"]


def message(text: str = "Your order has shipped") -> ViberMessage:
    return ViberMessage.transactional(sender="Acme", receiver="380501234567", text=text)


@pytest.fixture
def guard(redis_client: Redis) -> SendOnceGuard:
    return SendOnceGuard(redis_client, namespace="test:sent")


@pytest.fixture
async def client(viber_sandbox: SandboxServer) -> AsyncIterator[AsyncViberClient]:
    async with AsyncViberClient(
        viber_sandbox.access_key,
        base_url=viber_sandbox.base_url,
        retry=RetryPolicy(wait_initial=0.001, wait_max=0.01),
    ) as viber:
        yield viber


async def test_the_first_send_records_the_message_id(
    guard: SendOnceGuard, client: AsyncViberClient
) -> None:
    """A claimed key ends up holding the ID the API gave."""
    message_id = await guard.send(client, message(), dedupe_key="order-1")

    record = await guard.lookup("order-1")

    assert record is not None
    assert (SendState.SENT, message_id) == (record.state, record.message_id)


async def test_a_second_send_returns_the_id_without_a_request(
    guard: SendOnceGuard, client: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """The same key again: the original ID, and no request at all."""
    first = await guard.send(client, message(), dedupe_key="order-1")

    second = await guard.send(client, message(), dedupe_key="order-1")

    assert first == second
    assert 1 == viber_sandbox.sandbox.stats.requests


async def test_a_definite_failure_frees_the_key(
    guard: SendOnceGuard, client: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """Refused by the API: nothing was sent, so a retry may send."""
    viber_sandbox.sandbox.configure(balance=0)
    with pytest.raises(InsufficientBalanceError):
        await guard.send(client, message(), dedupe_key="order-1")
    freed = await guard.lookup("order-1")
    viber_sandbox.sandbox.configure(balance=None)

    message_id = await guard.send(client, message(), dedupe_key="order-1")

    assert freed is None
    assert [message_id] == [m.message_id for m in viber_sandbox.sandbox.messages()]


@pytest.mark.viber_sandbox(fault_disconnect_after=1.0)
async def test_an_unknown_outcome_stays_marked(
    guard: SendOnceGuard, client: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """Accepted but unanswered: the key says unknown, and a retry does not send."""
    with pytest.raises(OutcomeUnknownError) as sent:
        await guard.send(client, message(), dedupe_key="order-1")
    viber_sandbox.sandbox.configure(fault_disconnect_after=0.0)

    with pytest.raises(SendUnresolvedError) as retried:
        await guard.send(client, message(), dedupe_key="order-1")

    assert not isinstance(sent.value, PossibleDuplicateError)
    assert SendState.UNKNOWN == retried.value.record.state
    assert "outcome unknown" in (retried.value.record.reason or "")
    assert 1 == viber_sandbox.sandbox.stats.requests
    assert 1 == viber_sandbox.sandbox.stats.accepted


async def test_a_send_in_flight_elsewhere_is_not_repeated(
    guard: SendOnceGuard,
    client: AsyncViberClient,
    redis_client: Redis,
    viber_sandbox: SandboxServer,
) -> None:
    """A key claimed by another worker, within its lease: in progress, no request."""
    await GuardScripts(redis_client).claim(
        guard.record_key("order-1"), owner="other-worker", lease=60.0, ttl=600.0
    )

    with pytest.raises(SendInProgressError) as error:
        await guard.send(client, message(), dedupe_key="order-1")

    assert isinstance(error.value, OutcomeUnknownError)
    assert ("order-1", SendState.PENDING) == (
        error.value.dedupe_key,
        error.value.record.state,
    )
    assert 0 == viber_sandbox.sandbox.stats.requests


async def test_a_claim_past_its_lease_is_unresolved(
    guard: SendOnceGuard,
    client: AsyncViberClient,
    redis_client: Redis,
    viber_sandbox: SandboxServer,
) -> None:
    """A worker that died mid-send leaves a key that turns unresolved, not free."""
    # Claimed and marked "writing" 100 s ago (Redis time) with a 60 s lease.
    scripts = GuardScripts(redis_client)
    key = guard.record_key("order-1")
    then = time.time() - 100.0
    await scripts.claim(key, owner="dead-worker", lease=60.0, ttl=600.0, now=then)
    await scripts.mark(key, owner="dead-worker", ttl=600.0, now=then + 1)

    with pytest.raises(SendUnresolvedError) as error:
        await guard.send(client, message(), dedupe_key="order-1")

    assert SendState.UNKNOWN == error.value.record.state
    assert error.value.record.on_the_wire
    assert "lease" in (error.value.record.reason or "")
    assert 0 == viber_sandbox.sandbox.stats.requests


async def test_a_claim_never_marked_is_free_after_its_lease(
    guard: SendOnceGuard,
    client: AsyncViberClient,
    redis_client: Redis,
    viber_sandbox: SandboxServer,
) -> None:
    """A worker that died waiting (nothing written) leaves a key free to send."""
    scripts = GuardScripts(redis_client)
    key = guard.record_key("order-1")
    await scripts.claim(
        key, owner="dead-worker", lease=60.0, ttl=600.0, now=time.time() - 100.0
    )

    message_id = await guard.send(client, message(), dedupe_key="order-1")
    record = await guard.lookup("order-1")

    assert 1 == viber_sandbox.sandbox.stats.accepted
    assert record is not None
    assert (SendState.SENT, message_id) == (record.state, record.message_id)
    assert record.on_the_wire


async def test_a_record_of_an_older_version_without_phase_stays_in_doubt(
    guard: SendOnceGuard,
    client: AsyncViberClient,
    redis_client: Redis,
    viber_sandbox: SandboxServer,
) -> None:
    """A pending record with no phase (written before marks existed) is unresolved."""
    stored = {
        "state": "pending",
        "owner": "old-worker",
        "claimed_at": "1.0",
        "updated_at": "1.0",
        "lease_until": "2.0",
    }
    await redis_client.set(guard.record_key("order-1"), json.dumps(stored))

    with pytest.raises(SendUnresolvedError) as error:
        await guard.send(client, message(), dedupe_key="order-1")

    assert error.value.record.on_the_wire
    assert 0 == viber_sandbox.sandbox.stats.requests


async def test_an_attempt_that_waits_past_its_lease_sends_nothing(
    redis_client: Redis, viber_sandbox: SandboxServer
) -> None:
    """Its key was taken over meanwhile: its mark fails, it writes nothing."""
    guard = SendOnceGuard(redis_client, namespace="test:sent", lease=0.2, ttl=60)
    scripts = GuardScripts(redis_client)
    # 2/s, burst 1: the second send waits 0.5 s at the limiter, past its lease.
    limit = RateLimit(rate=2, burst=1, adaptive=False)
    async with AsyncViberClient(
        viber_sandbox.access_key, base_url=viber_sandbox.base_url, rate_limit=limit
    ) as client:
        await client.send_message(message("warm"))
        waiting = asyncio.ensure_future(
            guard.send(client, message(), dedupe_key="order-1")
        )
        await asyncio.sleep(0.3)  # its lease (0.2 s) ran out while it waits
        verdict, _ = await scripts.claim(
            guard.record_key("order-1"), owner="other", lease=60.0, ttl=60.0
        )
        with pytest.raises(SendInProgressError):
            await waiting
    await guard.aclose()

    assert "claimed" == verdict
    assert 1 == viber_sandbox.sandbox.stats.accepted  # the warm-up only


async def test_resolving_and_forgetting_an_unresolved_key(
    guard: SendOnceGuard,
    client: AsyncViberClient,
    redis_client: Redis,
    viber_sandbox: SandboxServer,
) -> None:
    """resolve() records the ID found; forget() allows a new send."""
    await GuardScripts(redis_client).settle(
        guard.record_key("order-1"), owner="", action="unknown", reason="?", ttl=60
    )
    await GuardScripts(redis_client).settle(
        guard.record_key("order-2"), owner="", action="unknown", reason="?", ttl=60
    )

    await guard.resolve("order-1", 4242)
    replayed = await guard.send(client, message("one"), dedupe_key="order-1")
    forgotten = await guard.forget("order-2")
    sent = await guard.send(client, message("two"), dedupe_key="order-2")

    assert (4242, True) == (replayed, forgotten)
    assert [sent] == [m.message_id for m in viber_sandbox.sandbox.messages()]


async def test_a_cancelled_send_is_marked_unknown(
    guard: SendOnceGuard, redis_client: Redis
) -> None:
    """Cancelled while its request is in flight: the message may be sent."""
    in_flight = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        in_flight.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http,
        AsyncViberClient(
            "key", base_url="https://api.test/v1/api", http_client=http
        ) as viber,
    ):
        task = asyncio.create_task(guard.send(viber, message(), dedupe_key="o-1"))
        await in_flight.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await guard.aclose()

    record = await guard.lookup("o-1")

    assert record is not None
    assert (SendState.UNKNOWN, "the send was cancelled") == (
        record.state,
        record.reason,
    )


async def test_sends_many_pairs_one_result_each(
    guard: SendOnceGuard,
    client: AsyncViberClient,
    redis_client: Redis,
    viber_sandbox: SandboxServer,
) -> None:
    """The bulk helper: sent, replayed, invalid and in-progress items side by side."""
    earlier = await guard.send(client, message("a"), dedupe_key="a")
    await GuardScripts(redis_client).claim(
        guard.record_key("busy"), owner="other", lease=60.0, ttl=600.0
    )
    items: list[Any] = [  # (malformed items too: each gets its result)
        ("a", message("a")),
        ("b", message("b")),
        ("busy", message("busy")),
        ("", message("c")),
        "not a pair",
    ]

    async with guard.send_messages(client, items, ordered=True) as stream:
        results = [result async for result in stream]

    assert [
        ("a", earlier, True, SendOutcome.SENT),
        ("b", results[1].message_id, False, SendOutcome.SENT),
        ("busy", None, False, SendOutcome.UNKNOWN),
        (None, None, False, SendOutcome.FAILED),
        (None, None, False, SendOutcome.FAILED),
    ] == [(r.dedupe_key, r.message_id, r.replayed, r.outcome) for r in results]
    assert isinstance(results[2].error, SendInProgressError)
    assert isinstance(results[3].error, ValidationError)
    assert {"sent": 2, "unknown": 1, "failed": 2} == stream.summary.outcomes
    assert 1 == stream.summary.attempts
    assert 2 == viber_sandbox.sandbox.stats.accepted


async def test_a_client_that_retries_unknown_outcomes_is_refused(
    guard: SendOnceGuard, viber_sandbox: SandboxServer
) -> None:
    """Such a client could send twice behind the guard's back."""
    async with AsyncViberClient(
        viber_sandbox.access_key,
        base_url=viber_sandbox.base_url,
        retry=RetryPolicy(retry_unknown_outcome=True),
    ) as viber:
        with pytest.raises(ConfigurationError):
            await guard.send(viber, message(), dedupe_key="order-1")


async def test_redis_unavailable_fails_closed(
    client: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """Without its record the guard cannot promise one send: nothing is sent."""
    redis = Redis(host="127.0.0.1", port=unused_port(), socket_connect_timeout=1)
    guard = SendOnceGuard(redis)
    try:
        with pytest.raises(RedisUnavailableError) as error:
            await guard.send(client, message(), dedupe_key="order-1")
    finally:
        await redis.aclose()

    assert "claim" == error.value.operation
    assert 0 == viber_sandbox.sandbox.stats.requests


async def test_settings_are_checked(redis_client: Redis) -> None:
    """A lease must be shorter than the TTL, and both positive."""
    with pytest.raises(ConfigurationError):
        SendOnceGuard(redis_client, ttl=10, lease=20)
    with pytest.raises(ConfigurationError):
        SendOnceGuard(redis_client, lease=0)


async def test_an_id_is_returned_even_if_redis_fails_after_the_send(
    start_redis_server: Callable[[int], AbstractContextManager[RedisServer]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis gone between claim and settle: the ID is returned, the record retried.

    The guard says so at once (a warning), keeps trying in the background,
    and when it is made to give up (aclose with a timeout), logs an error.
    """
    port = unused_port()
    server = start_redis_server(port)
    server.__enter__()
    redis = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    guard = SendOnceGuard(redis)

    def accept_and_stop_redis(request: httpx.Request) -> httpx.Response:
        server.__exit__(None, None, None)
        return httpx.Response(200, json={"message_id": 777})

    try:
        async with (
            httpx.AsyncClient(
                transport=httpx.MockTransport(accept_and_stop_redis)
            ) as http,
            AsyncViberClient(
                "key", base_url="https://api.test/v1/api", http_client=http
            ) as viber,
        ):
            with caplog.at_level(logging.WARNING, logger="decisiontelecom_viber"):
                message_id = await guard.send(viber, message(), dedupe_key="order-1")
                await guard.aclose(timeout=0.2)
    finally:
        await redis.aclose()
    records = [r for r in caplog.records if r.name == "decisiontelecom_viber"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    errors = [r for r in records if r.levelno == logging.ERROR]

    assert 777 == message_id
    assert "the message was sent as 777" in warnings[0].getMessage()
    assert "retrying in the background" in warnings[0].getMessage()
    assert 1 == len(errors)
    assert "gave up" in errors[0].getMessage()


async def test_a_key_that_is_not_valid_unicode_is_refused_before_anything(
    guard: SendOnceGuard, client: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """A lone surrogate cannot be stored in Redis: a ValidationError, not "unknown"."""
    with pytest.raises(ValidationError, match="dedupe_key"):
        await guard.send(client, message(), dedupe_key="bad\ud800")

    assert 0 == viber_sandbox.sandbox.stats.requests
