"""`RedisLimiter`: one account's rate limit, shared by every worker through Redis.

The state lives in one Redis hash per account (the *key*) and only Lua
scripts change it (``_scripts``, ``lua/*.lua``), so N processes on M
machines stay under the account's limit together, and what one worker
learns (a 429) slows and pauses all of them at once.

Inside a process, callers wait in two lanes for one dispatcher task
(``_dispatch``) that reserves slots through Redis; what the worker tells
Redis and what it last heard (answers, 429s, the clock offset) is kept by
its link (``_link``). Here: the public class, which puts them together, and
the fallback to a local `AdaptiveLimiter` while Redis is unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from types import TracebackType
from typing import Literal

import attrs
from redis.asyncio import Redis

from .._checks import check_positive
from .._clock import Clock, SystemClock
from .._errors import ConfigurationError
from .._limits import Feedback, Permit, Priority, RateLimit, bind_clock
from .._ratecontrol import MARGIN
from .._ratelimit import AdaptiveLimiter
from ._dispatch import USE_LOCAL, Dispatcher, UseLocal, expire, late
from ._errors import RedisUnavailableError, redis_cause, unavailable_again
from ._link import RedisLink
from ._scripts import LimiterParams, LimiterScripts


__all__ = ["RedisLimiter", "SharedRateState"]

logger = logging.getLogger("decisiontelecom_viber")

DEFAULT_LIMITER_KEY = "decisiontelecom_viber:limiter"
# Share of the account's burst used at once: the rest of the server's bucket
# absorbs the jitter between workers' requests (50 ms at 200/s, burst 20).
_BURST_SHARE = 0.5


class _RedisPermit:
    """A slot reserved through Redis, or one of the local limiter's."""

    __slots__ = ("_limiter", "_local", "_released", "_reserved_at", "waited")

    def __init__(
        self,
        limiter: RedisLimiter,
        waited: float,
        *,
        reserved_at: float | None = None,
        local: Permit | None = None,
    ) -> None:
        self._limiter = limiter
        self._reserved_at = reserved_at
        self._local = local
        self._released = False
        self.waited = waited

    def release(self, feedback: Feedback) -> None:
        if self._released:
            return
        self._released = True
        if self._local is not None:
            self._local.release(feedback)
        else:
            self._limiter._link.release(feedback, self._reserved_at)


@attrs.frozen
class SharedRateState:
    """The shared state of one account, as stored in Redis.

    Attributes:
        rate: Requests per second all workers together may send now.
        estimate: The server's limit as measured (or as configured), if known.
        paused_until: Redis unix time until which every worker is paused.
        pauses: Pauses decided so far (fresh 429s).
        refusals: 429s reported by all workers, stale ones included.
    """

    rate: float
    estimate: float | None
    paused_until: float
    pauses: int
    refusals: int


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


