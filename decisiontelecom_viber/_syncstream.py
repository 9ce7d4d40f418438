"""`SyncResultStream`: a `ResultStream` iterated from a thread without a loop.

A pump task on the client's loop iterates the async stream and hands each
result to the consuming thread through a `Handoff` (the pump waits when the
consumer falls behind, so memory stays bounded). A sync input that is not a
list, tuple or range (a generator reading a file or a database) is read by a
`ThreadedReader` in a thread of its own, so that it never blocks the loop
every call of the client shares.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import warnings
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._bulk import ProgressCallback, ResultStream
from ._errors import ClientClosedError, ConfigurationError
from ._metrics import BulkSummary
from ._portal import End, Handoff, Portal
from ._reader import ThreadedReader
from ._telemetry import carry_context


__all__ = ["ProgressCallback", "SyncResultStream"]

Result = TypeVar("Result")

# Results the loop may hand over ahead of the consumer.
_HANDOFF_LIMIT = 1024

# Seconds `close` waits for a read of the input under way.
_SETTLE = 0.5

_STOPPED = (
    "the ViberClient was closed while this stream ran: the requests on the wire "
    "finished first, and their results are in `unconsumed`; the items after them "
    "were not sent"
)


class SyncResultStream(Generic[Result]):
    """An iterator of results, one per input item; also a context manager.

    What `ViberClient.send_messages` and `ViberClient.get_message_statuses`
    return: the sync face of a `ResultStream`, with its guarantees. Leaving
    the loop early should be followed by `close` (or use ``with``): it takes
    no more input, cancels what is not written and waits for what is on the
    wire, whose results are then in `unconsumed`. Ctrl-C while waiting for a
    result closes the stream the same way, then raises. Closing the client
    closes its streams first: iterating one then raises `ClientClosedError`.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_handoff",
        "_not_sent",
        "_owner",
        "_pid",
        "_portal",
        "_pump",
        "_reader",
        "_stopped",
        "_stream",
    )

    def __init__(
        self,
        portal: Portal,
        open_stream: Callable[[Any], ResultStream[Result]],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        not_sent: Callable[[int, Any], Result],
        owner: object = None,
    ) -> None:
        loop = portal.running_loop()
        self._reader: ThreadedReader | None = None
        source: Any = items
        if _may_block(items):
            self._reader = ThreadedReader(iter(items), loop)  # type: ignore[arg-type]
            source = self._reader.items()
        # Built here so that a bad argument raises at once, in the caller.
        self._stream = open_stream(source)
        self._portal = portal
        self._owner = owner  # (the client stays alive while its stream runs)
        self._not_sent = not_sent
        self._pid = os.getpid()
        self._handoff: Handoff[Result] = Handoff(loop, _HANDOFF_LIMIT)
        self._closed = False
        self._stopped = False
        stream, handoff = self._stream, self._handoff
        enter = carry_context()  # (the caller's span: the items' parent)
        self._pump: concurrent.futures.Future[None] = portal.submit(
            lambda: _pump(stream, handoff, enter)
        )

    def __del__(self) -> None:
        pump = getattr(self, "_pump", None)
        if pump is None or self._closed or pump.done() or self._pid != os.getpid():
            return
        warnings.warn(
            "a SyncResultStream was dropped while sending; close it (`with`, or "
            "`results.close()`) when leaving its loop early",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        self._portal.cancel(pump)

    @property
    def summary(self) -> BulkSummary:
        """Counts so far (`ResultStream.summary`); final once exhausted."""
        return self._stream.summary

    @property
    def unconsumed(self) -> list[Result]:
        """Results that were ready, or finished while closing, but never yielded.

        Also a failed result (`ClientClosedError`, nothing sent) for each
        item read from your iterator ahead of the sends and never sent.
        """
        self._wait_for_the_wire()
        dropped = [] if self._reader is None else self._reader.take_dropped()
        return (
            self._handoff.drain()
            + self._stream.unconsumed
            + [self._not_sent(index, item) for index, item in dropped]
        )

    def __iter__(self) -> Iterator[Result]:
        return self

    def __next__(self) -> Result:
        if self._closed:
            self._wait_for_the_wire()
            if self._stopped:
                self._stopped = False  # (raised once, then the end)
                raise ClientClosedError(_STOPPED)
            raise StopIteration
        self._check_caller()
        try:
            got = self._handoff.get()
        except KeyboardInterrupt:
            self.close()
            raise
        if not isinstance(got, End):
            return got
        self._closed = True
        concurrent.futures.wait([self._pump])
        if got.error is None:
            raise StopIteration
        if isinstance(got.error, asyncio.CancelledError):
            self._stopped = False
            raise ClientClosedError(_STOPPED)  # (stopped, and not by its consumer)
        raise got.error

    def close(self) -> None:
        """Stop: take no more input, cancel what is not written, finish the rest."""
        self._closed = True
        if self._pid != os.getpid():
            return  # (forked: the stream's loop is the parent's)
        if not self._pump.done():
            self._portal.cancel(self._pump)
            if self._portal.in_loop_thread:
                return  # (from a callback: it ends once the callback returns)
            concurrent.futures.wait([self._pump])
        if self._reader is not None:
            self._reader.close()
            # An item read as the stream closed is kept, to be reported in
            # `unconsumed` (a read blocked longer is not waited for).
            self._reader.settle(_SETTLE)
            with contextlib.suppress(ClientClosedError):
                self._portal.call(_noop)  # (runs its delivery, if queued)

    def stop(self) -> None:
        """Close it for its client's `close`: its consumer is told so."""
        if not self._closed:
            self._stopped = True
        self.close()

    def __enter__(self) -> SyncResultStream[Result]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _wait_for_the_wire(self) -> None:
        """After a close from the loop's thread: let what is on the wire end."""
        if (
            self._closed
            and not self._pump.done()
            and self._pid == os.getpid()
            and not self._portal.in_loop_thread
        ):
            concurrent.futures.wait([self._pump])

    def _check_caller(self) -> None:
        if self._pid != os.getpid():
            raise ConfigurationError(
                "a SyncResultStream cannot be iterated in a forked process: its "
                "client's loop is in the parent; send from the child anew"
            )
        if self._portal.in_loop_thread:
            raise ConfigurationError(
                "a SyncResultStream was iterated from its client's own thread (a "
                "callback): it would wait for itself"
            )


async def _pump(
    stream: ResultStream[Result],
    handoff: Handoff[Result],
    enter: Callable[[], object] | None,
) -> None:
    if enter is not None:
        enter()  # (the pump's own context: its workers inherit it)
    error: BaseException | None = None
    try:
        async for result in stream:
            await handoff.put(result)
    except BaseException as raised:
        error = raised
        raise
    finally:
        try:
            await stream.aclose()  # (after a cancel: waits for the wire)
        finally:
            handoff.end(error)


async def _noop() -> None:
    pass


def _may_block(items: object) -> bool:
    """Whether reading *items* may block (what the stream validates is left to it)."""
    return isinstance(items, Iterable) and not isinstance(
        items, (list, tuple, range, str, bytes, AsyncIterable)
    )
