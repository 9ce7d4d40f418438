"""Retry decisions as tables, and the Retrier on a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from decisiontelecom_viber import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    GatewayTimeoutError,
    InsufficientBalanceError,
    InvalidParameterError,
    OutcomeUnknownError,
    RateLimitError,
    RetryDetails,
    RetryPolicy,
    ServerError,
    UnexpectedResponseError,
    ValidationError,
    ViberError,
)
from decisiontelecom_viber._retry import (
    Retrier,
    backoff_delay,
    retry_delay,
    should_retry,
)

from .helpers import FakeClock


def api_error(cls: type[APIError], status: int, **kwargs: object) -> APIError:
    return cls("name", "message", http_status=status, **kwargs)  # type: ignore[arg-type]


RATE_LIMIT = api_error(RateLimitError, 429)
SERVER = api_error(ServerError, 500)
GATEWAY_TIMEOUT = api_error(GatewayTimeoutError, 504)
CONNECTION = APIConnectionError("refused")
UNKNOWN = OutcomeUnknownError("read timeout")
GARBLED = UnexpectedResponseError("not json", http_status=200, body="<html>")


@pytest.mark.parametrize(
    ("error", "send", "lookup", "send_opted_in"),
    [
        (RATE_LIMIT, True, True, True),
        (SERVER, True, True, True),
        (CONNECTION, True, True, True),
        (UNKNOWN, False, True, True),
        (GARBLED, False, True, True),
        (GATEWAY_TIMEOUT, False, True, True),
        (api_error(InvalidParameterError, 400), False, False, False),
        (api_error(AuthenticationError, 401), False, False, False),
        (api_error(InsufficientBalanceError, 402), False, False, False),
        (api_error(AuthenticationError, 403), False, False, False),
        (api_error(APIError, 404), False, False, False),
        (ValidationError("text", "too long"), False, False, False),
        (ValueError("a bug"), False, False, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_should_retry(
    error: BaseException, send: bool, lookup: bool, send_opted_in: bool
) -> None:
    """Sends retry only when nothing was sent; lookups retry every transient."""
    assert send == should_retry(error, idempotent=False, retry_unknown_outcome=False)
    assert lookup == should_retry(error, idempotent=True, retry_unknown_outcome=False)
    assert send_opted_in == should_retry(
        error, idempotent=False, retry_unknown_outcome=True
    )


@pytest.mark.parametrize(
    ("retry_number", "rand", "expected"),
    [
        (1, 0.0, 0.5),
        (2, 0.0, 1.0),
        (3, 0.0, 2.0),
        (4, 0.0, 4.0),
        (5, 0.0, 8.0),
        (6, 0.0, 8.0),
        (1000, 0.0, 8.0),
        (1, 0.999, 0.5 * (1 - 0.25 * 0.999)),
        (3, 0.5, 2.0 * 0.875),
    ],
)
def test_backoff_delay(retry_number: int, rand: float, expected: float) -> None:
    """min(wait_max, wait_initial * 2**(n-1)), minus up to 25 % jitter."""
    assert expected == pytest.approx(backoff_delay(retry_number, RetryPolicy(), rand))


@pytest.mark.parametrize(
    ("retry_after", "rand", "expected"),
    [
        (3.0, 0.0, 3.0),
        (3.0, 1.0, 3.75),
        (0.0, 0.0, 0.0),
        (500.0, 0.0, 20.0),
        (None, 0.0, 0.5),
    ],
)
def test_retry_delay_honours_the_server(
    retry_after: float | None, rand: float, expected: float
) -> None:
    """Server-directed waits win, capped at max_retry_after; jitter only adds."""
    error = RateLimitError("n", "m", http_status=429, retry_after=retry_after)

    assert expected == pytest.approx(retry_delay(error, 1, RetryPolicy(), rand))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": True},
        {"attempts": 1.5},
        {"timeout": 0},
        {"wait_initial": -1},
        {"wait_jitter": 1.5},
        {"max_retry_after": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, object]) -> None:
    """Nonsense policies fail when built."""
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


class Script:
    """An operation that fails with the given errors, then returns 'done'."""

    def __init__(
        self, *errors: BaseException, clock: FakeClock | None = None, cost: float = 0
    ):
        self.errors = list(errors)
        self.calls = 0
        self.deadlines: list[float | None] = []
        self.clock = clock
        self.cost = cost

    async def __call__(self, deadline: float | None) -> str:
        self.calls += 1
        self.deadlines.append(deadline)
        if self.clock is not None:
            self.clock.advance(self.cost)
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class TestRetrier:
    async def test_success_needs_no_retry(self, clock: FakeClock) -> None:
        """The first attempt runs directly; nothing sleeps."""
        operation = Script()

        result = await Retrier(RetryPolicy(), clock).call(
            operation, name="op", idempotent=False
        )

        assert ("done", 1, []) == (result, operation.calls, clock.sleeps)

    async def test_retries_until_success_with_backoff(self, clock: FakeClock) -> None:
        """Each retry waits the backoff; the fast-path failure counts as attempt 1."""
        operation = Script(SERVER, SERVER, SERVER)

        result = await Retrier(RetryPolicy(wait_jitter=0), clock).call(
            operation, name="op", idempotent=False
        )

        assert "done" == result
        assert 4 == operation.calls
        assert [0.5, 1.0, 2.0] == clock.sleeps

    async def test_attempts_bound_the_calls(self, clock: FakeClock) -> None:
        """attempts counts every call, the first included; the last error is raised."""
        errors = [APIConnectionError(f"down {n}") for n in range(10)]
        operation = Script(*errors)

        with pytest.raises(APIConnectionError, match="down 2"):
            await Retrier(RetryPolicy(attempts=3), clock).call(
                operation, name="op", idempotent=False
            )

        assert 3 == operation.calls
        assert 2 == len(clock.sleeps)

    async def test_non_retryable_error_is_raised_at_once(
        self, clock: FakeClock
    ) -> None:
        """A 400 after a 500 ends the call."""
        bad = api_error(InvalidParameterError, 400)
        operation = Script(SERVER, bad)

        with pytest.raises(InvalidParameterError):
            await Retrier(RetryPolicy(), clock).call(
                operation, name="op", idempotent=False
            )

        assert 2 == operation.calls

    async def test_unknown_outcome_after_a_retry_is_not_retried_for_sends(
        self, clock: FakeClock
    ) -> None:
        """Ambiguity on attempt 2 ends a send too."""
        operation = Script(SERVER, UNKNOWN)

        with pytest.raises(OutcomeUnknownError):
            await Retrier(RetryPolicy(), clock).call(
                operation, name="op", idempotent=False
            )

        assert 2 == operation.calls

    async def test_deadline_counts_time_spent_in_attempts(
        self, clock: FakeClock
    ) -> None:
        """Slow attempts use up the deadline: no retry that would end past it."""
        operation = Script(*[SERVER] * 10, clock=clock, cost=2.0)

        with pytest.raises(ServerError):
            await Retrier(
                RetryPolicy(attempts=10, timeout=6.0, wait_jitter=0), clock
            ).call(operation, name="op", idempotent=False)

        # t=2 fail, wait 0.5; t=4.5 fail, wait 1 -> 5.5, past 5 (the deadline
        # less the 1 s kept for an answer): stop.
        assert 2 == operation.calls
        assert [0.5] == clock.sleeps
        assert {1006.0} == set(operation.deadlines)

    async def test_no_deadline(self, clock: FakeClock) -> None:
        """timeout=None gives attempts a None deadline."""
        operation = Script()

        await Retrier(RetryPolicy(timeout=None), clock).call(
            operation, name="op", idempotent=True
        )

        assert [None] == operation.deadlines

    async def test_hooks_and_logs(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Hooks see every retry; 429 retries log at INFO, others at WARNING."""
        seen: list[RetryDetails] = []

        def broken_hook(details: RetryDetails) -> None:
            raise RuntimeError("hook bug")

        operation = Script(RATE_LIMIT, SERVER)
        retrier = Retrier(
            RetryPolicy(wait_jitter=0),
            clock,
            # (list.append fits: RetryHook's argument is positional-only.)
            hooks=[seen.append, broken_hook],
        )

        with caplog.at_level(logging.DEBUG, logger="decisiontelecom_viber"):
            assert "done" == await retrier.call(
                operation, name="send_message", idempotent=False
            )

        assert [(1, RATE_LIMIT, 0.5), (2, SERVER, 1.0)] == [
            (d.attempt, d.error, d.delay) for d in seen
        ]
        assert {"send_message"} == {d.operation for d in seen}
        levels = [r.levelno for r in caplog.records if "retrying" in r.getMessage()]
        assert [logging.INFO, logging.WARNING] == levels
        assert any(
            "hook bug" in (r.exc_text or "") or r.exc_info for r in caplog.records
        )

    async def test_cancellation_is_never_swallowed(self, clock: FakeClock) -> None:
        """Cancelling a call mid-retry propagates CancelledError."""
        started = asyncio.Event()

        async def hang(deadline: float | None) -> str:
            started.set()
            await asyncio.Event().wait()
            return "never"

        task = asyncio.ensure_future(
            Retrier(RetryPolicy(), clock).call(hang, name="op", idempotent=True)
        )
        await started.wait()
        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await task

    async def test_other_exceptions_propagate(self, clock: FakeClock) -> None:
        """Bugs (non-ViberError exceptions) are neither retried nor wrapped."""
        operation = Script(SERVER, KeyError("bug"))

        with pytest.raises(KeyError):
            await Retrier(RetryPolicy(), clock).call(
                operation, name="op", idempotent=True
            )

        assert 2 == operation.calls

    async def test_disabled_policy(self, clock: FakeClock) -> None:
        """None and RetryPolicy.disabled() make one attempt."""
        for policy in (None, RetryPolicy.disabled()):
            operation = Script(SERVER)
            with pytest.raises(ViberError):
                await Retrier(policy, clock).call(operation, name="op", idempotent=True)
            assert 1 == operation.calls
