"""An attempt's time bounds: its httpx timeouts and the call's deadline.

A call's deadline bounds each attempt in two ways: getting a connection
must end by the *write-by* time (so no request is written later), and the
answer may take until the deadline. This module turns those two instants
into the per-phase timeouts of one request, enforces the deadline around
the exchange, and says what a failure means when nothing was written.
Kept apart from the attempt runner (`_pipeline`): it is arithmetic on
times and errors, with no state of its own.
"""

from __future__ import annotations

import asyncio

import httpx

from ._cancel import timeout_at
from ._clock import Clock
from ._errors import (
    APIConnectionError,
    DeadlineExceededError,
    OutcomeUnknownError,
    ViberError,
)
from ._exchange import Answer, Exchange
from ._outcomes import Verdict, verdict


__all__ = ["attempt_timeouts", "exchange_by", "never_written"]

# Once the request is written, the call's deadline is enforced a little
# after the attempt's own timeouts, so that those (more precise) fire first.
_DEADLINE_GRACE = 0.05
_DEADLINE_PASSED = "the call's deadline passed while waiting for the answer"
_AIOHTTP_CEIL_THRESHOLD = 5.0


def attempt_timeouts(
    timeouts: dict[str, float | None],
    deadline: float | None,
    write_by: float | None,
    clock: Clock,
    *,
    pool_bounds_connecting: bool,
) -> dict[str, float | None]:
    """The httpx timeouts of one attempt: *timeouts*, cut to the deadline.

    Args:
        timeouts: The client's per-attempt timeouts, by phase.
        deadline: When the call must end (None: no deadline).
        write_by: When the request must be written at the latest.
        clock: The client's clock.
        pool_bounds_connecting: Whether the exchange's pool timeout also
            bounds connecting (else the two add up).
    """
    if deadline is None or write_by is None:
        return timeouts
    now = clock.monotonic()
    # Getting a connection must end by the write-by time, so that no
    # request is written later; the answer may take until the deadline.
    # (aiohttp rounds a timeout above 5 s up to a whole second of loop
    # time: one second less covers that.)
    connect = write_by - now
    if connect > _AIOHTTP_CEIL_THRESHOLD:
        connect -= 1.0
    pool = connect
    if not pool_bounds_connecting:
        # httpx waits for the pool, then connects: the two add up.
        pool = connect = connect / 2
    limits = {
        "pool": pool,
        "connect": connect,
        "write": deadline - now,
        "read": deadline - now,
    }
    return {
        phase: _cut(value, limits.get(phase, deadline - now))
        for phase, value in timeouts.items()
    }


async def exchange_by(
    exchange: Exchange, request: httpx.Request, deadline: float | None, clock: Clock
) -> Answer:
    """Exchange *request*, giving up at *deadline* (an unknown outcome)."""
    if deadline is None:
        return await exchange(request)
    loop = asyncio.get_running_loop()
    left = deadline - clock.monotonic() + _DEADLINE_GRACE
    try:
        async with timeout_at(loop.time() + left):
            return await exchange(request)
    except asyncio.TimeoutError:
        pass
    # Raised outside the except block: no cancellation in its context.
    raise OutcomeUnknownError(_DEADLINE_PASSED)


def never_written(failure: ViberError) -> ViberError:
    """*failure* of a request none of which was written, as a never-sent error."""
    if verdict(failure) is not Verdict.UNKNOWN:
        return failure
    if isinstance(failure, OutcomeUnknownError) and failure.reason == _DEADLINE_PASSED:
        return DeadlineExceededError("a connection")
    never = APIConnectionError(
        f"failed before the request was written: {failure.reason}"
        if isinstance(failure, OutcomeUnknownError)
        else f"failed before the request was written: {failure}"
    )
    never.cause_type = failure.cause_type
    return never


def _cut(value: float | None, left: float) -> float | None:
    left = max(left, 0.001)
    return left if value is None else min(value, left)
