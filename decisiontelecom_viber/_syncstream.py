"""`SyncResultStream`: a `ResultStream` iterated from a thread without a loop.

A pump task on the client's loop iterates the async stream and hands each
result to the consuming thread through a `Handoff` (the pump waits when the
consumer falls behind, so memory stays bounded). A sync input that is not a
list or tuple (a generator reading a file or a database) is read in a
worker thread, a chunk at a time, so that it never blocks the loop every
call of the client shares.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._bulk import ProgressCallback, ResultStream
from ._metrics import BulkSummary
from ._portal import End, Handoff, Portal


__all__ = ["ProgressCallback", "SyncResultStream"]

Result = TypeVar("Result")

# Results the loop may hand over ahead of the consumer.
_HANDOFF_LIMIT = 1024
# Input items read per trip to the worker thread.
_CHUNK = 64


class SyncResultStream(Generic[Result]):
    """An iterator of results, one per input item; also a context manager.

    What `ViberClient.send_messages` and `ViberClient.get_message_statuses`
    return: the sync face of a `ResultStream`, with its guarantees. Leaving
    the loop early should be followed by `close` (or use ``with``): it takes
    no more input, cancels what is not written and waits for what is on the
    wire, whose results are then in `unconsumed`. Ctrl-C while waiting for a
    result closes the stream the same way, then raises.
    """

    __slots__ = ("__weakref__", "_closed", "_handoff", "_portal", "_pump", "_stream")

    def __init__(
        self,
        portal: Portal,
        open_stream: Callable[[Any], ResultStream[Result]],
        items: Iterable[Any] | AsyncIterable[Any],
    ) -> None:
        # Built here so that a bad argument raises at once, in the caller.
        self._stream = open_stream(_read_in_a_thread(items))
        self._portal = portal
        self._handoff: Handoff[Result] = Handoff(portal.running_loop(), _HANDOFF_LIMIT)
        self._closed = False
        stream, handoff = self._stream, self._handoff
        self._pump: concurrent.futures.Future[None] = portal.submit(
            lambda: _pump(stream, handoff)
        )

    def __del__(self) -> None:
        pump = getattr(self, "_pump", None)
        if pump is None or self._closed or pump.done():
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
        """Results that were ready, or finished while closing, but never yielded."""
        return self._handoff.drain() + self._stream.unconsumed

    def __iter__(self) -> Iterator[Result]:
        return self

    def __next__(self) -> Result:
        if self._closed:
            raise StopIteration
        try:
            got = self._handoff.get()
        except KeyboardInterrupt:
            self.close()
            raise
        if isinstance(got, End):
            self._closed = True
            concurrent.futures.wait([self._pump])
            if got.error is not None and not isinstance(
                got.error, asyncio.CancelledError
            ):
                raise got.error
            raise StopIteration
        return got

    def close(self) -> None:
        """Stop: take no more input, cancel what is not written, finish the rest."""
        self._closed = True
        if not self._pump.done():
            self._portal.cancel(self._pump)
            concurrent.futures.wait([self._pump])

    def __enter__(self) -> SyncResultStream[Result]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _pump(stream: ResultStream[Result], handoff: Handoff[Result]) -> None:
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


def _read_in_a_thread(items: Any) -> Any:
    """*items*, read in a worker thread if reading them may block."""
    if (
        isinstance(items, (list, tuple, range, AsyncIterable))
        or not isinstance(items, Iterable)
        or isinstance(items, (str, bytes))
    ):
        return items  # (the stream validates what is not an iterable)
    return _chunks(iter(items))


async def _chunks(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    while True:
        chunk, error = await asyncio.to_thread(_take, iterator, _CHUNK)
        for item in chunk:
            yield item
        if error is not None:
            raise error
        if len(chunk) < _CHUNK:
            return


def _take(iterator: Iterator[Any], count: int) -> tuple[list[Any], Exception | None]:
    chunk: list[Any] = []
    try:
        for _ in range(count):
            chunk.append(next(iterator))  # noqa: PERF401 - keeps what came before an error
    except StopIteration:
        pass
    except Exception as error:  # noqa: BLE001 - raised after the items before it
        return chunk, error
    return chunk, None
