"""The Redis boundary: every call to Redis, typed, and its failures translated.

The limiter and the guard talk to Redis only through `LimiterScripts` and
`GuardScripts`, and this module is the one place where redis-py's errors
(`REDIS_ERRORS`) become `RedisUnavailableError`: each caller then decides
what an unavailable Redis means for it (fail, fall back, retry, log), from
one exception type whose cause is redis-py's error.

Every decision about the shared state is taken inside Redis by one script
call (the sources are ``lua/*.lua``, see `_lua`), so it is atomic however
many workers run. Time is Redis's own (``TIME``), the one clock every worker
on every machine shares; the first argument of each script may override it,
which is how the tests drive the scripts with a controllable clock.

Numbers cross the Lua boundary as strings (Redis truncates Lua numbers to
integers in replies), formatted with ``%.17g`` so that doubles survive.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar, cast

import attrs
from redis.asyncio import Redis

from ._errors import REDIS_ERRORS, RedisUnavailableError
from ._lua import LIMITER_TUNING, script_source


__all__ = [
    "AcquireReply",
    "GuardScripts",
    "LimiterParams",
    "LimiterScripts",
]

_T = TypeVar("_T")


async def _call(operation: str, call: Awaitable[_T]) -> _T:
    """Await one Redis call; a Redis that cannot serve it raises ours.

    Raises:
        RedisUnavailableError: For any of `REDIS_ERRORS` (its cause).
    """
    try:
        return await call
    except REDIS_ERRORS as error:
        raise RedisUnavailableError(operation, error) from error


# -- the rate limiter ----------------------------------------------------------


@attrs.frozen(kw_only=True)
class LimiterParams:
    """The configuration every limiter script call carries.

    Workers sharing a key must use the same values: a different
    configuration resets the shared state.
    """

    rate: float | None
    burst: int
    adaptive: bool
    initial_rate: float
    headroom: float
    state_ttl: float

    def args(
        self,
        now: float | None,
        accepted: int | Sequence[float],
        rtt: float,
        acked: float | None = None,
    ) -> list[Any]:
        """ARGV[1..10], shared by the scripts (10: the tuning constants).

        *accepted*: answers that were not 429s since the last call, as a
        count, or as the times they came (Redis time); *acked*: the latest
        time one of them was sent.
        """
        if isinstance(accepted, int):
            counted = f"{accepted};;"
        else:
            counted = "0;" + ",".join(f"{t:.6f}" for t in accepted) + ";"
        if acked is not None:
            counted += f"{acked:.6f}"
        return [
            "" if now is None else repr(now),
            "" if self.rate is None else repr(float(self.rate)),
            str(self.burst),
            "1" if self.adaptive else "0",
            repr(float(self.initial_rate)),
            repr(float(self.headroom)),
            str(max(1, round(self.state_ttl * 1000))),
            counted,
            repr(float(rtt)),
            LIMITER_TUNING,
        ]


@attrs.frozen
class AcquireReply:
    """What the acquire script answered (times are Redis unix times).

    Attributes:
        registered: Whether this worker's high-priority callers are
            registered as waiting (some got no slot).
        high_elsewhere: Other workers with high-priority callers waiting:
            while there are any, only high-priority callers get slots.
    """

    now: float
    retry_in: float
    rate: float
    estimate: float | None
    paused_until: float
    slots: tuple[float, ...]
    registered: bool = False
    high_elsewhere: int = 0


@attrs.frozen
class ReportReply:
    """What the report script answered (times are Redis unix times)."""

    now: float
    rate: float
    estimate: float | None
    paused_until: float
    stale: bool


def decode(value: object) -> str:
    """A Redis reply element as text (clients may or may not decode replies)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _optional(value: object) -> float | None:
    text = decode(value)
    return float(text) if text else None


