"""`RedisLimiter`: one account's rate limit, shared by every worker through Redis.

The state lives in one Redis hash per account (the *key*) and only Lua
scripts change it (`_scripts`), so N processes on M machines stay under the
account's limit together, and what one worker learns (a 429) slows and
pauses all of them at once.

Inside a process, callers queue in two lanes (`Priority`: every ``"high"``
caller before any ``"normal"`` one, each lane first come, first served) and
one dispatcher task (alive only while someone waits) asks Redis for send
slots: one script call reserves slots for up to 16 waiters, never more than
a short *horizon* ahead, so a pause or a lower rate decided by another worker
applies within that horizon. The dispatcher sleeps until each slot and lets
the next caller go. High-priority callers that get no slot are registered in
the shared hash, and while any are, the other workers' normal callers get no
new slots: a single send in one worker goes before a campaign in every worker
(after at most the slots already reserved, one horizon).

Redis times and the process's clock differ: every script reply carries
Redis's ``TIME``, and the offset between the two clocks (measured at each
call, to within half a round trip) converts slots to local times and the
client's feedback to Redis times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Literal, cast

import attrs
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .._clock import Clock, SystemClock
from .._errors import ConfigurationError, DeadlineExceededError
from .._limits import Feedback, Permit, Priority, RateLimit, bind_clock
from .._ratelimit import AdaptiveLimiter
from .._waiters import WaitQueue
from ._errors import RedisUnavailableError
from ._scripts import AcquireReply, LimiterParams, LimiterScripts, decode


__all__ = ["REDIS_ERRORS", "RedisLimiter", "SharedRateState"]

logger = logging.getLogger("decisiontelecom_viber")

#: Errors that mean "Redis cannot serve us now": unreachable, timing out,
#: loading, read-only after a failover, out of memory...
REDIS_ERRORS = (RedisError, OSError)

DEFAULT_LIMITER_KEY = "decisiontelecom_viber:limiter"
# Slots reserved by one script call, at most.
_MAX_BATCH = 16
# A dispatcher told to wait asks again after at least this long.
_MIN_RETRY = 0.001
# Share of the account's burst used at once: the rest of the server's bucket
# absorbs the jitter between workers' requests (50 ms at 200/s, burst 20).
_BURST_SHARE = 0.5
# Accepted answers kept for Redis at most (while it is unreachable).
_MAX_PENDING = 1024
# Smoothing of the round trip measured from feedback.
_RTT_WEIGHT = 0.1
# The clock offset is taken from the script call with the shortest round trip
# (it is known to within half of it); a kept measurement counts as this much
# less certain per second of age, so that a clock step is followed.
_OFFSET_AGING = 0.002


class _UseLocal:
    """A waiter's verdict: Redis is down, take a slot from the local limiter."""


_USE_LOCAL = _UseLocal()

# A waiter's verdict: its local grant time, and the Redis time its slot was
# reserved at.
_Grant = tuple[float, float]
# Accepted answers to count in Redis: when they came, and the latest time one
# of them was sent (Redis times).
_Accepted = tuple[list[float], float | None]


