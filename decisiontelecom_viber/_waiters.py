"""The queue of callers waiting for a rate limiter's slot, with their deadlines.

Both limiters (`AdaptiveLimiter`, and the Redis one) grant slots to waiting
callers in order through one dispatcher task; this is the queue they share.
A waiter whose deadline comes before the next slot could be granted is
failed at once with `DeadlineExceededError` (nothing was sent), instead of
being let through too late.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Callable
from typing import Generic, TypeVar


__all__ = ["WaitQueue", "Waiter"]

Grant = TypeVar("Grant")


class Waiter(Generic[Grant]):
    """One caller waiting: its future and its deadline (None: no deadline)."""

    __slots__ = ("deadline", "future")

    def __init__(self, future: asyncio.Future[Grant], deadline: float | None) -> None:
        self.future = future
        self.deadline = deadline


class WaitQueue(Generic[Grant]):
    """Waiting callers in the order they are served (first come, first served)."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: collections.deque[Waiter[Grant]] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def add(self, deadline: float | None) -> asyncio.Future[Grant]:
        """Queue a caller; return the future its grant will be set on."""
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        self._waiters.append(Waiter(future, deadline))
        return future

    def discard(self, future: asyncio.Future[Grant]) -> None:
        """Forget a caller that stopped waiting (it was cancelled)."""
        for waiter in self._waiters:
            if waiter.future is future:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                return

    def live(self) -> int:
        """Callers still waiting (not cancelled, not failed)."""
        return sum(1 for waiter in self._waiters if not waiter.future.done())

    def _drop_done(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0].future.done():
            waiters.popleft()

    def peek(self) -> Waiter[Grant] | None:
        """The next caller to serve, or None."""
        self._drop_done()
        return self._waiters[0] if self._waiters else None

    def grant(self, value: Grant) -> bool:
        """Hand *value* to the next caller; False if nobody is waiting."""
        self._drop_done()
        if not self._waiters:
            return False
        self._waiters.popleft().future.set_result(value)
        return True

    def expire(self, next_slot: float, fail: Callable[[], BaseException]) -> None:
        """Fail every caller whose deadline is before *next_slot*.

        Callers are served in order and the next slot is the earliest any of
        them can get, so a deadline before it can no longer be met.
        """
        if next_slot == -math.inf:
            return
        kept: collections.deque[Waiter[Grant]] = collections.deque()
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if waiter.deadline is not None and waiter.deadline < next_slot:
                waiter.future.set_exception(fail())
            else:
                kept.append(waiter)
        self._waiters = kept

    def earliest_deadline(self) -> float | None:
        """The nearest deadline among the callers waiting, if any has one."""
        deadlines = [
            waiter.deadline
            for waiter in self._waiters
            if waiter.deadline is not None and not waiter.future.done()
        ]
        return min(deadlines) if deadlines else None

    def fail_all(self, make_error: Callable[[], BaseException]) -> None:
        """Fail every caller still waiting (one exception each)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(make_error())

    def resolve_all(self, value: Grant) -> None:
        """Hand *value* to every caller still waiting."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(value)

    def cancel_all(self) -> None:
        """Cancel every caller still waiting."""
        while self._waiters:
            self._waiters.popleft().future.cancel()
