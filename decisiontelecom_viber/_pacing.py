"""The pipeline's side of the rate limiter: taking and giving back permits.

A `Limiter` may be the user's own: its failures are translated here, once
(`LimiterError` when taking a permit, nothing was sent; a log line when
giving one back, the outcome is already known), so that the attempt runner
in `_pipeline` never sees a limiter's own exception.
"""

from __future__ import annotations

import inspect
import logging

from ._calls import Call
from ._clock import Clock
from ._errors import LimiterError, RateLimitError, ViberError
from ._limits import Feedback, Limiter, Permit, Priority, RateLimitHeaders
from ._meter import Meter


__all__ = ["Pacer", "release"]

logger = logging.getLogger("decisiontelecom_viber")


def takes_priority(limiter: Limiter) -> bool:
    """Whether *limiter*'s ``acquire`` names a ``priority`` parameter.

    User limiters written before priorities may not; one that only forwards
    ``**kwargs`` is not trusted with it either (what it forwards to may not).
    """
    try:
        parameters = inspect.signature(limiter.acquire).parameters
    except (TypeError, ValueError):
        return False
    return "priority" in parameters


class Pacer:
    """Takes permits from one limiter, counting the waits.

    Args:
        limiter: The limiter every attempt goes through.
        meter: Where the waits are counted.
    """

    __slots__ = ("_limiter", "_meter", "_takes_priority")

    def __init__(self, limiter: Limiter, meter: Meter) -> None:
        self._limiter = limiter
        self._meter = meter
        self._takes_priority = takes_priority(limiter)

    async def acquire(
        self, deadline: float | None, priority: Priority, operation: str, call: Call
    ) -> Permit:
        """A permit; the limiter's own failure is a `LimiterError` (never sent)."""
        limiter = self._limiter
        try:
            if self._takes_priority:
                permit = await limiter.acquire(deadline, priority=priority)
            else:
                permit = await limiter.acquire(deadline)
            waited = float(permit.waited)
        except ViberError:
            raise
        except Exception as error:
            name = type(error).__name__
            raise LimiterError(
                f"the rate limiter failed ({name}); nothing was sent"
            ) from error
        if waited:
            self._meter.count("limiter_waits")
            self._meter.count("limiter_wait", waited)
        if call.span is not None:
            self._meter.count_otel("limiter_wait", waited, operation)
        return permit


def release(
    permit: Permit,
    clock: Clock,
    sent_at: float,
    status: int | None,
    limits: RateLimitHeaders | None = None,
    failure: ViberError | None = None,
    asked_wait: float | None = None,
) -> None:
    """Give *permit* back with what the answer said (a failure is logged).

    Args:
        permit: The attempt's permit.
        clock: The client's clock (when the answer came).
        sent_at: When the limiter let the request go.
        status: The answer's HTTP status (None: no answer).
        limits: The answer's rate-limit headers.
        failure: What the attempt failed with.
        asked_wait: The wait the answer asked for (``Retry-After``).
    """
    feedback = Feedback(
        sent_at,
        clock.monotonic(),
        status,
        isinstance(failure, RateLimitError),
        asked_wait,
        limits,
    )
    try:
        permit.release(feedback)
    except Exception:
        # The request's outcome is known; a limiter's bug must not hide it.
        logger.exception("the rate limiter failed to release a permit")