def _late() -> DeadlineExceededError:
    return DeadlineExceededError("the shared rate limiter")


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_late())


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
            self._limiter._release(feedback, self._reserved_at)


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


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"RedisLimiter {name} must be a number > 0")
    return float(value)


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
        headroom: float = 0.01,
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
        self._redis = redis
        self._limit = limit
        self._key = key
        self._on_unavailable = on_unavailable
        self._horizon = _check_positive("horizon", horizon)
        self._recheck_interval = _check_positive("recheck_interval", recheck_interval)
        self._params = LimiterParams(
            rate=limit.rate,
            burst=max(1, math.ceil(limit.burst * _BURST_SHARE)),
            adaptive=limit.adaptive,
            initial_rate=limit.initial_rate,
            headroom=float(headroom),
            state_ttl=_check_positive("state_ttl", state_ttl),
        )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._clock_given = clock is not None
        self._scripts = LimiterScripts(redis)
        self._local_limit = local_limit if local_limit is not None else limit
        self._local: AdaptiveLimiter | None = None
        self._queue: WaitQueue[_Grant | _UseLocal] = WaitQueue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._sleeping_until = 0.0
        # Set to cut short the dispatcher's wait for slots (a high-priority
        # caller came: it registers at once).
        self._wake: asyncio.Event | None = None
        # This worker's name in the shared state, and whether its
        # high-priority callers are registered there as waiting.
        self._worker = secrets.token_hex(8)
        self._registered = False
        self._reports: set[asyncio.Task[None]] = set()
        # 429s this worker has drawn: slots reserved before the latest one
        # are not used (the shared state is about to pause everyone).
        self._refusals = 0
        self._flusher: asyncio.Task[None] | None = None
        self._offset: float | None = None  # Redis time minus local time
        # The round trip of the call that measured the offset, and when.
        self._offset_rtt = 0.0
        self._offset_at = 0.0
        self._rtt = 0.0
        # When accepted answers came (Redis time), not yet counted in Redis,
        # and the latest time one of their requests was sent.
        self._pending_accepted: list[float] = []
        self._pending_acked: float | None = None
        if limit.rate is None:
            self._rate = limit.initial_rate
        elif limit.adaptive:
            self._rate = limit.rate * (1 - headroom)
        else:
            self._rate = float(limit.rate)
        self._estimate = limit.rate
        self._down_since: float | None = None
        self._retry_at = 0.0

    def __repr__(self) -> str:
        return f"<RedisLimiter key={self._key!r} rate={self._rate!r}>"

    @property
    def key(self) -> str:
        """The Redis key of the shared state."""
        return self._key

    @property
    def current_rate(self) -> float | None:
        """The shared rate as last seen (the local one while Redis is down)."""
        if self._down_since is not None and self._local is not None:
            return self._local.current_rate
        return self._rate

    @property
    def estimated_limit(self) -> float | None:
        """The account's limit as last measured (or configured), if known."""
        return self._estimate

    @property
    def redis_available(self) -> bool:
        """False from a failed Redis call until a call succeeds again."""
        return self._down_since is None

    async def shared_state(self) -> SharedRateState | None:
        """Read the shared state from Redis (None before the first use).

        Raises:
            RedisUnavailableError: Redis could not be reached.
        """
        try:
            raw = await cast(
                "Awaitable[dict[Any, Any]]", self._redis.hgetall(self._key)
            )
        except REDIS_ERRORS as error:
            raise RedisUnavailableError("rate limit state", error) from error
        fields = {decode(name): decode(value) for name, value in raw.items()}
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
        try:
            await self._redis.delete(self._key)
        except REDIS_ERRORS as error:
            raise RedisUnavailableError("rate limit reset", error) from error

    # -- the Limiter protocol ---------------------------------------------------

    def bind(self, clock: Clock) -> None:
        """Use the client's *clock* (see `Limiter.bind`)."""
        if bind_clock(self._clock, self._clock_given, clock, "RedisLimiter"):
            self._clock = clock
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
        clock = self._clock
        start = clock.monotonic()
        if deadline is not None and deadline < max(start, self._sleeping_until):
            # Not even the slot the dispatcher waits for (a caller's ahead).
            raise _late()
        if self._down_since is not None and start < self._retry_at:
            return await self._acquire_locally(start, deadline, priority)
        future = self._queue.add(deadline, priority)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        elif priority == "high" and self._wake is not None:
            self._wake.set()  # to be registered now, not when the wait ends
        expiry = None
        if deadline is not None:
            # Also a bound in real time: a stalled Redis (a failover's CLIENT
            # PAUSE) holds the dispatcher's script call. (Not wait_for: up to
            # Python 3.11 it lets a grant win over the caller's cancellation.)
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, deadline - start), _expire, future
            )
        try:
            verdict = await future
        except asyncio.CancelledError:
            self._queue.discard(future)
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
        if isinstance(verdict, _UseLocal):
            return await self._acquire_locally(start, deadline, priority)
        granted_at, reserved_at = verdict
        return _RedisPermit(self, max(0.0, granted_at - start), reserved_at=reserved_at)

    def _release(self, feedback: Feedback, reserved_at: float | None) -> None:
        """Account for an answer: count it, or share a 429 with every worker."""
        if feedback.status is not None:
            rtt = feedback.received_at - feedback.sent_at
            self._rtt = (
                rtt if not self._rtt else self._rtt + _RTT_WEIGHT * (rtt - self._rtt)
            )
        if feedback.rate_limited:
            self._refusals += 1
            self._spawn_report(feedback, reserved_at)
        elif feedback.status is not None:
            # Any answer but a 429 used one of the server's tokens. Counted in
            # Redis at once (answers of one loop turn together), so that a 429
            # seen by another worker measures the server's rate with it: with
            # the time it came, which tells the measurement it belongs to.
            offset = self._offset or 0.0
            pending = self._pending_accepted
            pending.append(feedback.received_at + offset)
            if len(pending) > _MAX_PENDING:  # Redis has been unreachable long
                del pending[: len(pending) - _MAX_PENDING]
            sent = feedback.sent_at + offset
            if self._pending_acked is None or sent > self._pending_acked:
                self._pending_acked = sent
            if self._flusher is None or self._flusher.done():
                with contextlib.suppress(RuntimeError):  # no loop: counted later
                    self._flusher = asyncio.get_running_loop().create_task(
                        self._flush_accepted()
                    )

    # -- closing ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Flush what this worker has to tell Redis, and stop its tasks.

        Call it after the clients using the limiter are closed. It does not
        close the Redis client.
        """
        pending = [*self._reports, *([self._flusher] if self._flusher else [])]
        if pending:
            await asyncio.wait(pending)
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None and not dispatcher.done():
            dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)
        self._queue.cancel_all()
        if (self._pending_accepted or self._registered) and self._down_since is None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._call_acquire(want=0)

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

    def _take_accepted(self) -> _Accepted:
        taken = (self._pending_accepted, self._pending_acked)
        self._pending_accepted, self._pending_acked = [], None
        return taken

    def _give_back_accepted(self, taken: _Accepted) -> None:
        """Accepted answers a failed call did not count: with the next call."""
        accepted, acked = taken
        self._pending_accepted[:0] = accepted
        if acked is not None and (
            self._pending_acked is None or acked > self._pending_acked
        ):
            self._pending_acked = acked

    async def _flush_accepted(self) -> None:
        while self._pending_accepted and self._down_since is None:
            taken = self._take_accepted()
            try:
                await self._scripts.flush(
                    self._key,
                    self._params,
                    accepted=taken[0],
                    acked=taken[1],
                    rtt=self._rtt,
                )
            except REDIS_ERRORS:
                self._give_back_accepted(taken)  # sent with the next call
                return

    async def _call_acquire(self, want: int, high: int = 0) -> AcquireReply:
        # Taken now: releases during the call are counted with the next one.
        accepted = self._take_accepted()
        before = self._clock.monotonic()
        try:
            reply = await self._scripts.acquire(
                self._key,
                self._params,
                want=want,
                horizon=self._horizon,
                worker=self._worker,
                high=high,
                accepted=accepted[0],
                acked=accepted[1],
                rtt=self._rtt,
            )
        except BaseException:
            self._give_back_accepted(accepted)
            raise
        after = self._clock.monotonic()
        self._measure_offset(reply.now, before, after)
        self._registered = reply.registered
        self._rate = reply.rate
        self._estimate = reply.estimate
        self._on_redis_back()
        return reply

    def _measure_offset(self, redis_now: float, before: float, after: float) -> None:
        """Keep the clock offset of the call with the shortest round trip.

        A call that waited (a busy loop, a busy Redis) knows the offset only
        to within half its round trip: slots converted with it would bunch
        up against other workers' slots.
        """
        rtt = after - before
        aged = self._offset_rtt + _OFFSET_AGING * (after - self._offset_at)
        if self._offset is None or rtt <= aged:
            self._offset = redis_now - (before + after) / 2
            self._offset_rtt = rtt
            self._offset_at = after

    async def _dispatch(self) -> None:
        queue = self._queue
        clock = self._clock
        try:
            while True:
                if queue.peek() is None:
                    if not self._registered:
                        return
                    # Nobody waits any more: no high-priority caller here to
                    # hold the other workers back for.
                    want = high = 0
                else:
                    want = min(queue.live(), _MAX_BATCH)
                    high = min(queue.live_high(), want)
                if self._reports:
                    # 429s of this worker reach Redis before it sends more.
                    await asyncio.wait(list(self._reports))
                # Taken before the call: a 429 drawn while it is on its way
                # came after Redis reserved the slots.
                refusals = self._refusals
                try:
                    reply = await self._call_acquire(want, high)
                except REDIS_ERRORS as error:
                    self._on_redis_down(error)
                    return
                if not want:
                    continue
                if not reply.slots:
                    wait = max(reply.retry_in, _MIN_RETRY)
                    queue.expire(clock.monotonic() + wait, _late)
                    # A high-priority caller arriving meanwhile is registered
                    # at once, unless this worker's already are.
                    await self._sleep(wait, wakeable=not reply.registered)
                    continue
                offset = self._offset or 0.0
                for slot in reply.slots:
                    delay = slot - offset - clock.monotonic()
                    if delay > 0:
                        # Whoever cannot have this slot before its deadline
                        # is refused now, not let through late.
                        queue.expire(clock.monotonic() + delay, _late)
                        if queue.peek() is None:
                            break  # the slots go unused
                        await self._sleep(delay)
                    if self._refusals != refusals:
                        # A 429 came meanwhile: the server's bucket is empty,
                        # and the slots were reserved before Redis knew.
                        break
                    if not queue.grant((clock.monotonic(), reply.now)):
                        break  # the slot goes unused
        except Exception as error:
            logger.exception("the shared rate limiter failed")
            failure = error
            queue.fail_all(lambda: failure)

    async def _sleep(self, seconds: float, *, wakeable: bool = False) -> None:
        """The dispatcher's wait, known to callers arriving meanwhile.

        *wakeable*: a high-priority caller arriving cuts it short.
        """
        self._sleeping_until = self._clock.monotonic() + seconds
        try:
            if not wakeable:
                await self._clock.sleep(seconds)
                return
            if self._wake is None:
                self._wake = asyncio.Event()
            wake = self._wake
            wake.clear()
            sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
            waker = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait(
                    (sleeper, waker), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                sleeper.cancel()
                waker.cancel()
                wake.clear()
        finally:
            self._sleeping_until = 0.0

    def _on_redis_down(self, error: BaseException) -> None:
        now = self._clock.monotonic()
        if self._down_since is None:
            self._down_since = now
            if self._on_unavailable == "local":
                logger.warning(
                    "Redis is unavailable for the shared rate limit %r (%s: %s); "
                    "limiting this worker locally until it is back",
                    self._key,
                    type(error).__name__,
                    error,
                )
            else:
                logger.warning(
                    "Redis is unavailable for the shared rate limit %r (%s: %s); "
                    "failing closed: nothing is sent until it is back",
                    self._key,
                    type(error).__name__,
                    error,
                )
        if self._on_unavailable == "local":
            if self._local is None:
                self._local = AdaptiveLimiter(self._local_limit, self._clock)
            self._retry_at = now + self._recheck_interval
            self._queue.resolve_all(_USE_LOCAL)
        else:

            def unavailable() -> BaseException:
                # One exception per waiter: each is raised in its own task.
                failure = RedisUnavailableError("rate limit", error)
                failure.__cause__ = error
                return failure

            self._queue.fail_all(unavailable)

    def _on_redis_back(self) -> None:
        if self._down_since is not None:
            logger.info(
                "Redis is available again for the shared rate limit %r after %.1f s",
                self._key,
                self._clock.monotonic() - self._down_since,
            )
            self._down_since = None

    def _spawn_report(self, feedback: Feedback, reserved_at: float | None) -> None:
        accepted = self._take_accepted()
        try:
            task = asyncio.get_running_loop().create_task(
                self._report(feedback, reserved_at, accepted)
            )
        except RuntimeError:  # pragma: no cover - release outside an event loop
            self._give_back_accepted(accepted)
            return
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report(
        self, feedback: Feedback, reserved_at: float | None, accepted: _Accepted
    ) -> None:
        offset = self._offset
        if offset is None:  # pragma: no cover - a report follows an acquire
            return
        try:
            reply = await self._scripts.report(
                self._key,
                self._params,
                sent_at=feedback.sent_at + offset,
                received_at=feedback.received_at + offset,
                retry_after=feedback.retry_after,
                max_pause=self._limit.max_pause,
                reserved_at=reserved_at,
                reset=feedback.headers.reset if feedback.headers else None,
                accepted=accepted[0],
                acked=accepted[1],
                rtt=self._rtt,
            )
        except REDIS_ERRORS as error:
            self._give_back_accepted(accepted)
            logger.debug("could not report a 429 to Redis: %s", error)
            return
        except Exception:
            logger.exception("reporting a 429 to Redis failed")
            return
        self._rate = reply.rate
        self._estimate = reply.estimate
