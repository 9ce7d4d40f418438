"""Deadlines in real time against slow sandbox answers: connect, read, per call.

Each test takes at most a few seconds of wall time; the bounds are loose
(a busy CI machine is slow), but far below what an unbounded call would take.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from decisiontelecom_viber import (
    APIConnectionError,
    AsyncViberClient,
    OutcomeUnknownError,
    RetryPolicy,
    ServerError,
    ViberMessage,
)
from decisiontelecom_viber.sandbox import SandboxServer


pytestmark = pytest.mark.integration

MESSAGE = ViberMessage.transactional(sender="Acme", receiver="380501234567", text="hi")
# Slack for a loaded machine, on top of the deadline under test.
SLACK = 0.75

MakeClient = Callable[..., AsyncViberClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Clients on the real clock, without rate limiting; closed after the test."""
    made: list[AsyncViberClient] = []

    def make(base_url: str, **kwargs: Any) -> AsyncViberClient:
        kwargs.setdefault("access_key", "sandbox-access-key")
        kwargs.setdefault("rate_limit", None)
        client = AsyncViberClient(base_url=base_url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A loopback port that listens but never accepts, its queue already full.

    The kernel drops the SYN of any further connection (it neither accepts
    nor refuses it), so connecting hangs until the client's connect timeout,
    as with a firewalled or overloaded host, without leaving the machine.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(64):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(("127.0.0.1", port))
            _, writable, _ = select.select([], [filler], [], 0.2)
            if not writable:  # its SYN was dropped: the queue is full
                break
        else:
            pytest.skip(
                "this kernel refuses (or queues) connections past the listen "
                "backlog (net.ipv4.tcp_abort_on_overflow?): no way to provoke "
                "a connect timeout offline"
            )
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


class Stopwatch:
    """Measures one call in real time."""

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.elapsed = time.monotonic() - self.started


async def test_connect_timeout_is_honoured(
    make_client: MakeClient, unresponsive_port: int
) -> None:
    """A host that never answers the handshake: APIConnectionError after ~connect."""
    client = make_client(
        f"http://127.0.0.1:{unresponsive_port}/v1/api",
        timeout=httpx.Timeout(5.0, connect=0.3),
        retry=None,
    )

    with Stopwatch() as watch, pytest.raises(APIConnectionError) as info:
        await client.send_message(MESSAGE)

    assert "connect timeout" in str(info.value)
    assert 0.25 <= watch.elapsed <= 0.3 + SLACK


async def test_connect_timeouts_are_retried_until_the_deadline(
    make_client: MakeClient, unresponsive_port: int
) -> None:
    """Never sent, so retried: but only until the call's total deadline."""
    client = make_client(
        f"http://127.0.0.1:{unresponsive_port}/v1/api",
        timeout=httpx.Timeout(5.0, connect=0.3),
        retry=RetryPolicy(attempts=20, timeout=1.2, wait_initial=0.05, wait_max=0.05),
    )

    with Stopwatch() as watch, pytest.raises(APIConnectionError):
        await client.send_message(MESSAGE)

    assert 1 <= client.metrics.retries < 19
    assert 0.9 <= watch.elapsed <= 1.2 + SLACK


@pytest.mark.viber_sandbox(latency=2.0)
async def test_read_timeout_is_honoured(
    make_client: MakeClient, viber_sandbox: SandboxServer
) -> None:
    """An answer slower than the read timeout: unknown outcome after ~read."""
    client = make_client(
        viber_sandbox.base_url,
        timeout=httpx.Timeout(5.0, read=0.3),
        retry=RetryPolicy(attempts=5),
    )

    with Stopwatch() as watch, pytest.raises(OutcomeUnknownError, match="read timeout"):
        await client.send_message(MESSAGE)

    assert 0.25 <= watch.elapsed <= 0.3 + SLACK
    # Sent, and not repeated: the default policy never resends an unknown.
    assert 1 == viber_sandbox.sandbox.stats.requests
    assert 1 == viber_sandbox.sandbox.stats.accepted


@pytest.mark.viber_sandbox(fault_500=1.0, latency=0.2)
async def test_total_deadline_bounds_a_call_across_retries(
    make_client: MakeClient, viber_sandbox: SandboxServer
) -> None:
    """500s after 0.2 s each, 50 attempts allowed: over after ~timeout, not 50 x."""
    client = make_client(
        viber_sandbox.base_url,
        retry=RetryPolicy(attempts=50, timeout=1.0, wait_initial=0.05, wait_max=0.05),
    )

    with Stopwatch() as watch, pytest.raises((ServerError, OutcomeUnknownError)):
        await client.send_message(MESSAGE)

    assert 0.8 <= watch.elapsed <= 1.0 + SLACK
    assert 3 <= viber_sandbox.sandbox.stats.requests <= 5


@pytest.mark.viber_sandbox(fault_500=1.0, latency=0.6)
async def test_the_last_attempt_is_cut_to_the_time_left(
    make_client: MakeClient, viber_sandbox: SandboxServer
) -> None:
    """A retry starting 0.65 s into a 1 s budget gets only the 0.35 s left.

    With its full 5 s read timeout it would end at ~1.25 s; cut, it ends on
    time, as an unknown outcome (the sandbox may have accepted it).

    (At 0.7 s of latency a loaded CI machine ended the first attempt past
    the last moment a retry may be written: no retry, a correct
    `ServerError`, and no test of the cut.)
    """
    client = make_client(
        viber_sandbox.base_url,
        timeout=httpx.Timeout(5.0),
        retry=RetryPolicy(attempts=5, timeout=1.0, wait_initial=0.05, wait_max=0.05),
    )

    # (Which ends it — the read timeout cut to the time left, or the
    # deadline's own watch — is a race on a loaded machine; either way it is
    # on time and unknown.)
    with (
        Stopwatch() as watch,
        pytest.raises(OutcomeUnknownError, match=r"read timeout|deadline passed"),
    ):
        await client.send_message(MESSAGE)

    assert 0.8 <= watch.elapsed <= 1.0 + SLACK
    assert 2 == viber_sandbox.sandbox.stats.requests


async def test_status_lookups_retry_read_timeouts_within_the_deadline(
    make_client: MakeClient, viber_sandbox: SandboxServer
) -> None:
    """Read-only lookups retry read timeouts, but not past the call's deadline."""
    client = make_client(
        viber_sandbox.base_url,
        timeout=httpx.Timeout(5.0, read=0.2),
        retry=RetryPolicy(attempts=20, timeout=1.0, wait_initial=0.05, wait_max=0.05),
    )
    message_id = await client.send_message(MESSAGE)
    viber_sandbox.sandbox.configure(latency=0.6)

    with Stopwatch() as watch, pytest.raises(OutcomeUnknownError):
        await client.get_message_status(message_id)

    assert 0.8 <= watch.elapsed <= 1.0 + SLACK
    lookups = viber_sandbox.sandbox.stats.outcomes["status"]
    # Retried (about 4 on an idle machine; a loaded CI machine, each retry
    # on a new connection, fitted 2 in the second), and never past it.
    assert 2 <= lookups < 20
