"""A blocking iterator read in a daemon thread, a few items ahead.

A sync client's bulk input may block (a generator reading a file, a
database, a queue). Read on the event loop, it would hold up every call of
the client. So `ThreadedReader` reads it in a daemon thread of its own
(never joined: an iterator blocked forever must not hold up closing the
client, or the interpreter's exit), at most *ahead* items ahead of the
stream, each handed over as soon as it is read (a trickle is not held back
to fill a batch). Items read but never taken — the stream closed first —
are kept with their indexes (`take_dropped`), for the stream to report as
not sent: nothing is taken from the iterator without a result.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any


__all__ = ["ThreadedReader"]


class ThreadedReader:
    """The items of *iterator*, read in the reader's own thread."""

    __slots__ = (
        "_ahead",
        "_buffer",
        "_closed",
        "_cond",
        "_done",
        "_error",
        "_iterator",
        "_loop",
        "_reading",
        "_thread",
        "_waiter",
        "delivered",
        "dropped",
    )

    def __init__(
        self, iterator: Iterator[Any], loop: asyncio.AbstractEventLoop, ahead: int = 256
    ) -> None:
        self._iterator = iterator
        self._loop = loop
        self._ahead = ahead
        self._cond = threading.Condition()
        self._buffer: collections.deque[Any] = collections.deque()
        self._done = False
        self._error: Exception | None = None
        self._closed = False
        self._reading = False
        self._waiter: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        # Items handed to the stream; items read and never taken, with the
        # index each would have had.
        self.delivered = 0
        self.dropped: list[tuple[int, Any]] = []

    async def items(self) -> AsyncIterator[Any]:
        """The items, as an async iterator (on the loop)."""
        try:
            while True:
                waiter = None
                with self._cond:
                    if self._thread is None:
                        self._start()
                    if self._buffer:
                        item = self._buffer.popleft()
                        if len(self._buffer) <= self._ahead // 2:
                            self._cond.notify()  # (the reader may wait for room)
                    elif self._done:
                        if self._error is not None:
                            raise self._error
                        return
                    else:
                        waiter = self._waiter = self._loop.create_future()
                if waiter is not None:
                    await waiter  # (cancelled: nothing was taken)
                    continue
                self.delivered += 1
                yield item
        finally:
            self.close()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def take_dropped(self) -> list[tuple[int, Any]]:
        """The items read and never taken, with their indexes (each given once)."""
        with self._cond:
            dropped, self.dropped = self.dropped, []
        return dropped

    def close(self) -> None:
        """Take nothing more (any thread); what was read ahead is dropped."""
        with self._cond:
            if not self._closed:
                self._closed = True
                while self._buffer:
                    self._drop(self._buffer.popleft())
            self._cond.notify_all()

    def settle(self, timeout: float) -> None:
        """Wait (up to *timeout* s) for a read under way to end: its item is kept."""
        with self._cond:
            self._cond.wait_for(lambda: not self._reading, timeout)

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._read, name="decisiontelecom-viber-input", daemon=True
        )
        self._thread.start()

    def _read(self) -> None:
        while True:
            with self._cond:
                while len(self._buffer) >= self._ahead and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._reading = True
            try:
                item = next(self._iterator)
            except StopIteration:
                self._finish(None)
                return
            except Exception as error:  # noqa: BLE001 - raised in the stream
                self._finish(error)
                return
            with self._cond:
                self._reading = False
                self._cond.notify_all()
                if self.closed:
                    self._drop(item)
                    return
                self._buffer.append(item)
                self._wake()

    def _finish(self, error: Exception | None) -> None:
        with self._cond:
            self._reading = False
            self._done = True
            self._error = error
            self._cond.notify_all()
            self._wake()

    def _wake(self) -> None:
        """Wake the stream if it waits for an item (holding the lock)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # (its loop is closed)
                self._loop.call_soon_threadsafe(_set, waiter)

    def _drop(self, item: Any) -> None:
        """Keep an item nobody will take (holding the lock)."""
        self.dropped.append((self.delivered + len(self.dropped), item))


def _set(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
