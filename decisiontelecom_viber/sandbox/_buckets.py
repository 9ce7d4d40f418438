"""Rate-limit algorithms and the header dialects they answer in (pure).

The API's ``X-Rate-Limit-*`` headers are those of Yii2's
``yii/filters/RateLimiter``, so the sandbox's default is Yii2's algorithm,
exactly (`Yii2Bucket`, from ``checkRateLimit``): whole-second time, truncated
refills, the timestamp saved on every request. The other dialects run a
continuous token bucket (`TokenBucket`) and say different things in the same
headers, so that clients are tested against more than one reading of them:

* ``"yii2"``: Limit = limit per window, Remaining = allowance - 1, Reset =
  whole seconds until full (``window`` on a 429);
* ``"full-reset"``: Limit = bucket size, Remaining = whole tokens left, Reset =
  whole seconds until the bucket is full;
* ``"next-token"``: the same, but Reset = whole seconds until the next token
  (at least 1).
"""

from __future__ import annotations

import math
from typing import Literal, Protocol


__all__ = [
    "DIALECTS",
    "Bucket",
    "Dialect",
    "TokenBucket",
    "Verdict",
    "Yii2Bucket",
    "answer_headers",
    "make_bucket",
]

Dialect = Literal["yii2", "full-reset", "next-token"]
DIALECTS: tuple[Dialect, ...] = ("yii2", "full-reset", "next-token")

# (allowed, Limit, Remaining, Reset)
Verdict = tuple[bool, int, int, int]


class Bucket(Protocol):
    """A server's rate limit for one key."""

    def take(self, now: float) -> Verdict:
        """Take one token at *now* (seconds of Unix time); the headers to send."""

    def seconds_until_token(self, now: float) -> float:
        """Seconds from *now* until a request would be allowed."""


class Yii2Bucket:
    """``yii/filters/RateLimiter::checkRateLimit``, line by line.

    *limit* requests per *window* seconds; the allowance starts at *limit*.
    ``time()`` is whole seconds, and the timestamp is saved on every request,
    so a token only comes back when the second changes, and fractions are lost.
    """

    __slots__ = ("allowance", "limit", "timestamp", "window")

    def __init__(self, limit: int, window: int, now: float) -> None:
        self.limit = limit
        self.window = window
        self.allowance = limit
        self.timestamp = int(now)

    def take(self, now: float) -> Verdict:
        limit, window = self.limit, self.window
        current = int(now)
        allowance = self.allowance + int((current - self.timestamp) * limit / window)
        allowance = min(allowance, limit)
        if allowance < 1:
            self.allowance, self.timestamp = 0, current
            return False, limit, 0, window
        self.allowance, self.timestamp = allowance - 1, current
        # Yii2 2.0.14 and later (#15432); before, (limit - allowance).
        return True, limit, allowance - 1, int((limit - allowance + 1) * window / limit)

    def seconds_until_token(self, now: float) -> float:
        if self.allowance >= 1:
            return 0.0
        # The next whole second brings int(limit / window) tokens (if >= 1).
        seconds = max(1, math.ceil(self.window / self.limit))
        return max(0.0, self.timestamp + seconds - now)


class TokenBucket:
    """A continuous token bucket: *rate* tokens per second, *burst* at most."""

    __slots__ = ("_last", "burst", "dialect", "rate", "tokens")

    def __init__(
        self,
        rate: float,
        burst: int,
        now: float,
        dialect: Literal["full-reset", "next-token"] = "full-reset",
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._last = now
        self.dialect = dialect

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, now: float) -> Verdict:
        self._refill(now)
        allowed = self.tokens >= 1.0
        if allowed:
            self.tokens -= 1.0
        if self.dialect == "next-token":
            reset = max(1, math.ceil(max(0.0, 1.0 - self.tokens) / self.rate))
        else:
            reset = int(max(0.0, self.burst - self.tokens) / self.rate)
        return allowed, self.burst, int(self.tokens), reset

    def seconds_until_token(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def seconds_until_full(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (self.burst - self.tokens) / self.rate)


def make_bucket(
    dialect: Dialect | None, rate: float, burst: int, window: int, now: float
) -> Bucket:
    """The bucket of a dialect: Yii2's algorithm for ``"yii2"``, else continuous.

    For Yii2, *rate* x *window* requests per *window* seconds (its limit is
    also its burst); otherwise *rate* per second with *burst* at once.
    """
    if dialect == "yii2":
        return Yii2Bucket(max(1, round(rate * window)), window, now)
    return TokenBucket(
        rate, burst, now, "next-token" if dialect == "next-token" else "full-reset"
    )


def answer_headers(
    bucket: Bucket,
    verdict: Verdict,
    now: float,
    *,
    rate_limit_headers: bool,
    retry_after: bool,
) -> dict[str, str]:
    """The headers of an answer: ``X-Rate-Limit-*`` and, on a 429, ``Retry-After``.

    Retry-After is whole seconds until a request would be allowed, at least 1.
    """
    allowed, limit, remaining, reset = verdict
    headers: dict[str, str] = {}
    if rate_limit_headers:
        headers = {
            "X-Rate-Limit-Limit": str(limit),
            "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": str(reset),
        }
    if not allowed and retry_after:
        wait = bucket.seconds_until_token(now)
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return headers