def _optional_arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class LimiterScripts:
    """The limiter's Redis calls (its scripts, and its hash), on one client.

    Every method raises `RedisUnavailableError` when Redis cannot serve it.
    """

    __slots__ = ("_acquire", "_flush", "_redis", "_report")

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._acquire = redis.register_script(script_source("acquire"))
        self._report = redis.register_script(script_source("report"))
        self._flush = redis.register_script(script_source("flush"))

    async def read_state(self, key: str) -> dict[str, str]:
        """The shared state's hash at *key* (empty before the first use)."""
        raw = await _call(
            "rate limit state",
            cast("Awaitable[dict[Any, Any]]", self._redis.hgetall(key)),
        )
        return {decode(name): decode(value) for name, value in raw.items()}

    async def delete(self, key: str) -> None:
        """Delete the shared state at *key*."""
        await _call("rate limit reset", self._redis.delete(key))

    async def acquire(
        self,
        key: str,
        params: LimiterParams,
        *,
        want: int,
        horizon: float,
        worker: str = "",
        high: int = 0,
        accepted: int | Sequence[float] = 0,
        acked: float | None = None,
        rtt: float = 0.0,
        now: float | None = None,
    ) -> AcquireReply:
        """Reserve up to *want* slots at most *horizon* seconds ahead.

        *worker* names the calling worker, *high* of whose *want* callers
        are high-priority (they take the first slots).
        """
        args = [
            *params.args(now, accepted, rtt, acked),
            str(want),
            repr(float(horizon)),
            worker,
            str(high),
        ]
        reply: Sequence[object] = await _call(
            "rate limit", self._acquire(keys=[key], args=args)
        )
        return AcquireReply(
            float(decode(reply[0])),
            float(decode(reply[1])),
            float(decode(reply[2])),
            _optional(reply[3]),
            float(decode(reply[4])),
            tuple(float(decode(slot)) for slot in reply[7:]),
            registered=decode(reply[5]) == "1",
            high_elsewhere=int(decode(reply[6])),
        )

    async def flush(
        self,
        key: str,
        params: LimiterParams,
        *,
        accepted: int | Sequence[float],
        acked: float | None = None,
        rtt: float = 0.0,
        now: float | None = None,
    ) -> None:
        """Count accepted answers (see `LimiterParams.args`)."""
        args = params.args(now, accepted, rtt, acked)
        await _call("rate limit count", self._flush(keys=[key], args=args))

    async def report(
        self,
        key: str,
        params: LimiterParams,
        *,
        sent_at: float,
        received_at: float,
        retry_after: float | None,
        max_pause: float,
        reserved_at: float | None = None,
        reset: float | None = None,
        accepted: int | Sequence[float] = 0,
        acked: float | None = None,
        rtt: float = 0.0,
        now: float | None = None,
    ) -> ReportReply:
        """Report a 429 for a request sent and answered at these Redis times.

        *reserved_at* is when the request's slot was reserved (defaults to
        *sent_at*): it tells whether the 429 is news or stale. *reset* is
        the answer's ``X-Rate-Limit-Reset``, if it had one.
        """
        args = [
            *params.args(now, accepted, rtt, acked),
            repr(float(sent_at)),
            repr(float(received_at)),
            _optional_arg(retry_after),
            repr(float(max_pause)),
            repr(float(sent_at if reserved_at is None else reserved_at)),
            _optional_arg(reset),
        ]
        reply: Sequence[object] = await _call(
            "rate limit report", self._report(keys=[key], args=args)
        )
        return ReportReply(
            float(decode(reply[0])),
            float(decode(reply[1])),
            _optional(reply[2]),
            float(decode(reply[3])),
            decode(reply[4]) == "1",
        )


# -- the send-once guard -------------------------------------------------------


class GuardScripts:
    """The guard's Redis calls (its scripts, and deletes), on one client.

    Every method raises `RedisUnavailableError` when Redis cannot serve it,
    named by *operation* (what the guard was doing).
    """

    __slots__ = ("_claim", "_mark", "_redis", "_settle")

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(script_source("claim"))
        self._mark = redis.register_script(script_source("mark"))
        self._settle = redis.register_script(script_source("settle"))

    async def forget(self, key: str) -> bool:
        """Delete the record at *key*; return whether there was one."""
        deleted = await _call("forget", self._redis.delete(key))
        return bool(deleted)

    async def claim(
        self,
        key: str,
        *,
        owner: str,
        lease: float,
        ttl: float,
        peek: bool = False,
        give_up_after: float | None = None,
        now: float | None = None,
        operation: str | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Claim *key* (or only look at it); return (verdict, record).

        *operation* names the call in errors (``"claim"``, or ``"lookup"``
        for a *peek*, by default).
        """
        if operation is None:
            operation = "lookup" if peek else "claim"
        args = [
            "" if now is None else repr(now),
            "peek" if peek else "claim",
            owner,
            repr(float(lease)),
            str(max(1, round(ttl * 1000))),
            _optional_arg(give_up_after),
        ]
        reply: Sequence[object] = await _call(
            operation, self._claim(keys=[key], args=args)
        )
        return decode(reply[0]), _record(reply[1])

    async def mark(
        self,
        key: str,
        *,
        owner: str,
        ttl: float,
        unmark: bool = False,
        now: float | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Mark *owner*'s claim of *key* as being written (or, *unmark*, not)."""
        args = [
            "" if now is None else repr(now),
            owner,
            str(max(1, round(ttl * 1000))),
            "unmark" if unmark else "mark",
        ]
        operation = "unmark" if unmark else "mark"
        reply: Sequence[object] = await _call(
            operation, self._mark(keys=[key], args=args)
        )
        return decode(reply[0]), _record(reply[1])

    async def settle(
        self,
        key: str,
        *,
        owner: str,
        action: str,
        message_id: int | None = None,
        reason: str = "",
        ttl: float,
        tombstone: float = 0.001,
        now: float | None = None,
        operation: str | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Settle *key*: ``sent``, ``unknown``, ``release`` or ``reconcile``.

        *operation* names the call in errors (by default ``"reconcile"`` or
        ``"settle"``, after *action*).
        """
        if operation is None:
            operation = "reconcile" if action == "reconcile" else "settle"
        args = [
            "" if now is None else repr(now),
            owner,
            action,
            "" if message_id is None else str(message_id),
            reason,
            str(max(1, round(ttl * 1000))),
            str(max(1, round(tombstone * 1000))),
        ]
        reply: Sequence[object] = await _call(
            operation, self._settle(keys=[key], args=args)
        )
        return decode(reply[0]), _record(reply[1])


def _record(value: object) -> dict[str, Any] | None:
    text = decode(value)
    if not text:
        return None
    record: dict[str, Any] = json.loads(text)
    return record
