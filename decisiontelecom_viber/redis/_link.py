"""One worker's side of the shared rate state: its script calls, and what they carry.

`RedisLimiter` (``_limiter``) keeps, per worker, what it must tell Redis and
what Redis last told it:

- the accepted answers not counted in Redis yet (sent along with the next
  call, or flushed at once), and the 429s, each reported in a task of its
  own so that every worker learns of it;
- the round trip, smoothed, and the offset between Redis's clock and the
  process's (measured at each call, to within half a round trip), which
  converts slots to local times and feedback to Redis times;
- the shared rate and estimate as last seen, and whether Redis is down.

Every call goes through `LimiterScripts` (``_scripts``): a Redis that cannot
serve it raises `RedisUnavailableError`, which the limiter turns into a
fallback or an error for its callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .._clock import Clock
from .._limits import Feedback
from ._errors import RedisUnavailableError, redis_cause
from ._scripts import AcquireReply, LimiterParams, LimiterScripts


__all__ = ["RedisLink"]

logger = logging.getLogger("decisiontelecom_viber")

# Accepted answers kept for Redis at most (while it is unreachable).
_MAX_PENDING = 1024
# Smoothing of the round trip measured from feedback.
_RTT_WEIGHT = 0.1
# The clock offset is taken from the script call with the shortest round trip
# (it is known to within half of it); a kept measurement counts as this much
# less certain per second of age, so that a clock step is followed.
_OFFSET_AGING = 0.002

# Accepted answers to count in Redis: when they came, and the latest time one
# of them was sent (Redis times).
_Accepted = tuple[list[float], float | None]


class RedisLink:
    """What one worker tells the shared state, and what it last heard from it.

    Args:
        scripts: The limiter's Redis calls.
        key: The shared state's key.
        params: The configuration every call carries.
        horizon: Seconds ahead slots may be reserved.
        max_pause: Longest pause a 429 may impose.
        worker: This worker's name in the shared state.
        clock: The process's clock (`RedisLimiter.bind` may replace it).
        rate: The shared rate assumed before the first call.
        estimate: The limit assumed before the first call.
    """

    __slots__ = (
        "_flusher",
        "_horizon",
        "_key",
        "_max_pause",
        "_offset",
        "_offset_at",
        "_offset_rtt",
        "_params",
        "_pending_accepted",
        "_pending_acked",
        "_rtt",
        "_scripts",
        "_worker",
        "clock",
        "down_since",
        "estimate",
        "rate",
        "refusals",
        "registered",
        "reports",
    )

    def __init__(
        self,
        scripts: LimiterScripts,
        key: str,
        params: LimiterParams,
        *,
        horizon: float,
        max_pause: float,
        worker: str,
        clock: Clock,
        rate: float,
        estimate: float | None,
    ) -> None:
        self._scripts = scripts
        self._key = key
        self._params = params
        self._horizon = horizon
        self._max_pause = max_pause
        self._worker = worker
        self.clock = clock
        self.rate = rate
        self.estimate = estimate
        # Whether this worker's high-priority callers are registered in the
        # shared state as waiting.
        self.registered = False
        # 429s this worker has drawn: slots reserved before the latest one
        # are not used (the shared state is about to pause everyone).
        self.refusals = 0
        self.reports: set[asyncio.Task[None]] = set()
        # Local monotonic time since which Redis is unavailable, if it is.
        self.down_since: float | None = None
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

    @property
    def offset(self) -> float:
        """Redis time minus local time (0 before the first call)."""
        return self._offset or 0.0

    # -- calls ------------------------------------------------------------------

    async def acquire(self, want: int, high: int = 0) -> AcquireReply:
        """Ask for up to *want* slots (*high* of them for high-priority callers).

        Raises:
            RedisUnavailableError: Redis could not serve the call.
        """
        # Taken now: releases during the call are counted with the next one.
        accepted = self._take_accepted()
        before = self.clock.monotonic()
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
        after = self.clock.monotonic()
        self._measure_offset(reply.now, before, after)
        self.registered = reply.registered
        self.rate = reply.rate
        self.estimate = reply.estimate
        self._on_redis_back()
        return reply

    def release(self, feedback: Feedback, reserved_at: float | None) -> None:
        """Account for an answer: count it, or share a 429 with every worker."""
        if feedback.status is not None:
            rtt = feedback.received_at - feedback.sent_at
            self._rtt = (
                rtt if not self._rtt else self._rtt + _RTT_WEIGHT * (rtt - self._rtt)
            )
        if feedback.rate_limited:
            self.refusals += 1
            self._spawn_report(feedback, reserved_at)
        elif feedback.status is not None:
            # Any answer but a 429 used one of the server's tokens. Counted in
            # Redis at once (answers of one loop turn together), so that a 429
            # seen by another worker measures the server's rate with it: with
            # the time it came, which tells the measurement it belongs to.
            offset = self.offset
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

    async def close(self) -> None:
        """Wait for the reports and counts on their way."""
        pending = [*self.reports, *([self._flusher] if self._flusher else [])]
        if pending:
            await asyncio.wait(pending)

    async def farewell(self) -> None:
        """Tell Redis what is left (answers, a registration); best effort."""
        if (self._pending_accepted or self.registered) and self.down_since is None:
            with contextlib.suppress(RedisUnavailableError):
                await self.acquire(want=0)

    # -- inside -----------------------------------------------------------------

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
        while self._pending_accepted and self.down_since is None:
            taken = self._take_accepted()
            try:
                await self._scripts.flush(
                    self._key,
                    self._params,
                    accepted=taken[0],
                    acked=taken[1],
                    rtt=self._rtt,
                )
            except RedisUnavailableError:
                self._give_back_accepted(taken)  # sent with the next call
                return

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

    def _on_redis_back(self) -> None:
        if self.down_since is not None:
            logger.info(
                "Redis is available again for the shared rate limit %r after %.1f s",
                self._key,
                self.clock.monotonic() - self.down_since,
            )
            self.down_since = None

    def _spawn_report(self, feedback: Feedback, reserved_at: float | None) -> None:
        accepted = self._take_accepted()
        try:
            task = asyncio.get_running_loop().create_task(
                self._report(feedback, reserved_at, accepted)
            )
        except RuntimeError:  # pragma: no cover - release outside an event loop
            self._give_back_accepted(accepted)
            return
        self.reports.add(task)
        task.add_done_callback(self.reports.discard)

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
                max_pause=self._max_pause,
                reserved_at=reserved_at,
                reset=feedback.headers.reset if feedback.headers else None,
                accepted=accepted[0],
                acked=accepted[1],
                rtt=self._rtt,
            )
        except RedisUnavailableError as error:
            self._give_back_accepted(accepted)
            logger.debug("could not report a 429 to Redis: %s", redis_cause(error))
            return
        except Exception:
            logger.exception("reporting a 429 to Redis failed")
            return
        self.rate = reply.rate
        self.estimate = reply.estimate
