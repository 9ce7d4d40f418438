"""Bulk sends: a bounded window of workers over a lazily consumed input.

`ResultStream` yields exactly one `SendResult` per input item, whatever
happens to it: invalid items, API errors and transport failures become failed
results, never an exception that ends the batch. Memory is bounded whatever
the input size: at most *window* items are taken from the input and not yet
handed to the consumer, *concurrency* of them in flight.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import warnings
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

from ._calls import abort
from ._checks import is_int, is_number
from ._clock import Clock
from ._context import WorkerContext, worker
from ._errors import ValidationError
from ._metrics import BulkSummary, Tally


__all__ = [
    "ProgressCallback",
    "ResultStream",
]

logger = logging.getLogger("decisiontelecom_viber")

ProgressCallback = Callable[[BulkSummary], object]

Item = TypeVar("Item")
Result = TypeVar("Result")


def check_interval(interval: object) -> float:
    """Return *interval* if it is a number >= 0, else raise `ValidationError`."""
    if not is_number(interval) or not interval >= 0:
        raise ValidationError("progress_interval", "must be a number >= 0")
    return float(interval)


def check_concurrency(concurrency: object) -> int:
    """Return *concurrency* if it is a positive int, else raise `ValidationError`."""
    if not is_int(concurrency):
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

    def __init__(
        self, items: Iterable[Item] | AsyncIterable[Item], name: str = "items"
    ) -> None:
        self._aiter: AsyncIterator[Item] | None = None
        self._iter: Iterator[Item] | None = None
        given = cast(object, items)  # callers may pass anything at run time
        if isinstance(given, AsyncIterable):
            self._aiter = aiter(given)
        elif isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
            raise ValidationError(
                name,
                f"must be an iterable or async iterable, not {type(items).__name__}",
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


class _Engine(Generic[Result]):
    """The workers of one `ResultStream`, and everything they share.

    Kept apart from the stream so that nothing of the stream's own is
    referenced by its workers: a stream its consumer dropped is garbage at
    once, and its finalizer can stop the workers (`ResultStream.__del__`).
    """

    def __init__(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        process: Callable[[int, Any], Awaitable[Result]],
        *,
        concurrency: int,
        outcome: Callable[[Result], str],
        clock: Clock,
        ordered: bool,
        on_progress: ProgressCallback | None,
        progress_interval: float,
        name: str,
    ) -> None:
        self.concurrency = check_concurrency(concurrency)
        self.progress_interval = check_interval(progress_interval)
        self.source: _Source[Any] = _Source(items, name)
        self.process = process
        self.ordered = ordered
        self.outcome = outcome
        self.clock = clock
        self.on_progress = on_progress
        self.tally = Tally()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.started = clock.monotonic()
        self.finished: float | None = None
        self.last_progress = self.started
        self.crash: Exception | None = None
        self.workers: list[tuple[asyncio.Task[None], WorkerContext]] = []
        self.stopping = False
        self.unconsumed: list[Result] = []

    @property
    def running(self) -> bool:
        """Whether workers were started and some have not ended."""
        return any(not task.done() for task, _ in self.workers)

    def summary(self) -> BulkSummary:
        tally = self.tally
        end = self.finished if self.finished is not None else self.clock.monotonic()
        return BulkSummary(
            total=self.total,
            outcomes=dict(self.outcomes),
            attempts=tally.attempts,
            retries=tally.retries,
            rate_limited=tally.rate_limited,
            limiter_wait=tally.limiter_wait,
            elapsed=end - self.started,
            done=self.finished is not None,
        )

    def count(self, result: Result) -> None:
        self.outcomes[self.outcome(result)] += 1
        self.total += 1
        if self.on_progress is not None:
            now = self.clock.monotonic()
            if now - self.last_progress >= self.progress_interval:
                self.last_progress = now
                self.report()

    def report(self) -> None:
        callback = self.on_progress
        if callback is None:
            return
        try:
            callback(self.summary())
        except Exception:
            # A broken progress display must not abandon messages in flight.
            logger.exception("the progress callback failed")

    def stop(self) -> None:
        """Take no more input; stop every item that has nothing on the wire.

        A call waiting (for the limiter, a retry's backoff) is aborted: its
        item ends with `ClientClosedError` (or unknown, if an earlier attempt
        may have been processed) and is kept in `unconsumed`. An item whose
        request is on the wire finishes (no retry follows), and so does one
        whose worker is recording what came of it (a message ID is not lost
        to whoever records it). Idle workers just end.
        """
        self.stopping = True
        for task, context in self.workers:
            context.stopping = True
            if task.done():
                continue
            call = context.call
            if call is not None:
                if not call.may_be_on_the_wire:
                    abort(call, _STREAM_CLOSED)
            elif not context.sent_something:
                task.cancel()

    async def run(self) -> AsyncGenerator[Result, None]:
        concurrency = self.concurrency
        # Items taken from the input but not yet handed to the consumer. In
        # order mode a slow item holds back the ones after it, so the window
        # is wider there, to keep the other workers busy meanwhile.
        window = concurrency * (4 if self.ordered else 2)
        slots = asyncio.Semaphore(window)
        results: asyncio.Queue[tuple[int, Result] | None] = asyncio.Queue()
        for _ in range(concurrency):
            context = WorkerContext(self.tally)
            task = asyncio.create_task(self._work(slots, results, context))
            self.workers.append((task, context))
        running = concurrency
        pending: dict[int, Result] = {}
        next_index = 0
        try:
            while running:
                got = await results.get()
                if got is None:
                    running -= 1
                    continue
                if not self.ordered:
                    slots.release()
                    self.count(got[1])
                    yield got[1]
                    continue
                pending[got[0]] = got[1]
                while next_index in pending:
                    result = pending.pop(next_index)
                    next_index += 1
                    slots.release()
                    self.count(result)
                    yield result
            self.finished = self.clock.monotonic()
            self.report()
            if self.crash is not None:
                raise self.crash
            if self.source.error is not None:
                raise self.source.error
        finally:
            self.stop()
            # Wait for the workers to unwind (those on the wire, to finish
            # their item), so that no task or connection outlives the stream.
            await asyncio.gather(
                *(task for task, _ in self.workers), return_exceptions=True
            )
            self._keep_unconsumed(results, pending)

    def _keep_unconsumed(
        self,
        results: asyncio.Queue[tuple[int, Result] | None],
        pending: dict[int, Result],
    ) -> None:
        """Keep (and count) the results ready but never handed to the consumer."""
        left = list(pending.items())
        while not results.empty():
            got = results.get_nowait()
            if got is not None:
                left.append(got)
        for _, result in sorted(left, key=lambda pair: pair[0]):
            self.outcomes[self.outcome(result)] += 1
            self.total += 1
            self.unconsumed.append(result)

    async def _work(
        self,
        slots: asyncio.Semaphore,
        results: asyncio.Queue[tuple[int, Result] | None],
        context: WorkerContext,
    ) -> None:
        worker.set(context)  # this task's own context: its calls count here
        source = self.source
        process = self.process
        try:
            while not context.stopping:
                await slots.acquire()
                taken = None if _stopped(context) else await source.next()
                if taken is None:
                    slots.release()
                    break
                index, item = taken
                context.sent_something = False
                result = await process(index, item)
                context.sent_something = False  # idle again: nothing to finish
                results.put_nowait((index, result))
        except Exception as error:  # noqa: BLE001 - re-raised by run
            # *process* turns every failure into a result; reaching this is a
            # bug, which must surface rather than silently drop an item.
            self.crash = error
        finally:
            results.put_nowait(None)


_STREAM_CLOSED = "the result stream was closed before this request was written"


def _stopped(context: WorkerContext) -> bool:
    return context.stopping  # read anew after an await (mypy narrows otherwise)


class ResultStream(Generic[Result]):
    """An async iterator of results, one per input item; also an async context manager.

    Iterate it with ``async for``. Leaving the loop early (``break``, an
    exception, cancellation) should be followed by `aclose`, or the stream
    used as ``async with``. Closing stops taking input and cancels every
    item whose request is not yet written; items already on the wire
    finish first (each bounded by its deadline). A stream dropped without
    being closed does the same when it is garbage-collected, with a
    `ResourceWarning`.
    """

    def __init__(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        process: Callable[[int, Any], Awaitable[Result]],
        *,
        concurrency: int,
        outcome: Callable[[Result], str],
        clock: Clock,
        ordered: bool = False,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        name: str = "items",
    ) -> None:
        self._engine: _Engine[Result] = _Engine(
            items,
            process,
            concurrency=concurrency,
            outcome=outcome,
            clock=clock,
            ordered=ordered,
            on_progress=on_progress,
            progress_interval=progress_interval,
            name=name,
        )
        self._agen = self._engine.run()
        self._closed = False

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is None or self._closed or not engine.running:
            return
        warnings.warn(
            "a ResultStream was dropped while sending; close it (`async with`, "
            "or `await stream.aclose()`) when leaving its loop early",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        with contextlib.suppress(RuntimeError):  # its event loop is gone
            engine.stop()

    @property
    def summary(self) -> BulkSummary:
        """Counts so far; final once the stream is exhausted (``done``).

        After an early `aclose`, it also counts the items that finished while
        closing (see `unconsumed`).
        """
        return self._engine.summary()

    @property
    def unconsumed(self) -> list[Result]:
        """Results that were ready, or finished while closing, but never yielded.

        When you leave the loop early, the requests already on the wire
        finish during `aclose`: their results (message IDs included) are
        here, in input order, so that no send the API accepted goes
        unreported.
        """
        return list(self._engine.unconsumed)

    def __aiter__(self) -> ResultStream[Result]:
        return self

    async def __anext__(self) -> Result:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop: take no more input, cancel what is not written, finish the rest."""
        self._closed = True
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
