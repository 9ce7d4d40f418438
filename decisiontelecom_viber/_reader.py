"""A blocking iterator read in a daemon thread, one item per request.

A sync client's bulk input may block (a generator reading a file, a
database, a queue). Read on the event loop, it would hold up every call of
the client; read ahead in chunks, items taken from it would be lost when the
stream closes early, and a trickle would wait for a chunk to fill. So
`ThreadedReader` takes an item only when the stream asks for one, in a
daemon thread of its own (never joined: an iterator blocked forever must not
hold up closing the client, or the interpreter's exit).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any


__all__ = ["ThreadedReader"]

# (done, item, error): what one request for an item came to.
_Outcome = tuple[bool, Any, "Exception | None"]


class ThreadedReader:
    """Items of *iterator*, each read in the reader's thread when asked for."""

    __slots__ = (
        "_closed",
        "_cond",
        "_iterator",
        "_loop",
        "_reading",
        "_thread",
        "_wanted",
        "delivered",
        "dropped",
    )

    def __init__(
        self, iterator: Iterator[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._iterator = iterator
        self._loop = loop
        self._cond = threading.Condition()
        self._wanted: asyncio.Future[_Outcome] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._reading = False
        # Items handed to the stream; and items read when nobody waited any
        # more (the stream closed during the read), each with its index.
        self.delivered = 0
        self.dropped: list[tuple[int, Any]] = []

    async def items(self) -> AsyncIterator[Any]:
        """The items, as an async iterator (on the loop)."""
        try:
            while True:
                future = self._request()
                try:
                    done, item, error = await future
                except asyncio.CancelledError:
                    if future.done() and not future.cancelled():
                        # Read and delivered, then cancelled before this
                        # task resumed: the item is nobody's, keep it.
                        with self._cond:
                            self._keep(future.result())
                    raise
                if error is not None:
                    raise error
                if done:
                    return
                self.delivered += 1
                yield item
        finally:
            self.close()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def take_dropped(self) -> list[tuple[int, Any]]:
        """The dropped items, with their indexes (each given once)."""
        with self._cond:
            dropped, self.dropped = self.dropped, []
        return dropped

    def close(self) -> None:
        """Read nothing more (any thread). A read under way is not waited for."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _request(self) -> asyncio.Future[_Outcome]:
        future: asyncio.Future[_Outcome] = self._loop.create_future()
        with self._cond:
            if self._closed:
                future.set_result((True, None, None))
                return future
            self._wanted = future
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._read, name="decisiontelecom-viber-input", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return future

    def _read(self) -> None:
        while True:
            with self._cond:
                while self._wanted is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                future, self._wanted = self._wanted, None
                self._reading = True
            assert future is not None  # noqa: S101 - the loop above
            outcome: _Outcome
            try:
                outcome = (False, next(self._iterator), None)
            except StopIteration:
                outcome = (True, None, None)
            except Exception as error:  # noqa: BLE001 - raised in the stream
                outcome = (True, None, error)
            with self._cond:
                self._reading = False
                self._cond.notify_all()
                if self.closed or future.done():
                    self._keep(outcome)  # (nobody waits for it any more)
                    return
                try:
                    self._loop.call_soon_threadsafe(self._deliver, future, outcome)
                except RuntimeError:
                    self._keep(outcome)  # (the loop is closed)
                    return
            if outcome[0]:
                return

    def settle(self, timeout: float) -> None:
        """Wait (up to *timeout* s) for a read under way to end: its item is kept."""
        with self._cond:
            self._cond.wait_for(lambda: not self._reading, timeout)

    def _deliver(self, future: asyncio.Future[_Outcome], outcome: _Outcome) -> None:
        if future.done():  # (cancelled: the stream closed during the read)
            with self._cond:
                self._keep(outcome)
        else:
            future.set_result(outcome)

    def _keep(self, outcome: _Outcome) -> None:
        """Keep an item nobody took (called holding the condition's lock)."""
        done, item, _ = outcome
        if not done:
            self.dropped.append((self.delivered + len(self.dropped), item))
