"""The rate-limiting vocabulary: settings, what answers say, and the `Limiter` protocol.

`AsyncViberClient` paces every attempt through a `Limiter`: it acquires a
`Permit` (waiting at most until the call's deadline), sends, and releases
the permit with the answer's `Feedback`. `AdaptiveLimiter` (`_ratelimit`) is
the default implementation, the Redis one shares a limit between processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol, runtime_checkable

import attrs

from ._checks import count_field, optional_positive_field
from ._clock import Clock, SystemClock
from ._errors import ConfigurationError


__all__ = [
    "Feedback",
    "Limiter",
    "Permit",
    "Priority",
    "RateLimit",
    "RateLimitHeaders",
    "bind_clock",
    "check_priority",
    "parse_rate_limit_headers",
]


#: Which lane a call waits in for the limiter: every ``"high"`` caller goes
#: before any ``"normal"`` one. Single calls default to high, bulk ones to normal.
Priority = Literal["high", "normal"]


def check_priority(priority: object) -> Priority:
    """*priority* if it is one; else a `ConfigurationError` naming the choices."""
    if priority == "high" or priority == "normal":
        return priority
    raise ConfigurationError('priority must be "high" or "normal"')


_positive_or_none = optional_positive_field("RateLimit", types=(int, float))
_at_least_one = count_field("RateLimit")


@attrs.frozen(kw_only=True)
class RateLimit:
    """How a client paces its requests.

    Attributes:
        rate: Requests per second to start from; None to discover the
            server's limit from its answers.
        burst: Requests allowed at once on top of the rate.
        adaptive: Adjust the rate to 429s and rate-limit headers. With
            ``adaptive=False`` the rate is fixed (a 429 still pauses senders).
        initial_window: While the limit is unknown, requests in flight at first.
        initial_rate: The rate tried after a first 429 when the limit is
            unknown; it then grows until measured.
        max_pause: Longest pause a server may impose through ``Retry-After``
            or ``X-Rate-Limit-Reset``, in seconds.
    """

    rate: float | None = attrs.field(default=None, validator=_positive_or_none)
    burst: int = attrs.field(default=1, validator=_at_least_one)
    adaptive: bool = True
    initial_window: int = attrs.field(default=2, validator=_at_least_one)
    initial_rate: float = attrs.field(default=50.0, validator=_positive_or_none)
    max_pause: float = attrs.field(default=30.0, validator=_positive_or_none)

    def __attrs_post_init__(self) -> None:
        if not self.adaptive and self.rate is None:
            raise ConfigurationError("a fixed (adaptive=False) RateLimit needs a rate")


@attrs.frozen
class RateLimitHeaders:
    """Yii2's rate-limit headers: bucket size, requests left, seconds to full."""

    limit: int | None
    remaining: int | None
    reset: float | None


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitHeaders | None:
    """Read ``X-Rate-Limit-Limit/Remaining/Reset``; None when absent or garbled."""
    if "x-rate-limit-remaining" not in headers and "x-rate-limit-limit" not in headers:
        return None
    parsed = RateLimitHeaders(
        _header_int(headers, "x-rate-limit-limit"),
        _header_int(headers, "x-rate-limit-remaining"),
        _header_int(headers, "x-rate-limit-reset"),
    )
    if parsed.limit is None and parsed.remaining is None:
        return None
    return parsed


@attrs.frozen
class Feedback:
    """What one attempt's answer tells the limiter.

    Attributes:
        sent_at: Clock time the request was sent.
        received_at: Clock time the answer (or failure) came.
        status: HTTP status, or None if no answer came.
        rate_limited: Whether the answer was a 429 (or its body with HTTP 200).
        retry_after: Seconds the server asked to wait, if it said.
        headers: Rate-limit headers, if the answer had them.
    """

    sent_at: float
    received_at: float
    status: int | None
    rate_limited: bool = False
    retry_after: float | None = None
    headers: RateLimitHeaders | None = None


@runtime_checkable
class Permit(Protocol):
    """Leave to send one request, handed out by `Limiter.acquire`."""

    @property
    def waited(self) -> float:
        """Seconds the caller waited for this permit."""

    def release(self, feedback: Feedback) -> None:
        """Report what became of the request (once; later calls are ignored)."""


@runtime_checkable
class Limiter(Protocol):
    """What `AsyncViberClient` needs from a rate limiter.

    Implement it to share a limit between processes (see the Redis
    limiter). Each attempt of a call acquires one `Permit` and releases it
    once, with the answer's `Feedback`, whatever happens. A limiter's own
    failure in ``release`` is logged by the client and never replaces the
    outcome of the request.
    """

    async def acquire(
        self, deadline: float | None = None, priority: Priority = "normal"
    ) -> Permit:
        """Wait until a request may be sent; return the permit.

        Args:
            deadline: A `Clock.monotonic` time (of the clock given to
                ``bind``) by which the request must be written, or None.
            priority: The caller's lane: grant every waiting ``"high"``
                caller before any ``"normal"`` one. (A limiter whose
                ``acquire`` takes no *priority* still works: the client
                then calls it without one.)

        Raises:
            DeadlineExceededError: No slot before *deadline*; raise it as
                soon as that is certain (a pause that ends later, say)
                rather than at the deadline.
        """

    def bind(self, clock: Clock) -> None:
        """Use *clock*, the client's, for every time the limiter reads or waits.

        Called by each client the limiter is given to, when it is created.
        Raise `ConfigurationError` when already bound to another clock.
        """

    @property
    def current_rate(self) -> float | None:
        """Requests per second allowed now; None while not limited by rate."""

    @property
    def estimated_limit(self) -> float | None:
        """The server's limit as last measured (or configured), if known."""


def bind_clock(current: Clock, given: bool, clock: Clock, owner: str) -> bool:
    """Whether a limiter should adopt *clock* (raise if bound to another).

    Args:
        current: The limiter's clock now.
        given: Whether that clock was given or bound already (not a default).
        clock: The clock a client binds.
        owner: The limiter's class name, for the error message.
    """
    if clock is current or (
        type(clock) is SystemClock and type(current) is SystemClock
    ):
        return False  # (the real clock has no state: any one is the same)
    if given:
        raise ConfigurationError(
            f"this {owner} runs on another clock than the client's: give both "
            "the same clock (or give it only to the client)"
        )
    return True
