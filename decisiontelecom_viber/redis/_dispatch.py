"""The waiting inside one worker of `RedisLimiter`: two lanes and one dispatcher.

Callers queue in two lanes (`Priority`: every ``"high"`` caller before any
``"normal"`` one, each lane first come, first served) and one dispatcher
task (alive only while someone waits) asks Redis for send slots: one script
call reserves slots for up to 16 waiters, never more than a short *horizon*
ahead, so a pause or a lower rate decided by another worker applies within
that horizon. The dispatcher sleeps until each slot and lets the next caller
go. High-priority callers that get no slot are registered in the shared
hash, and while any are, the other workers' normal callers get no new slots.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .._clock import Clock
from .._errors import DeadlineExceededError
from .._limits import Priority
from .._waiters import WaitQueue
from ._errors import RedisUnavailableError
from ._link import RedisLink


__all__ = ["USE_LOCAL", "Dispatcher", "UseLocal", "expire", "late"]

logger = logging.getLogger("decisiontelecom_viber")

# Slots reserved by one script call, at most.
_MAX_BATCH = 16
# A dispatcher told to wait asks again after at least this long.
_MIN_RETRY = 0.001


class UseLocal:
    """A waiter's verdict: Redis is down, take a slot from the local limiter."""


USE_LOCAL = UseLocal()

# A waiter's verdict: its local grant time, and the Redis time its slot was
# reserved at.
_Grant = tuple[float, float]


def late() -> DeadlineExceededError:
    """The error of a caller whose deadline comes before its slot."""
    return DeadlineExceededError("the shared rate limiter")


def expire(future: asyncio.Future[Any]) -> None:
    """Fail a waiter at its deadline, unless it has its verdict already."""
    if not future.done():
        future.set_exception(late())


class Dispatcher:
    """The lanes of one worker, and the task that grants their slots.

    Args:
        link: The worker's side of the shared state.
        clock: The process's clock (`RedisLimiter.bind` may replace it).
        on_down: Told when a call finds Redis unavailable (the dispatcher
            then stops; the callback settles the waiters).
    """

    __slots__ = (
        "_link",
        "_on_down",
        "_task",
        "_wake",
        "clock",
        "queue",
        "sleeping_until",
    )

    def __init__(
        self,
        link: RedisLink,
        clock: Clock,
        on_down: Callable[[RedisUnavailableError], None],
    ) -> None:
        self._link = link
        self._on_down = on_down
        self.clock = clock
        self.queue: WaitQueue[_Grant | UseLocal] = WaitQueue()
        self._task: asyncio.Task[None] | None = None
        # The local time until which the dispatcher sleeps for a slot (0
        # when it does not): callers arriving meanwhile come after it.
        self.sleeping_until = 0.0
        # Set to cut short the dispatcher's wait for slots (a high-priority
        # caller came: it registers at once).
        self._wake: asyncio.Event | None = None

    def enqueue(
        self, deadline: float | None, priority: Priority
    ) -> asyncio.Future[_Grant | UseLocal]:
        """Queue a caller; its future resolves to its verdict."""
        future = self.queue.add(deadline, priority)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._dispatch())
        elif priority == "high" and self._wake is not None:
            self._wake.set()  # to be registered now, not when the wait ends
        return future

    async def stop(self) -> None:
        """Stop the dispatcher; cancel every waiter."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.queue.cancel_all()

    async def _dispatch(self) -> None:
        queue = self.queue
        link = self._link
        try:
            while True:
                if queue.peek() is None:
                    if not link.registered:
                        return
                    # Nobody waits any more: no high-priority caller here to
                    # hold the other workers back for.
                    want = high = 0
                else:
                    want = min(queue.live(), _MAX_BATCH)
                    high = min(queue.live_high(), want)
                if link.reports:
                    # 429s of this worker reach Redis before it sends more.
                    await asyncio.wait(list(link.reports))
                # Taken before the call: a 429 drawn while it is on its way
                # came after Redis reserved the slots.
                refusals = link.refusals
                try:
                    reply = await link.acquire(want, high)
                except RedisUnavailableError as error:
                    self._on_down(error)
                    return
                if not want:
                    continue
                if not reply.slots:
                    wait = max(reply.retry_in, _MIN_RETRY)
                    queue.expire(self.clock.monotonic() + wait, late)
                    # A high-priority caller arriving meanwhile is registered
                    # at once, unless this worker's already are.
                    await self._sleep(wait, wakeable=not reply.registered)
                    continue
                offset = link.offset
                for slot in reply.slots:
                    delay = slot - offset - self.clock.monotonic()
                    if delay > 0:
                        # Whoever cannot have this slot before its deadline
                        # is refused now, not let through late.
                        queue.expire(self.clock.monotonic() + delay, late)
                        if queue.peek() is None:
                            break  # the slots go unused
                        await self._sleep(delay)
                    if link.refusals != refusals:
                        # A 429 came meanwhile: the server's bucket is empty,
                        # and the slots were reserved before Redis knew.
                        break
                    if not queue.grant((self.clock.monotonic(), reply.now)):
                        break  # the slot goes unused
        except Exception as error:
            logger.exception("the shared rate limiter failed")
            failure = error
            queue.fail_all(lambda: failure)

    async def _sleep(self, seconds: float, *, wakeable: bool = False) -> None:
        """The dispatcher's wait, known to callers arriving meanwhile.

        *wakeable*: a high-priority caller arriving cuts it short.
        """
        clock = self.clock
        self.sleeping_until = clock.monotonic() + seconds
        try:
            if not wakeable:
                await clock.sleep(seconds)
                return
            if self._wake is None:
                self._wake = asyncio.Event()
            wake = self._wake
            wake.clear()
            sleeper = asyncio.ensure_future(clock.sleep(seconds))
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
            self.sleeping_until = 0.0
