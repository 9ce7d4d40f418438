"""A ``bulk`` run: the input's rows through `send_messages`, journaled.

The command (``_bulk``) checks its options and opens the journal; this
sends the rows the journal does not settle yet, listens for their callbacks
if asked, and leaves every row of the input with an outcome in the journal
and in the results file, however the run ends.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from .._constants import DEFAULT_MAX_CONNECTIONS
from .._errors import ValidationError
from .._limits import RateLimit
from .._models import ViberMessage
from ._common import ClientOptions
from ._display import Display
from ._exit import ExitCode
from ._job import INTERRUPTED, Job
from ._journal import Journal, RowResult
from ._reconcile import Callbacks, RowReconciler, await_callbacks, listening
from ._results import write_results
from ._rows import count_rows, message_for, read_rows


__all__ = ["send_file"]

# Seconds between rewrites of the results file (and syncs of the journal).
CHECKPOINT = 2.0
# Connection failures in a row that stop a run (the API is unreachable).
MAX_UNREACHABLE = 20


async def send_file(
    journal: Journal,
    input_file: Path,
    output: Path,
    shared: Mapping[str, Any],
    *,
    api: ClientOptions,
    concurrency: int,
    rate: float | None,
    grace: float,
    progress: bool,
    interrupted: Callable[[], bool] = lambda: False,
    delimiter: str = ",",
    callbacks: Callbacks | None = None,
) -> int:
    """Send *input_file*'s unsettled rows; write *output*; return the exit code.

    Args:
        journal: The run's journal, open (the caller closes it).
        input_file: The rows (CSV or JSON Lines).
        output: The results file, rewritten at each checkpoint and at the end.
        shared: Values the flags give to rows that lack them.
        api: The client options.
        concurrency: Requests in flight at most.
        rate: Messages per second at most (None: discover the limit).
        grace: Seconds the requests on the wire get after a signal.
        progress: Show the progress (see `Display`).
        interrupted: Whether a signal came before the handlers took over.
        delimiter: The CSV delimiter.
        callbacks: Signing and listening for the rows' callbacks (default:
            neither).
    """
    callbacks = callbacks or Callbacks(None, None, 0.0)
    if callbacks.secret is not None and journal.run_id is None:
        click.echo(
            f"error: {journal.path} was made by an older version (no run ID to "
            "sign callbacks with): use another --output, or drop --callback-secret",
            err=True,
        )
        return int(ExitCode.INVALID)
    rate_limit = RateLimit(rate=rate, adaptive=False) if rate else RateLimit()
    # A connection per request in flight: a request waiting for a pooled
    # connection is journaled "writing" already (its hook runs first).
    client = api.client(
        rate_limit=rate_limit,
        max_connections=max(DEFAULT_MAX_CONNECTIONS, concurrency),
    )
    indexes = itertools.count()
    display: Display | None = None

    def shown(outcome: str) -> None:
        if display is not None:
            display.add(outcome)

    job = Job(
        journal,
        on_result=shown,
        write_results=lambda: write_results(output, journal.results),
        say=lambda text: click.echo(text, err=True),
        grace=grace,
        checkpoint=CHECKPOINT,
        max_unreachable=MAX_UNREACHABLE,
    )

    def messages() -> Iterator[ViberMessage]:
        for row, data in read_rows(input_file, delimiter):
            if not job.taking():
                return
            done = journal.results.get(row)
            if done is not None and done.outcome != "failed":
                shown(done.outcome)
                continue
            if row in journal.in_flight:
                # The previous run may have sent it: never send it again.
                journal.record(_in_flight(row, "when the previous run stopped"))
                shown("unknown")
                continue
            try:
                message = callbacks.sign(message_for(data, shared), journal, row)
            except ValidationError as error:
                journal.record(
                    RowResult(row, "failed", None, "ValidationError", str(error))
                )
                shown("failed")
                continue
            job.take(next(indexes), row)
            yield message

    # The handlers first: a signal while the input is counted stops the run
    # before anything is sent.
    with job.signals():
        if interrupted():
            click.echo("stopping: interrupted before sending anything", err=True)
            job.stop(INTERRUPTED)
        display = Display(count_rows(input_file, delimiter), progress)
        reconciler = RowReconciler(journal, job.called_back)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if callbacks.address is not None and callbacks.secret is not None:
                    try:
                        url = await stack.enter_async_context(
                            listening(reconciler, callbacks.address, callbacks.secret)
                        )
                    except OSError as error:
                        host, port = callbacks.address
                        click.echo(
                            f"error: cannot listen on {host}:{port}: {error}", err=True
                        )
                        return int(ExitCode.INVALID)
                    click.echo(f"receiving callbacks at {url}", err=True)
                with display:
                    async with client:
                        await job.run(client, messages(), concurrency)
                if callbacks.address is not None:
                    await await_callbacks(job, reconciler, callbacks.wait)
        finally:
            # On every exit (an abort's cancellation included): the journal
            # gives every row an outcome, and the results say so.
            _record_the_rest(job, input_file, delimiter)
            write_results(output, journal.results)
    counts = {"sent": 0, "failed": 0, "unknown": 0}
    for record in journal.results.values():
        counts[record.outcome] = counts.get(record.outcome, 0) + 1
    click.echo(
        f"sent {counts['sent']}, failed {counts['failed']}, unknown "
        f"{counts['unknown']}; results in {output}",
        err=True,
    )
    if job.stopped is not None:
        return int(job.stopped.code)
    ok = counts["failed"] == 0 and counts["unknown"] == 0
    return int(ExitCode.OK if ok else ExitCode.PARTIAL)


def _record_the_rest(job: Job, input_file: Path, delimiter: str) -> None:
    """Give the rows this run left without an outcome one."""
    journal = job.journal
    for row in list(job.rows_of.values()):
        if row in job.written:  # abandoned on the wire
            journal.record(_in_flight(row, "when the run was stopped"))
        else:  # abandoned while waiting for the limiter: never written
            job.not_tried(row)
    job.rows_of.clear()
    job.written.clear()
    for row in list(journal.in_flight):  # the previous run's, not reached
        journal.record(_in_flight(row, "when the previous run stopped"))
    if job.stopped is not None:
        for row, _ in read_rows(input_file, delimiter):
            if row not in journal.results:
                job.not_tried(row)


def _in_flight(row: int, when: str) -> RowResult:
    return RowResult(
        row,
        "unknown",
        error_type="OutcomeUnknownError",
        error=f"in flight {when}; not resent",
    )
