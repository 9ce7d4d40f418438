"""Bulk sends: a bounded window of workers over a lazily consumed input.

`SendStream` yields exactly one `SendResult` per input item, whatever
happens to it: invalid items, API errors and transport failures become failed
results, never an exception that ends the batch. Memory is bounded whatever
the input size: at most *window* items are taken from the input and not yet
handed to the consumer, *concurrency* of them in flight.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from ._clock import Clock
from ._errors import ValidationError
from ._metrics import BulkSummary, Tally


__all__ = ["ProgressCallback", "ResultStream", "check_concurrency"]

logger = logging.getLogger("decisiontelecom_viber")

ProgressCallback = Callable[[BulkSummary], object]

Item = TypeVar("Item")
Result = TypeVar("Result")


def check_concurrency(concurrency: object) -> int:
    """Return *concurrency* if it is a positive int, else raise `ValidationError`."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise ValidationError("concurrency", "must be an integer")
    if concurrency < 1:
        raise ValidationError("concurrency", "must be at least 1")
    return concurrency


class _Source(Generic[Item]):
    """Hands out (index, item) pairs from a sync or async iterable, lazily.

    An exception raised by the input is kept in ``error`` and ends the input:
    items already taken are still processed and reported before it is raised.
    """

    __slots__ = ("_aiter", "_done", "_index", "_iter", "_lock", "error")

    def __init__(self, items: Iterable[Item] | AsyncIterable[Item]) -> None:
        self._aiter: AsyncIterator[Item] | None = None
        self._iter: Iterator[Item] | None = None
        given = cast(object, items)  # callers may pass anything at run time
        if isinstance(given, AsyncIterable):
            self._aiter = aiter(given)
        elif isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
            raise TypeError(
                "expected an iterable or async iterable of messages, "
                f"not {type(items).__name__}"
            )
        else:
            self._iter = iter(given)
        # Two workers must not await the same async iterator at once.
        self._lock = asyncio.Lock()
        self._index = 0
        self._done = False
        self.error: Exception | None = None

    async def next(self) -> tuple[int, Item] | None:
        if self._aiter is None:
            return None if self._done else self._take_sync()
        async with self._lock:
            # Checked under the lock: another worker may have hit the end
            # while this one waited.
            if self._done:
                return None
            try:
                item = await self._aiter.__anext__()
            except StopAsyncIteration:
                self._done = True
                return None
            except Exception as error:  # noqa: BLE001 - kept, raised at the end
                self._done = True
                self.error = error
                return None
        return self._number(item)

    def _take_sync(self) -> tuple[int, Item] | None:
        try:
            item = next(self._iter)  # type: ignore[arg-type]
        except StopIteration:
            self._done = True
            return None
        except Exception as error:  # noqa: BLE001 - kept, raised at the end
            self._done = True
            self.error = error
            return None
        return self._number(item)

    def _number(self, item: Item) -> tuple[int, Item]:
        index = self._index
        self._index += 1
        return index, item


class ResultStream(Generic[Result]):
    """An async iterator of results, one per input item; also an async context manager.

    Iterate it with ``async for``. Leaving the loop early (``break``, an
    exception, cancellation) should be followed by `aclose`, or the stream
    used as ``async with``, so that in-flight requests are cancelled at once
    rather than when the stream is garbage-collected.
    """

    def __init__(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        process: Callable[[int, Any, Tally], Awaitable[Result]],
        *,
        concurrency: int,
        outcome: Callable[[Result], str],
        clock: Clock,
        ordered: bool = False,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
    ) -> None:
        self._concurrency = check_concurrency(concurrency)
        self._source: _Source[Any] = _Source(items)
        self._process = process
        self._ordered = ordered
        self._outcome = outcome
        self._clock = clock
        self._on_progress = on_progress
        self._progress_interval = progress_interval
        self._tally = Tally()
        self._outcomes: collections.Counter[str] = collections.Counter()
        self._total = 0
        self._started = clock.monotonic()
        self._finished: float | None = None
        self._last_progress = self._started
        self._crash: Exception | None = None
        self._agen = self._run()

    @property
    def summary(self) -> BulkSummary:
        """Counts so far; final once the stream is exhausted (``done``)."""
        tally = self._tally
        end = self._finished if self._finished is not None else self._clock.monotonic()
        return BulkSummary(
            total=self._total,
            outcomes=dict(self._outcomes),
            attempts=tally.attempts,
            retries=tally.retries,
            rate_limited=tally.rate_limited,
            limiter_wait=tally.limiter_wait,
            elapsed=end - self._started,
            done=self._finished is not None,
        )

    def _count(self, result: Result) -> None:
        self._outcomes[self._outcome(result)] += 1
        self._total += 1
        if self._on_progress is not None:
            now = self._clock.monotonic()
            if now - self._last_progress >= self._progress_interval:
                self._last_progress = now
                self._report()

    def _report(self) -> None:
        callback = self._on_progress
        if callback is None:
            return
        try:
            callback(self.summary)
        except Exception:
            # A broken progress display must not abandon messages in flight.
            logger.exception("the progress callback failed")

    def __aiter__(self) -> ResultStream[Result]:
        return self

    async def __anext__(self) -> Result:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop: cancel in-flight requests and wait until they are gone."""
        await self._agen.aclose()

    async def __aenter__(self) -> ResultStream[Result]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Result, None]:
        concurrency = self._concurrency
        # Items taken from the input but not yet handed to the consumer. In
        # order mode a slow item holds back the ones after it, so the window
        # is wider there, to keep the other workers busy meanwhile.
        window = concurrency * (4 if self._ordered else 2)
        slots = asyncio.Semaphore(window)
        results: asyncio.Queue[tuple[int, Result] | None] = asyncio.Queue()
        workers = [
            asyncio.create_task(self._work(slots, results)) for _ in range(concurrency)
        ]
        running = len(workers)
        pending: dict[int, Result] = {}
        next_index = 0
        try:
            while running:
                got = await results.get()
                if got is None:
                    running -= 1
                    continue
                if not self._ordered:
                    slots.release()
                    self._count(got[1])
                    yield got[1]
                    continue
                pending[got[0]] = got[1]
                while next_index in pending:
                    result = pending.pop(next_index)
                    next_index += 1
                    slots.release()
                    self._count(result)
                    yield result
            self._finished = self._clock.monotonic()
            self._report()
            if self._crash is not None:
                raise self._crash
            if self._source.error is not None:
                raise self._source.error
        finally:
            for worker in workers:
                worker.cancel()
            # Wait for cancelled requests to unwind, so that no task or
            # connection outlives the stream.
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(
        self,
        slots: asyncio.Semaphore,
        results: asyncio.Queue[tuple[int, Result] | None],
    ) -> None:
        source = self._source
        process = self._process
        tally = self._tally
        try:
            while True:
                await slots.acquire()
                taken = await source.next()
                if taken is None:
                    slots.release()
                    break
                index, item = taken
                results.put_nowait((index, await process(index, item, tally)))
        except Exception as error:  # noqa: BLE001 - re-raised by _run
            # *process* turns every failure into a result; reaching this is a
            # bug, which must surface rather than silently drop an item.
            self._crash = error
        finally:
            results.put_nowait(None)
