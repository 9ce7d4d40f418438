"""The queue of callers waiting for a rate limiter's slot, with their deadlines.

Both limiters (`AdaptiveLimiter`, and the Redis one) grant slots to waiting
callers in order through one dispatcher task; this is the queue they share.
A waiter whose deadline comes before the next slot could be granted is
failed at once with `DeadlineExceededError` (nothing was sent), instead of
being let through too late. Callers wait in two lanes (`Priority`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Callable
from typing import Generic, TypeVar

from ._limits import Priority


__all__ = [
    "WaitQueue",
]

Grant = TypeVar("Grant")


class Waiter(Generic[Grant]):
    """One caller waiting: its future and its deadline (None: no deadline)."""

    __slots__ = ("deadline", "future")

    def __init__(self, future: asyncio.Future[Grant], deadline: float | None) -> None:
        self.future = future
        self.deadline = deadline


class WaitQueue(Generic[Grant]):
    """Waiting callers in the order they are served.

    Two lanes: every ``"high"`` caller is served before any ``"normal"``
    one, and callers of one lane first come, first served. (A single send
    from a request handler is never queued behind a campaign's requests.)
    """

    __slots__ = ("_high", "_normal")

    def __init__(self) -> None:
        self._high: collections.deque[Waiter[Grant]] = collections.deque()
        self._normal: collections.deque[Waiter[Grant]] = collections.deque()

    def __len__(self) -> int:
        return len(self._high) + len(self._normal)

    def __bool__(self) -> bool:
        return bool(self._high) or bool(self._normal)

    def _lanes(self) -> tuple[collections.deque[Waiter[Grant]], ...]:
        return (self._high, self._normal)

    def add(
        self, deadline: float | None, priority: Priority = "normal"
    ) -> asyncio.Future[Grant]:
        """Queue a caller; return the future its grant will be set on."""
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        lane = self._high if priority == "high" else self._normal
        lane.append(Waiter(future, deadline))
        return future

    def discard(self, future: asyncio.Future[Grant]) -> None:
        """Forget a caller that stopped waiting (it was cancelled)."""
        for lane in self._lanes():
            for waiter in lane:
                if waiter.future is future:
                    with contextlib.suppress(ValueError):
                        lane.remove(waiter)
                    return

    def live(self) -> int:
        """Callers still waiting (not cancelled, not failed)."""
        return sum(
            1 for lane in self._lanes() for waiter in lane if not waiter.future.done()
        )

    def live_high(self) -> int:
        """High-priority callers still waiting."""
        return sum(1 for waiter in self._high if not waiter.future.done())

    def _next_lane(self) -> collections.deque[Waiter[Grant]] | None:
        for lane in self._lanes():
            while lane and lane[0].future.done():
                lane.popleft()
            if lane:
                return lane
        return None

    def peek(self) -> Waiter[Grant] | None:
        """The next caller to serve, or None."""
        lane = self._next_lane()
        return lane[0] if lane else None

    def grant(self, value: Grant) -> bool:
        """Hand *value* to the next caller; False if nobody is waiting."""
        lane = self._next_lane()
        if not lane:
            return False
        lane.popleft().future.set_result(value)
        return True

    def expire(self, next_slot: float, fail: Callable[[], BaseException]) -> None:
        """Fail every caller whose deadline is before *next_slot*.

        The next slot is the earliest any of them can get, so a deadline
        before it can no longer be met.
        """
        if next_slot == -math.inf:
            return
        for lane in self._lanes():
            kept: collections.deque[Waiter[Grant]] = collections.deque()
            for waiter in lane:
                if waiter.future.done():
                    continue
                if waiter.deadline is not None and waiter.deadline < next_slot:
                    waiter.future.set_exception(fail())
                else:
                    kept.append(waiter)
            lane.clear()
            lane.extend(kept)

    def earliest_deadline(self) -> float | None:
        """The nearest deadline among the callers waiting, if any has one."""
        deadlines = [
            waiter.deadline
            for lane in self._lanes()
            for waiter in lane
            if waiter.deadline is not None and not waiter.future.done()
        ]
        return min(deadlines) if deadlines else None

    def _drain(self) -> list[Waiter[Grant]]:
        waiters = [*self._high, *self._normal]
        self._high.clear()
        self._normal.clear()
        return waiters

    def fail_all(self, make_error: Callable[[], BaseException]) -> None:
        """Fail every caller still waiting (one exception each)."""
        for waiter in self._drain():
            if not waiter.future.done():
                waiter.future.set_exception(make_error())

    def resolve_all(self, value: Grant) -> None:
        """Hand *value* to every caller still waiting."""
        for waiter in self._drain():
            if not waiter.future.done():
                waiter.future.set_result(value)

    def cancel_all(self) -> None:
        """Cancel every caller still waiting."""
        for waiter in self._drain():
            waiter.future.cancel()
