"""Where callers wait for a rate limiter's slots, and the task that grants them.

The limiter (``_ratelimit``) decides *when* the next request may go (its
`Schedule`); the `Gate` holds the callers that could not go at once, by
priority, and runs one dispatcher task — alive only while someone waits —
that grants them slots as the schedule allows, so a new rate or a pause
takes effect at the next slot. A caller whose deadline comes before its
slot could is refused at once (`DeadlineExceededError`), never let through
late.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ._clock import Clock
from ._errors import DeadlineExceededError
from ._inflight import Flight
from ._limits import Priority
from ._waiters import WaitQueue


__all__ = [
    "Gate",
]


class Schedule(Protocol):
    """What the gate asks its limiter."""

    def delay(self, now: float) -> float:
        """Seconds until the next caller may go (inf: until a request ends)."""

    def grant(self, now: float) -> Flight:
        """Let one request go at *now*."""

    def give_back(self, flight: Flight) -> None:
        """A granted slot its caller never used."""

    def first_slot(self, now: float) -> float:
        """No slot comes before this (a pause)."""

    def lifts_at(self) -> float | None:
        """When an infinite delay may end without a request ending, if ever."""

    def wakes_early(self) -> bool:
        """Whether an answer's headers may bring tokens before the delay ends."""


def late() -> DeadlineExceededError:
    return DeadlineExceededError("the rate limiter")


class Gate:
    """Callers waiting on a `Schedule` (see the module docstring).

    Attributes:
        clock: Where time is read and naps happen.
        last_wait: When a caller last had to wait (evidence the rate limits).
    """

    def __init__(self, schedule: Schedule, clock: Clock) -> None:
        self.clock = clock
        self.last_wait = -1.0
        self._schedule = schedule
        self._queue: WaitQueue[Flight] = WaitQueue()
        self._dispatcher: asyncio.Task[None] | None = None
        # What the dispatcher waits for: a slot at this time, or a release.
        self._sleeping_until = 0.0
        self._release_waiter: asyncio.Task[object] | None = None
        self._released = asyncio.Event()
        # Set when an answer's headers are read: tokens may have come.
        self._evidence = asyncio.Event()

    @property
    def waiting(self) -> bool:
        """Whether callers are queued (a newcomer goes behind them)."""
        return bool(self._queue)

    def released(self) -> None:
        """A request ended: a slot may be free."""
        self._released.set()

    def evidence(self) -> None:
        """An answer's headers were read: tokens may have come."""
        self._evidence.set()

    async def wait(
        self, now: float, deadline: float | None, priority: Priority
    ) -> Flight:
        """Queue until granted; every ``"high"`` caller before any ``"normal"``.

        Raises:
            DeadlineExceededError: No slot before *deadline*.
        """
        if deadline is not None:
            # No slot comes before the pause ends, nor before the one the
            # dispatcher is sleeping towards (it goes to a caller ahead).
            if deadline < max(self._schedule.first_slot(now), self._sleeping_until):
                raise late()
            if self._release_waiter is not None:
                self._released.set()  # wake the dispatcher to watch this deadline
        self.last_wait = now
        future = self._queue.add(deadline, priority)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted just as the caller was cancelled: give the slot back.
                self._schedule.give_back(future.result())
                self._released.set()
            else:
                self._forget(future)
            raise

    async def _dispatch(self) -> None:
        queue, schedule = self._queue, self._schedule
        while queue.peek() is not None:
            now = self.clock.monotonic()
            self.last_wait = now
            delay = schedule.delay(now)
            if delay == float("inf"):
                await self._wait_for_release(now)
            elif delay > 0:
                # Whoever cannot have a slot before its deadline is refused
                # now, not let through late.
                queue.expire(now + delay, late)
                if queue.peek() is not None:
                    self._sleeping_until = now + delay
                    try:
                        await self._nap(delay)
                    finally:
                        self._sleeping_until = 0.0
            else:
                flight = schedule.grant(now)
                if not queue.grant(flight):  # pragma: no cover - peeked
                    schedule.give_back(flight)

    async def _nap(self, delay: float) -> None:
        """Sleep *delay*, or less if an answer's headers bring tokens sooner."""
        if not self._schedule.wakes_early():
            await self.clock.sleep(delay)
            return
        self._evidence.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(self._evidence.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _wait_for_release(self, now: float) -> None:
        """Wait for a request to end, the schedule to lift, or a deadline."""
        self._released.clear()
        earliest = self._queue.earliest_deadline()
        lifts = self._schedule.lifts_at()
        me = asyncio.current_task()
        self._release_waiter = me
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(self._released.wait())
        ]
        if lifts is not None:
            waits.append(asyncio.ensure_future(self.clock.sleep(max(0.0, lifts - now))))
        try:
            # Deadlines on the event loop's timer, not the clock's sleep:
            # this races a real event (an answer), which a fake clock's
            # instant sleep would lose.
            timeout = None if earliest is None else max(0.0, earliest - now)
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                # The earliest deadline came before any request ended: no
                # slot can reach that waiter in time.
                self._queue.expire(self.clock.monotonic() + 1e-9, late)
        finally:
            for wait in waits:
                wait.cancel()
            # (Only if still ours: a cancelled dispatcher unwinds late.)
            if self._release_waiter is me:
                self._release_waiter = None

    def _forget(self, future: asyncio.Future[Flight]) -> None:
        self._queue.discard(future)
        if not self._queue and self._dispatcher is not None:
            self._dispatcher.cancel()
            self._dispatcher = None