class RedisLimiter:
    """A `Limiter` whose limit every process using the same Redis key shares.

    Give every worker of one DecisionTelecom account the same *key* and the
    same *limit*::

        limiter = RedisLimiter(redis, RateLimit(rate=200, burst=20), key="viber:acme")
        client = AsyncViberClient(rate_limit=limiter)

    **Rate.** With ``limit.rate`` set (the account's limit, requests per
    second, and ``limit.burst`` the size of its bucket), all workers together
    send at most ``rate * (1 - headroom)`` (99 % by default): the configured
    rate is a ceiling. They send at most half of ``burst`` at once: the rest
    of the server's bucket absorbs the network jitter between workers, which
    would otherwise make the server refuse requests the limiter let through.
    A 429 pauses every worker (for its ``Retry-After``, if it says; else one
    interval after the slots already granted, ``X-Rate-Limit-Reset`` being
    only an upper bound) with no burst when the pause ends (the server's
    bucket is empty), and, with ``limit.adaptive``, lowers the shared rate by
    a few percent; it climbs back after 1.5 s without a 429, never above the
    configured rate. A worker that draws a 429 drops the slots it holds
    (reserved before Redis knew) and asks again once its 429 is shared.
    With ``adaptive=False`` the rate is exactly
    ``limit.rate``, fixed (429s still pause everyone). A change of rate keeps
    the bucket as full as it was: it never grants a new burst.

    **Priority.** ``acquire(priority="high")`` (single sends) goes before
    every ``"normal"`` caller (bulk sends) of every worker: within a worker
    by its queue, across workers through the shared state.

    **No rate.** With ``limit.rate=None`` the shared rate starts at
    ``limit.initial_rate`` (50/s by default) and doubles every 100 ms (or
    two round trips) while callers wait, once requests sent 100 ms after the
    last doubling have been accepted: a slow server's answers, which bring
    its 429s late to every worker, hold the ramp back. The first 429 halves
    the rate its request was sent at (the rate may have doubled since) and
    holds it (a quarter less at each fresh 429 after) until two
    429s, at least 150 ms apart, measure the server's rate: the accepted
    answers all workers got between the two (stale 429s count too: each
    says the server's bucket was empty). Without a 429 for 300 ms the rate
    grows again, by a quarter a step. From then on the limiter sends 1 %
    below the measurement, believes the limit fell by 3 % when refused at
    or below it, and probes upward after 1.5 s without a 429. Starting from
    a rate rather than TCP-like slow start (as `AdaptiveLimiter` does)
    keeps the shared state to a few numbers: counting requests in flight
    across processes would leak whenever a worker dies.

    **Redis unavailable.** With ``on_unavailable="raise"`` (fail closed, the
    default) a call that cannot reach Redis raises `RedisUnavailableError`
    before anything is sent. With ``"local"`` the worker logs a warning and
    paces itself with a local `AdaptiveLimiter` (*local_limit*, by default
    *limit*), trying Redis again every *recheck_interval* seconds and
    logging when it is back. Each worker alone then allows the whole
    *local_limit*, so several workers may exceed the account's limit until
    their 429s slow them down: give ``local_limit=RateLimit(rate=account_rate
    / workers)`` to avoid that.

    The shared state is one hash at *key*; it expires after *state_ttl*
    seconds without use, and a change of configuration resets it. Yii2
    rate-limit headers are not used (each worker sees only its own answers).

    Args:
        redis: A `redis.asyncio.Redis` client (not closed by the limiter).
            Give it ``socket_timeout``/``socket_connect_timeout`` so that an
            unreachable Redis fails fast.
        limit: The account's limit (`RateLimit`; ``initial_window`` is not
            used).
        key: The Redis key of the shared state: one per account.
        on_unavailable: ``"raise"`` or ``"local"`` (see above).
        local_limit: The local limit while Redis is unavailable.
        headroom: Fraction of a configured or measured rate kept unused.
        horizon: Seconds ahead a worker may reserve send slots.
        recheck_interval: Seconds between tries of an unavailable Redis.
        state_ttl: Seconds the shared state outlives its last use.
        clock: The clock to read time from and wait with; by default the
            clock of the client it is given to (a client refuses a limiter
            bound to another clock).

    Raises:
        ConfigurationError: An invalid setting.
    """

    def __init__(
        self,
        redis: Redis,
        limit: RateLimit | None = None,
        *,
        key: str = DEFAULT_LIMITER_KEY,
        on_unavailable: Literal["raise", "local"] = "raise",
        local_limit: RateLimit | None = None,
        headroom: float = MARGIN,
        horizon: float = 0.02,
        recheck_interval: float = 5.0,
        state_ttl: float = 86400.0,
        clock: Clock | None = None,
    ) -> None:
        limit = limit if limit is not None else RateLimit()
        if not isinstance(limit, RateLimit):
            raise ConfigurationError("RedisLimiter limit must be a RateLimit")
        if on_unavailable not in ("raise", "local"):
            raise ConfigurationError(
                "RedisLimiter on_unavailable must be 'raise' or 'local'"
            )
        if not _is_text(key):
            raise ConfigurationError("RedisLimiter key must be a non-empty string")
        if isinstance(headroom, bool) or not 0 <= headroom < 1:
            raise ConfigurationError("RedisLimiter headroom must be in [0, 1)")
        self._limit = limit
        self._key = key
        self._on_unavailable = on_unavailable
        horizon = check_positive("RedisLimiter horizon", horizon)
        self._recheck_interval = check_positive(
            "RedisLimiter recheck_interval", recheck_interval
        )
        params = LimiterParams(
            rate=limit.rate,
            burst=max(1, math.ceil(limit.burst * _BURST_SHARE)),
            adaptive=limit.adaptive,
            initial_rate=limit.initial_rate,
            headroom=float(headroom),
            state_ttl=check_positive("RedisLimiter state_ttl", state_ttl),
        )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._clock_given = clock is not None
        self._scripts = LimiterScripts(redis)
        self._local_limit = local_limit if local_limit is not None else limit
        self._local: AdaptiveLimiter | None = None
        if limit.rate is None:
            rate = limit.initial_rate
        elif limit.adaptive:
            rate = limit.rate * (1 - headroom)
        else:
            rate = float(limit.rate)
        self._link = RedisLink(
            self._scripts,
            key,
            params,
            horizon=horizon,
            max_pause=limit.max_pause,
            # This worker's name in the shared state.
            worker=secrets.token_hex(8),
            clock=self._clock,
            rate=rate,
            estimate=limit.rate,
        )
        self._dispatcher = Dispatcher(self._link, self._clock, self._on_redis_down)
        # While Redis is down: when to try it again (local monotonic time).
        self._retry_at = 0.0

    def __repr__(self) -> str:
        return f"<RedisLimiter key={self._key!r} rate={self._link.rate!r}>"

    @property
    def key(self) -> str:
        """The Redis key of the shared state."""
        return self._key

    @property
    def current_rate(self) -> float | None:
        """The shared rate as last seen (the local one while Redis is down)."""
        if self._link.down_since is not None and self._local is not None:
            return self._local.current_rate
        return self._link.rate

    @property
    def estimated_limit(self) -> float | None:
        """The account's limit as last measured (or configured), if known."""
        return self._link.estimate

    @property
    def redis_available(self) -> bool:
        """False from a failed Redis call until a call succeeds again."""
        return self._link.down_since is None

    async def shared_state(self) -> SharedRateState | None:
        """Read the shared state from Redis (None before the first use).

        Raises:
            RedisUnavailableError: Redis could not be reached.
        """
        fields = await self._scripts.read_state(self._key)
        if "rate" not in fields:
            return None
        estimate = fields.get("estimate")
        return SharedRateState(
            rate=float(fields["rate"]),
            estimate=float(estimate) if estimate else None,
            paused_until=float(fields.get("paused_until", 0)),
            pauses=int(float(fields.get("pauses", 0))),
            refusals=int(float(fields.get("refusals", 0))),
        )

    async def reset(self) -> None:
        """Forget the shared state (every worker starts afresh).

        Raises:
            RedisUnavailableError: Redis could not be reached.
        """
        await self._scripts.delete(self._key)

    # -- the Limiter protocol ---------------------------------------------------

    def bind(self, clock: Clock) -> None:
        """Use the client's *clock* (see `Limiter.bind`)."""
        if bind_clock(self._clock, self._clock_given, clock, "RedisLimiter"):
            self._clock = self._link.clock = self._dispatcher.clock = clock
            self._clock_given = True

    async def acquire(
        self, deadline: float | None = None, priority: Priority = "normal"
    ) -> Permit:
        """Wait for a send slot, but not past *deadline*; return its permit.

        Every waiting ``"high"`` caller, in any worker, is granted before
        any ``"normal"`` one (but for slots reserved already: one horizon).

        Raises:
            DeadlineExceededError: No slot before *deadline*.
            RedisUnavailableError: Redis is unavailable and the limiter fails
                closed (``on_unavailable="raise"``).
        """
        start = self._clock.monotonic()
        dispatcher = self._dispatcher
        if deadline is not None and deadline < max(start, dispatcher.sleeping_until):
            # Not even the slot the dispatcher waits for (a caller's ahead).
            raise late()
        if self._link.down_since is not None and start < self._retry_at:
            return await self._acquire_locally(start, deadline, priority)
        future = dispatcher.enqueue(deadline, priority)
        expiry = None
        if deadline is not None:
            # Also a bound in real time: a stalled Redis (a failover's CLIENT
            # PAUSE) holds the dispatcher's script call. (Not wait_for: up to
            # Python 3.11 it lets a grant win over the caller's cancellation.)
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, deadline - start), expire, future
            )
        try:
            verdict = await future
        except asyncio.CancelledError:
            dispatcher.queue.discard(future)
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
        if isinstance(verdict, UseLocal):
            return await self._acquire_locally(start, deadline, priority)
        granted_at, reserved_at = verdict
        return _RedisPermit(self, max(0.0, granted_at - start), reserved_at=reserved_at)

    # -- closing ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Flush what this worker has to tell Redis, and stop its tasks.

        Call it after the clients using the limiter are closed. It does not
        close the Redis client.
        """
        await self._link.close()
        await self._dispatcher.stop()
        await self._link.farewell()

    async def __aenter__(self) -> RedisLimiter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- inside -----------------------------------------------------------------

    async def _acquire_locally(
        self, start: float, deadline: float | None, priority: Priority
    ) -> Permit:
        local = self._local
        if local is None:  # pragma: no cover - only set up in "local" mode
            raise RuntimeError("no local limiter")
        # Time spent on a failed Redis call counts as waiting, too.
        before = self._clock.monotonic()
        permit = await local.acquire(deadline, priority)
        return _RedisPermit(
            self, permit.waited + max(0.0, before - start), local=permit
        )

    def _on_redis_down(self, error: RedisUnavailableError) -> None:
        link = self._link
        now = self._clock.monotonic()
        if link.down_since is None:
            link.down_since = now
            cause = redis_cause(error)
            if self._on_unavailable == "local":
                logger.warning(
                    "Redis is unavailable for the shared rate limit %r (%s: %s); "
                    "limiting this worker locally until it is back",
                    self._key,
                    type(cause).__name__,
                    cause,
                )
            else:
                logger.warning(
                    "Redis is unavailable for the shared rate limit %r (%s: %s); "
                    "failing closed: nothing is sent until it is back",
                    self._key,
                    type(cause).__name__,
                    cause,
                )
        if self._on_unavailable == "local":
            if self._local is None:
                self._local = AdaptiveLimiter(self._local_limit, self._clock)
            self._retry_at = now + self._recheck_interval
            self._dispatcher.queue.resolve_all(USE_LOCAL)
        else:
            # One exception per waiter: each is raised in its own task.
            self._dispatcher.queue.fail_all(lambda: unavailable_again(error))
