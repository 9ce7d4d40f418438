"""One ``bulk`` run as a durable job: signals, checkpoints and early stops.

The journal (`_journal`) is the truth; everything here keeps the results
file and the screen in step with it:

* every *checkpoint* seconds the journal is synced to disk and the results
  file rewritten from it atomically, so that a killed run leaves results at
  most that far behind, never claiming a row that was not sent;
* a row is journaled "writing" immediately before its request is first
  written (the client's ``on_write``), not while it waits for the rate
  limiter: only rows on the wire can be in doubt;
* the first SIGINT or SIGTERM stops taking rows: requests not yet written
  end as "not sent", those on the wire are waited for (up to *grace*
  seconds), then the results are written; a second signal, or the end of
  the grace period, abandons what is still on the wire (those rows are
  unknown, never resent);
* a status callback of a row (see `_reconcile`) settles it as sent when its
  answer was lost, even if the callback came first;
* an answer that every further row would get too (401/403: the key; 402:
  the balance) or *max_unreachable* connection failures in a row stop the
  run the same way, and the rows not tried are recorded as not sent, so
  that ``--resume`` sends them once the cause is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

from .._errors import (
    APIConnectionError,
    AuthenticationError,
    InsufficientBalanceError,
)
from .._models import SendResult, ViberMessage
from ._exit import ExitCode
from ._journal import Journal, RowResult


__all__ = ["INTERRUPTED", "Job", "early_signals"]


class StopReason:
    """Why a run stopped taking rows: the text for the rows not tried, and the code."""

    def __init__(self, text: str, code: ExitCode) -> None:
        self.text = text
        self.code = code


INTERRUPTED = StopReason("the run was interrupted", ExitCode.INTERRUPTED)


@contextlib.contextmanager
def early_signals() -> Iterator[Callable[[], bool]]:
    """Note SIGINT/SIGTERM instead of dying (a second one interrupts at once).

    Yields whether one came. Inside, `Job.signals` (the event loop's
    handlers) takes over.
    """
    received: list[int] = []

    def note(number: int, _: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(number)

    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[number] = signal.signal(number, note)
    try:
        yield lambda: bool(received)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_reason(
    result: SendResult, unreachable_in_a_row: int, limit: int
) -> StopReason | None:
    """Whether *result* says every further row would fail the same way."""
    error = result.error
    if isinstance(error, AuthenticationError):
        return StopReason(
            "the API refused the access key (401/403)", ExitCode.STOPPED_KEY
        )
    if isinstance(error, InsufficientBalanceError):
        return StopReason("the balance is insufficient (402)", ExitCode.STOPPED_BALANCE)
    if isinstance(error, APIConnectionError) and unreachable_in_a_row >= limit:
        return StopReason(
            f"the API could not be reached ({limit} rows in a row)",
            ExitCode.UNREACHABLE,
        )
    return None


class Job:
    """The state of one run: which rows are out, and whether to stop.

    Args:
        journal: The run's journal.
        on_result: Called with each recorded row and its outcome (the display).
        write_results: Rewrites the results file from the journal.
        say: Prints a line for the user (standard error).
        grace: Seconds to wait for requests on the wire after a stop.
        checkpoint: Seconds between results rewrites.
        max_unreachable: Connection failures in a row that stop the run.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        on_result: Callable[[str], None],
        write_results: Callable[[], None],
        say: Callable[[str], None],
        grace: float,
        checkpoint: float,
        max_unreachable: int,
    ) -> None:
        self.journal = journal
        self.rows_of: dict[int, int] = {}  # send index -> row number
        # Rows whose request may have been written, without a result yet.
        self.written: set[int] = set()
        # Message IDs that status callbacks reported, by row (`_reconcile`).
        self.called_back: dict[int, int] = {}
        self.stopped: StopReason | None = None
        self._on_result = on_result
        self._write_results = write_results
        self._say = say
        self._grace = grace
        self._checkpoint = checkpoint
        self._max_unreachable = max_unreachable
        self._unreachable = 0
        self._stop_event = asyncio.Event()
        self._abort_event = asyncio.Event()

    # -- rows ---------------------------------------------------------------

    def take(self, index: int, row: int) -> None:
        """Row *row* goes out as send number *index* (it may wait for the limiter)."""
        self.rows_of[index] = row

    def writing(self, index: int) -> None:
        """Send number *index* is about to be written: journal it first.

        Raises:
            OSError: The journal could not record it (nothing is written).
        """
        row = self.rows_of[index]
        self.journal.writing(row)
        self.written.add(row)

    def refused(self, index: int) -> None:
        """Send number *index* was refused for sure; a retry waits."""
        row = self.rows_of[index]
        self.journal.waiting(row)
        self.written.discard(row)

    def taking(self) -> bool:
        """Whether rows may still be taken."""
        return self.stopped is None

    def finish(self, result: SendResult) -> None:
        """Record the result of a send (and maybe decide to stop)."""
        row = self.rows_of.pop(result.index)
        self.written.discard(row)
        record = _row_result(row, result)
        called_back = self.called_back.get(row)
        if record.outcome == "unknown" and called_back is not None:
            # Its callback came before its (lost) answer: it was accepted.
            record = RowResult(row, "sent", called_back)
        self.journal.record(record)
        self._on_result(record.outcome)
        unreachable = isinstance(result.error, APIConnectionError)
        self._unreachable = self._unreachable + 1 if unreachable else 0
        if self.stopped is None:
            reason = stop_reason(result, self._unreachable, self._max_unreachable)
            if reason is not None:
                self._say(f"stopping: {reason.text}; the rows not tried are not sent")
                self.stop(reason)

    def not_tried(self, row: int) -> None:
        """Record a row the stopped run did not try."""
        reason = self.stopped or INTERRUPTED
        record = RowResult(row, "failed", None, "NotSent", f"not sent: {reason.text}")
        self.journal.record(record)

    # -- stopping -------------------------------------------------------------

    def stop(self, reason: StopReason) -> None:
        """Take no more rows; the stream is closed by `run`."""
        if self.stopped is None:
            self.stopped = reason
        self._stop_event.set()

    async def wait_stopped(self) -> None:
        """Return once the run is stopped (a signal, an early stop)."""
        await self._stop_event.wait()

    def _on_signal(self) -> None:
        if self._stop_event.is_set():
            self._say("aborting: the rows still in flight are reported unknown")
            self._abort_event.set()
            return
        self._say(
            f"stopping: waiting up to {self._grace:g} s for the requests on the "
            "wire; interrupt again to abort"
        )
        self.stop(INTERRUPTED)

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM stop the run gracefully while inside."""
        loop = asyncio.get_running_loop()
        installed = []
        for number in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(number, self._on_signal)
                installed.append(number)
        try:
            yield
        finally:
            for number in installed:
                loop.remove_signal_handler(number)

    # -- running ----------------------------------------------------------------

    async def run(
        self, client: Any, messages: Iterator[ViberMessage], concurrency: int
    ) -> None:
        """Send *messages* and record every result, until done or stopped."""
        stream = client.send_messages(
            messages,
            concurrency=concurrency,
            on_write=self.writing,
            on_refused=self.refused,
        )
        consumer = asyncio.ensure_future(self._consume(stream))
        checkpoints = asyncio.ensure_future(self._checkpoints())
        try:
            stop = asyncio.ensure_future(self._stop_event.wait())
            try:
                await asyncio.wait(
                    {consumer, stop}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stop.cancel()
            if not consumer.done():
                # Stopped: close the stream (requests not written end as
                # not sent; those on the wire finish), within the grace.
                consumer.cancel()
                abort = asyncio.ensure_future(self._abort_event.wait())
                try:
                    await asyncio.wait(
                        {consumer, abort},
                        timeout=self._grace,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    abort.cancel()
                if not consumer.done():
                    consumer.cancel()  # abandon what is on the wire
                    if not self._abort_event.is_set():
                        self._say("the grace period ended: rows in flight are unknown")
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
            else:
                await consumer  # (its exception, if any)
        except BaseException:
            # Cancelled from outside (an abort): what is on the wire is
            # abandoned (asyncio.run cancels and awaits what is left).
            consumer.cancel()
            raise
        finally:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
        for result in stream.unconsumed:
            if result.index in self.rows_of:
                self.finish(result)

    async def _consume(self, stream: Any) -> None:
        async with stream:
            async for result in stream:
                self.finish(result)

    async def _checkpoints(self) -> None:
        interval = self._checkpoint
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            started = loop.time()
            self.journal.sync()
            self._write_results()
            # A rewrite blocks the loop (a million rows: seconds): keep it
            # under a tenth of the time.
            interval = max(self._checkpoint, 10 * (loop.time() - started))


def _row_result(row: int, result: SendResult) -> RowResult:
    if result.error is None:
        return RowResult(row, "sent", result.message_id)
    return RowResult(
        row, result.outcome.value, None, type(result.error).__name__, str(result.error)
    )
