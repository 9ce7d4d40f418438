"""A private event loop in a thread of its own, for sync callers.

`Portal` runs one event loop in a daemon thread and runs coroutines on it
for any number of calling threads. Each call is a task of that loop; the
caller waits on a `concurrent.futures.Future` that the task's end sets, so
that Ctrl-C (a `KeyboardInterrupt` in the waiting thread) can cancel the
task and then wait until it has really ended: what it did on the way out
(an `aclose`, a journal line) is done before the caller goes on.

After a fork only the forking thread exists in the child: `os.register_at_fork`
marks every portal of the parent as abandoned there (its thread and loop
are gone), and its owner builds a new one.

`Handoff` carries a stream of results from the loop to one consuming thread,
with back-pressure: the loop waits when the consumer is that far behind.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import inspect
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from ._errors import ClientClosedError, ConfigurationError


__all__ = [
    "LEFT_BEHIND",
    "End",
    "Handoff",
    "Portal",
    "Returned",
]

T = TypeVar("T")
Item = TypeVar("Item")

_THREAD_NAME = "decisiontelecom-viber"

# Portals of this process, so that a fork can mark them abandoned in the
# child. Objects left behind by a fork are kept (never collected): their
# finalizers would close sockets and loops the parent still uses.
_PORTALS: weakref.WeakSet[Portal] = weakref.WeakSet()
LEFT_BEHIND: list[object] = []


class Portal:
    """One event loop in a daemon thread, started on first use.

    Thread-safe: any thread may `call` and `stop`. Not reentrant: a call from
    the loop's own thread (a callback of a running call) would wait for
    itself, so it raises `ConfigurationError`.
    """

    __slots__ = (
        "__weakref__",
        "_lock",
        "_loop",
        "_pid",
        "_stopped",
        "_tasks",
        "_thread",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._pid = os.getpid()
        # Each running call's task, its `_settle` and the call's coroutine
        # (touched in the loop's thread only).
        self._tasks: dict[
            concurrent.futures.Future[Any],
            tuple[
                asyncio.Task[None], Coroutine[Any, Any, None], Coroutine[Any, Any, Any]
            ],
        ] = {}
        _PORTALS.add(self)

    @property
    def started(self) -> bool:
        """Whether the thread was started (and not stopped)."""
        return self._thread is not None and not self._stopped

    @property
    def in_loop_thread(self) -> bool:
        """Whether the current thread is the portal's own."""
        return self._thread is not None and threading.current_thread() is self._thread

    def call(
        self,
        make: Callable[[], Coroutine[Any, Any, T]],
        *,
        on_interrupt: Callable[[KeyboardInterrupt, BaseException], None] | None = None,
    ) -> T:
        """Run ``make()`` on the loop and wait for its result.

        A `KeyboardInterrupt` while waiting cancels the task and waits for it
        to end (a second one stops waiting); *on_interrupt* is then called
        with the interrupt and the task's own ending (its result wrapped in
        `Returned`, or its exception) to explain it, and the interrupt is
        raised again.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            self._submit_into(make, future)
            return future.result()
        except KeyboardInterrupt as interrupt:
            if future.cancel():
                ending: BaseException = asyncio.CancelledError()  # (never started)
            else:
                ending = self._cancel_and_wait(future)
            if on_interrupt is not None:
                on_interrupt(interrupt, ending)
            raise

    def submit(
        self, make: Callable[[], Coroutine[Any, Any, T]]
    ) -> concurrent.futures.Future[T]:
        """Start ``make()`` as a task of the loop; its future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._submit_into(make, future)
        return future

    def _submit_into(
        self,
        make: Callable[[], Coroutine[Any, Any, T]],
        future: concurrent.futures.Future[T],
    ) -> None:
        if self.in_loop_thread:
            raise ConfigurationError(
                "a ViberClient was called from its own event loop's thread (a "
                "callback such as on_progress or on_write): the call would wait "
                "for itself; keep callbacks short and make calls elsewhere"
            )
        with self._lock:
            if self._stopped:
                raise ClientClosedError("this ViberClient is closed; create a new one")
            loop = self._loop if self._loop is not None else self._start()
            # (Under the lock: once `stop` has it, the loop takes no more.)
            loop.call_soon_threadsafe(self._start_task, loop, make, future)

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started if need be."""
        with self._lock:
            if self._stopped:
                raise ClientClosedError("this ViberClient is closed; create a new one")
            return self._loop if self._loop is not None else self._start()

    def cancel(self, future: concurrent.futures.Future[Any]) -> None:
        """Cancel the task of *future* (a call of this portal)."""
        self.call_soon(lambda: self._cancel_task_of(future))

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run *callback* in the loop's thread (if it is running)."""
        with self._lock:
            loop = None if self._stopped else self._loop
        if loop is not None:
            loop.call_soon_threadsafe(callback)

    def stop(self) -> None:
        """Stop the loop (cancelling what still runs) and join the thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join()

    def stopped_itself(self) -> None:
        """The loop stopped: take no more calls (they would never run)."""
        with self._lock:
            self._stopped = True

    def abandon(self) -> None:
        """In a forked child: forget the parent's thread and loop (both dead here)."""
        self._lock = threading.Lock()  # (it may have been held at the fork)
        if self._loop is not None:
            LEFT_BEHIND.append(self._loop)
        self._loop = None
        self._thread = None
        self._stopped = True
        self._pid = os.getpid()

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=_serve, args=(loop, self), name=_THREAD_NAME, daemon=True
        )
        try:
            thread.start()
        except BaseException:
            loop.close()  # (e.g. no new thread at interpreter shutdown)
            raise
        self._loop, self._thread = loop, thread
        return loop

    def _cancel_and_wait(self, future: concurrent.futures.Future[T]) -> BaseException:
        self.cancel(future)
        try:
            concurrent.futures.wait([future])
        except KeyboardInterrupt as again:
            return again
        if future.cancelled():
            return asyncio.CancelledError()
        error = future.exception()
        return error if error is not None else Returned(future.result())

    def _start_task(
        self,
        loop: asyncio.AbstractEventLoop,
        make: Callable[[], Coroutine[Any, Any, T]],
        future: concurrent.futures.Future[T],
    ) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            coroutine = make()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            future.set_exception(error)
            return
        settle = self._settle(coroutine, future)
        self._tasks[future] = (loop.create_task(settle), settle, coroutine)

    def _cancel_task_of(self, future: concurrent.futures.Future[Any]) -> None:
        entry = self._tasks.get(future)
        if entry is None:
            return
        task, settle, coroutine = entry
        task.cancel()
        if inspect.getcoroutinestate(settle) == inspect.CORO_CREATED:
            # Cancelled before its first step: `_settle` will never run.
            del self._tasks[future]
            coroutine.close()  # (never started: no "never awaited" warning)
            future.set_exception(asyncio.CancelledError())

    async def _settle(
        self, coroutine: Coroutine[Any, Any, T], future: concurrent.futures.Future[T]
    ) -> None:
        # The caller's future is set by the task itself, not by a done
        # callback: one pass of the loop less per call.
        try:
            result = await coroutine
        except asyncio.CancelledError:
            future.set_exception(asyncio.CancelledError())
            raise
        except BaseException as error:  # noqa: BLE001 - the caller's to raise
            # (SystemExit too: raised in the caller's thread, where it means
            # something; here it would stop every thread's calls.)
            future.set_exception(error)
        else:
            future.set_result(result)
        finally:
            self._tasks.pop(future, None)


