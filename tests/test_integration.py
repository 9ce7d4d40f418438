"""The SDK over real loopback HTTP against the sandbox: each fault maps to its error."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from decisiontelecom_viber import (
    APIConnectionError,
    AsyncViberClient,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidParameterError,
    MessageStatus,
    OutcomeUnknownError,
    RateLimitError,
    RetryPolicy,
    SendOutcome,
    ServerError,
    ViberMessage,
)
from decisiontelecom_viber.sandbox import SandboxServer

from .helpers import FakeClock, waits
from .servers import unused_port


pytestmark = pytest.mark.integration

MakeClient = Callable[..., AsyncViberClient]


def text(body: str = "hello", receiver: str = "380501234567") -> ViberMessage:
    return ViberMessage.transactional(sender="Acme", receiver=receiver, text=body)


@pytest.fixture
def live(viber_sandbox: SandboxServer, make_client: MakeClient) -> AsyncViberClient:
    """A client on the fake clock (retry waits are instant) aimed at the sandbox."""
    return make_client(
        access_key=viber_sandbox.access_key, base_url=viber_sandbox.base_url
    )


async def test_success(live: AsyncViberClient, viber_sandbox: SandboxServer) -> None:
    """A send and a status lookup; the sandbox recorded exactly what was sent."""
    message_id = await live.send_message(text("hi there"))
    receipt = await live.get_message_status(message_id)

    assert MessageStatus.PENDING == receipt.status
    assert "hi there" == viber_sandbox.sandbox.message(message_id).text
    assert "Acme" == viber_sandbox.sandbox.message(message_id).payload["source_addr"]


@pytest.mark.parametrize(
    "with_http_200", [False, True], ids=["real-status", "http-200"]
)
async def test_refused_field(
    live: AsyncViberClient, viber_sandbox: SandboxServer, with_http_200: bool
) -> None:
    """A field the server refuses: InvalidParameterError naming it, not retried."""
    viber_sandbox.sandbox.configure(errors_with_http_200=with_http_200)

    # The SDK refuses it first: forced past its validation, to see the API's
    # refusal translated.
    message = text()
    object.__setattr__(message, "receiver", "+380501234567")
    with pytest.raises(InvalidParameterError) as info:
        await live.send_message(message)

    assert "destination_addr" == info.value.param
    assert 1 == viber_sandbox.sandbox.stats.requests


async def test_unknown_message_id(live: AsyncViberClient) -> None:
    """A lookup of an unknown ID is refused as an invalid message_id."""
    with pytest.raises(InvalidParameterError) as info:
        await live.get_message_status(424242)

    assert "message_id" == info.value.param


async def test_wrong_key(viber_sandbox: SandboxServer, make_client: MakeClient) -> None:
    """A wrong key: AuthenticationError, one request."""
    client = make_client(access_key="wrong", base_url=viber_sandbox.base_url)

    with pytest.raises(AuthenticationError):
        await client.send_message(text())

    assert 1 == viber_sandbox.sandbox.stats.requests


@pytest.mark.viber_sandbox(rate_limit=1, burst=1, retry_after_header=True)
async def test_429_with_retry_after(
    live: AsyncViberClient, viber_sandbox: SandboxServer, clock: FakeClock
) -> None:
    """Real 429s with Retry-After: each retry waits it out; then RateLimitError."""
    await live.send_message(text())

    with pytest.raises(RateLimitError) as info:
        await live.send_message(text("second"))

    assert 1.0 == info.value.retry_after
    # The limiter waits each Retry-After out (the retries then go at once).
    assert [1.0] * 4 == waits(clock)
    assert 5 == viber_sandbox.sandbox.stats.rate_limited


@pytest.mark.viber_sandbox(fault_500=1.0)
async def test_500_is_retried_then_raised(
    live: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """A documented 500: ServerError after every attempt; nothing accepted."""
    with pytest.raises(ServerError) as info:
        await live.send_message(text())

    assert (500, 2) == (info.value.http_status, info.value.code)
    assert (5, 0) == (
        viber_sandbox.sandbox.stats.requests,
        viber_sandbox.sandbox.stats.accepted,
    )


@pytest.mark.viber_sandbox(fault_502_html=1.0)
async def test_html_502(live: AsyncViberClient, viber_sandbox: SandboxServer) -> None:
    """A gateway's HTML page: ServerError classified by status."""
    with pytest.raises(ServerError) as info:
        await live.send_message(text())

    assert 502 == info.value.http_status
    assert "502 Bad Gateway" in info.value.body