class Returned(Exception):
    """A call's task ended with a result despite the interrupt."""

    def __init__(self, value: object) -> None:
        super().__init__("the call had already ended")
        self.value = value


def _serve(loop: asyncio.AbstractEventLoop, portal: Portal) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        portal.stopped_itself()  # (if a callback's SystemExit stopped it)
        try:
            _finish(loop)
        finally:
            loop.close()


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """What `asyncio.run` does at the end: cancel and await what is left.

    Calls submitted just before the stop are started first (one pass of the
    loop), so that each one ends, cancelled, instead of waiting forever.
    """
    for _ in range(2):  # (created, then their first step: inside `_settle`)
        loop.run_until_complete(asyncio.sleep(0))
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())


def forked() -> None:
    """In a forked child: abandon every portal of the parent."""
    for portal in list(_PORTALS):
        portal.abandon()


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=forked)


class End:
    """The end of a `Handoff` (with the error that ended it, if any)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Handoff(Generic[Item]):
    """Items from the loop to one consuming thread, at most *limit* waiting.

    The loop side `put`s (waiting while the consumer is *limit* behind) and
    `end`s; the consumer `get`s, which returns an `End` after the last item.
    The consumer is woken once per pass of the loop, not once per item: the
    answers read in one pass come as one batch, for one thread switch.
    """

    __slots__ = (
        "_blocked",
        "_cond",
        "_end",
        "_items",
        "_limit",
        "_loop",
        "_room",
        "_wake_due",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._items: collections.deque[Item] = collections.deque()
        self._cond = threading.Condition()
        self._room = asyncio.Event()
        self._blocked = False
        self._wake_due = False
        self._end: End | None = None

    @property
    def waiting(self) -> int:
        """Items handed over and not yet taken."""
        return len(self._items)

    async def put(self, item: Item) -> None:
        """Hand *item* over (in the loop); wait while the consumer is behind."""
        with self._cond:
            self._items.append(item)
            if not self._wake_due:
                self._wake_due = True
                self._loop.call_soon(self._wake)  # (after this pass's others)
            full = len(self._items) >= self._limit
            if full:
                self._room.clear()
                self._blocked = True
        if full:
            await self._room.wait()

    def _wake(self) -> None:
        with self._cond:
            self._wake_due = False
            self._cond.notify()

    def end(self, error: BaseException | None = None) -> None:
        """No more items (in the loop): *error* ended them, if given."""
        with self._cond:
            self._end = End(error)
            self._cond.notify_all()

    def get(self) -> Item | End:
        """The next item (in the consumer's thread), or the `End`."""
        with self._cond:
            while not self._items:
                if self._end is not None:
                    return self._end
                self._cond.wait()
            item = self._items.popleft()
            if self._blocked and len(self._items) <= self._limit // 2:
                self._unblock()
        return item

    def _unblock(self) -> None:
        self._blocked = False
        with contextlib.suppress(RuntimeError):  # (its loop is closed)
            self._loop.call_soon_threadsafe(self._room.set)

    def drain(self) -> list[Item]:
        """Take every item waiting (in the consumer's thread)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            if self._blocked:
                self._unblock()
        return items