@pytest.mark.parametrize(
    ("fault", "accepted"),
    [
        ("fault_disconnect_before", 0),
        ("fault_disconnect_after", 1),
        ("fault_truncated_body", 1),
    ],
)
async def test_broken_connections_are_unknown_outcomes(
    live: AsyncViberClient, viber_sandbox: SandboxServer, fault: str, accepted: int
) -> None:
    """A broken connection or a body cut mid-way: OutcomeUnknownError, one request."""
    viber_sandbox.sandbox.configure(**{fault: 1.0})

    with pytest.raises(OutcomeUnknownError):
        await live.send_message(text())

    assert 1 == viber_sandbox.sandbox.stats.requests
    assert accepted == viber_sandbox.sandbox.stats.accepted


@pytest.mark.viber_sandbox(latency_spike_probability=1.0, latency_spike=1.0)
async def test_read_timeout_is_an_unknown_outcome(
    viber_sandbox: SandboxServer, make_client: MakeClient
) -> None:
    """A slow answer past the read timeout: unknown outcome, and it was accepted."""
    client = make_client(
        access_key=viber_sandbox.access_key,
        base_url=viber_sandbox.base_url,
        timeout=httpx.Timeout(5.0, read=0.1),
    )

    with pytest.raises(OutcomeUnknownError, match="read timeout"):
        await client.send_message(text())

    assert 1 == viber_sandbox.sandbox.stats.accepted


@pytest.mark.viber_sandbox(balance=1)
async def test_empty_balance(
    live: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """402 code 3: InsufficientBalanceError, never retried."""
    await live.send_message(text())

    with pytest.raises(InsufficientBalanceError):
        await live.send_message(text("two"))

    assert 2 == viber_sandbox.sandbox.stats.requests


async def test_connection_refused(make_client: MakeClient, clock: FakeClock) -> None:
    """Nothing listening: APIConnectionError after every attempt."""
    client = make_client(
        base_url=f"http://127.0.0.1:{unused_port()}/v1/api",
        retry=RetryPolicy(attempts=3),
    )

    with pytest.raises(APIConnectionError):
        await client.send_message(text())

    assert 2 == len(clock.sleeps)


@pytest.mark.viber_sandbox(
    fault_500=0.1,
    fault_502_html=0.05,
    fault_disconnect_before=0.05,
    fault_disconnect_after=0.05,
    fault_truncated_body=0.05,
    seed=3,
)
async def test_bulk_results_agree_with_the_server(
    live: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """Under mixed faults: one result per input, and every report is true."""
    messages = [text(f"message {n}") for n in range(300)]

    results = [r async for r in live.send_messages(messages, concurrency=16)]

    sandbox = viber_sandbox.sandbox
    accepted = {m.message_id: m.text for m in sandbox.messages()}
    assert sorted(r.index for r in results) == list(range(300))
    assert 0 == sandbox.stats.duplicates
    for result in results:
        if result.outcome is SendOutcome.SENT:
            assert result.message_id is not None
            assert f"message {result.index}" == accepted[result.message_id]
    sent_texts = {f"message {r.index}" for r in results if r.ok}
    unknown_texts = {
        f"message {r.index}" for r in results if r.outcome is SendOutcome.UNKNOWN
    }
    # Every accepted message is reported sent or unknown, never failed.
    assert set(accepted.values()) <= sent_texts | unknown_texts
    assert any(r.outcome is SendOutcome.UNKNOWN for r in results)
