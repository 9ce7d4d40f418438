"""``decisiontelecom-viber bulk``: a CSV or JSON Lines file through `send_messages`."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from .._errors import ValidationError
from .._limits import RateLimit
from .._models import ViberMessage
from ._app import api_options, make_client, run
from ._display import Display
from ._exit import ExitCode
from ._fields import convert_row, message_options
from ._input import InputError, check_csv, detect_delimiter
from ._job import INTERRUPTED, Job, early_signals
from ._journal import Journal, JournalError, JournalLockedError, RowResult
from ._reconcile import (
    Callbacks,
    RowReconciler,
    await_callbacks,
    listening,
    parse_address,
)


__all__ = ["bulk"]

_JSON_LINES = (".jsonl", ".ndjson")
# Seconds between rewrites of the results file (and syncs of the journal).
CHECKPOINT = 2.0
# Connection failures in a row that stop a run (the API is unreachable).
MAX_UNREACHABLE = 20


class RowError(Exception):
    """A row that cannot be read (not JSON, not UTF-8, too many cells)."""


def read_rows(
    path: Path, delimiter: str = ","
) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    """(row number, row or why it is unreadable), lazily, for CSV or JSON Lines."""
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path, delimiter)
    else:
        yield from _json_rows(path)


def _csv_rows(
    path: Path, delimiter: str
) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    # surrogateescape: a stray byte spoils its row only, not the whole file.
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        # The header as `check_csv` reads it: past blank lines, stripped.
        header = next((r for r in csv.reader(f, delimiter=delimiter) if r), None)
        if header is None:
            return
        reader = csv.DictReader(
            f, fieldnames=[name.strip() for name in header], delimiter=delimiter
        )
        number = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                number += 1
                yield number, RowError(f"unreadable CSV: {error}")
                continue
            number += 1
            yield number, _check_csv_row(row)


def _check_csv_row(row: dict[str | None, Any]) -> Mapping[str, Any] | RowError:
    if None in row:
        return RowError("the row has more cells than the header")
    if None in row.values():
        return RowError("the row has fewer cells than the header")
    for value in row.values():
        if isinstance(value, str) and any(0xDC80 <= ord(c) <= 0xDCFF for c in value):
            return RowError("the row is not valid UTF-8")
    return {str(key): value for key, value in row.items()}


def _json_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    with path.open("rb") as stream:
        number = 0
        for raw in stream:
            if not raw.strip():
                continue
            number += 1
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                yield number, RowError(f"not a JSON object: {error}")
                continue
            if not isinstance(row, dict):
                yield number, RowError("not a JSON object")
                continue
            yield number, row


def count_rows(path: Path, delimiter: str = ",") -> int:
    """The number of rows, for the progress bar (one cheap pass)."""
    return sum(1 for _ in read_rows(path, delimiter))


def message_for(
    row: Mapping[str, Any] | RowError, shared: Mapping[str, Any]
) -> ViberMessage:
    """Build a row's message: its own cells over the values shared by flags.

    Raises:
        ValidationError: The row is unreadable or breaks a message rule.
    """
    if isinstance(row, RowError):
        raise ValidationError("row", str(row))
    merged = {key: value for key, value in shared.items() if value is not None}
    merged.update(
        (key, value) for key, value in row.items() if value is not None and value != ""
    )
    return ViberMessage.from_dict(convert_row(merged))


def write_results(path: Path, results: Mapping[int, RowResult]) -> None:
    """Write every row's result in row order (atomically: a temp file, then rename)."""
    temporary = path.with_name(path.name + ".tmp")
    rows = [results[row].to_dict() for row in sorted(results)]
    with temporary.open("w", newline="", encoding="utf-8") as stream:
        _write_rows(path, stream, rows)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _write_rows(path: Path, stream: Any, rows: list[dict[str, Any]]) -> None:
    if path.suffix.lower() == ".csv":
        writer = csv.DictWriter(
            stream, fieldnames=["row", "outcome", "message_id", "error_type", "error"]
        )
        writer.writeheader()
        writer.writerows(rows)
    else:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")


def _check_extension(path: Path, what: str) -> None:
    if path.suffix.lower() not in (".csv", *_JSON_LINES):
        raise click.BadParameter(
            f"{what} must end in .csv or .jsonl (or .ndjson)", param_hint=what
        )


@click.command()
@api_options
@message_options(required=False)
@click.argument(
    "input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results file: .csv (with a header) or .jsonl.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run: sent rows are skipped, rows that may "
    "have been sent are reported unknown, failed rows are tried again.",
)
@click.option(
    "--concurrency", default=32, show_default=True, type=click.IntRange(1, 512)
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Send at most this many messages per second (default: discover the "
    "account's limit).",
)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="After Ctrl-C or SIGTERM, seconds to wait for the requests already "
    "on the wire (a second signal abandons them).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Start even though --output exists without its journal (it is "
    "replaced; rows it lists as sent are sent again).",
)
@click.option(
    "--delimiter",
    type=click.Choice([",", ";", "tab"]),
    help="The CSV delimiter (default: detected from the header line among , ; "
    "and tab).",
)
@click.option(
    "--callback-secret",
    envvar="DECISIONTELECOM_CALLBACK_SECRET",
    help="Sign each row's callback URL (--callback-url) with this secret and "
    "a reference naming the row, so that its status callbacks prove it sent "
    "(see --listen and the reconcile command). Env: "
    "DECISIONTELECOM_CALLBACK_SECRET.",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Receive the rows' status callbacks here while the run lasts (put "
    "it behind the public --callback-url): a row whose answer was lost is "
    "settled as sent, with its message ID, by its callback.",
)
@click.option(
    "--reconcile-wait",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="With --listen: after the last answer, seconds to wait for the "
    "callbacks of rows still unknown.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def bulk(
    ctx: click.Context,
    /,
    access_key: str | None,
    base_url: str,
    allow_insecure_http: bool,
    attempts: int,
    input_file: Path,
    output: Path,
    resume: bool,
    concurrency: int,
    rate: float | None,
    grace: float,
    force: bool,
    delimiter: str | None,
    callback_secret: str | None,
    listen: str | None,
    reconcile_wait: float,
    no_progress: bool,
    **shared: Any,
) -> int:
    """Send one message per row of INPUT_FILE (CSV or JSON Lines).

    Columns are named like the message fields (sender, receiver, text,
    message_type, ...); a flag gives a value to rows that lack it. Writes one
    result row per input row to --output, and a journal beside it so that a
    crashed run can be resumed without sending anything twice.
    """
    _check_extension(input_file, "INPUT_FILE")
    _check_extension(output, "--output")
    if callback_secret is not None and not shared.get("callback_url"):
        raise click.UsageError("--callback-secret needs --callback-url")
    if listen is not None and callback_secret is None:
        raise click.UsageError(
            "--listen needs --callback-secret (an unsigned callback proves nothing)"
        )
    address = parse_address(listen) if listen is not None else None
    if delimiter == "tab":
        delimiter = "\t"
    if input_file.suffix.lower() == ".csv":
        delimiter = delimiter or detect_delimiter(input_file)
        try:
            check_csv(input_file, delimiter, shared)
        except InputError as error:
            click.echo(f"error: {error}", err=True)
            return int(ExitCode.USAGE)
    elif input_file.stat().st_size == 0:
        click.echo(f"error: {input_file} is empty: no rows", err=True)
        return int(ExitCode.USAGE)
    delimiter = delimiter or ","
    journal_path = output.with_name(output.name + ".journal")
    try:
        has_journal = journal_path.exists() and journal_path.stat().st_size > 0
        has_output = output.exists()
    except OSError as error:
        click.echo(f"error: cannot use the journal {journal_path}: {error}", err=True)
        return int(ExitCode.INVALID)
    if has_output and not has_journal and not force:
        click.echo(
            f"error: {output} exists without its journal ({journal_path.name}): "
            "a run would send its rows again; choose another --output, or pass "
            "--force to replace it",
            err=True,
        )
        return int(ExitCode.INVALID)
    # Until the event loop's handlers take over, a signal is only noted: a
    # run interrupted while it hashes and counts its input starts stopped.
    with early_signals() as interrupted:
        try:
            journal = Journal(
                journal_path,
                input_file,
                resume=resume,
                warn=lambda text: click.echo(f"warning: {text}", err=True),
                delimiter=delimiter if input_file.suffix.lower() == ".csv" else None,
            )
        except JournalLockedError as error:
            click.echo(f"error: {error}", err=True)
            return int(ExitCode.LOCKED)
        except JournalError as error:
            click.echo(f"error: {error}", err=True)
            return int(ExitCode.INVALID)
        except OSError as error:
            click.echo(
                f"error: cannot use the journal {journal_path}: {error}", err=True
            )
            return int(ExitCode.INVALID)
        try:
            return run(
                ctx,
                _send_file(
                    journal,
                    input_file,
                    output,
                    shared,
                    client_options={
                        "access_key": access_key,
                        "base_url": base_url,
                        "allow_insecure_http": allow_insecure_http,
                        "attempts": attempts,
                    },
                    concurrency=concurrency,
                    rate=rate,
                    grace=grace,
                    progress=not no_progress,
                    interrupted=interrupted,
                    delimiter=delimiter,
                    callbacks=Callbacks(callback_secret, address, reconcile_wait),
                ),
            )
        finally:
            journal.close()


async def _send_file(
    journal: Journal,
    input_file: Path,
    output: Path,
    shared: Mapping[str, Any],
    *,
    client_options: dict[str, Any],
    concurrency: int,
    rate: float | None,
    grace: float,
    progress: bool,
    interrupted: Callable[[], bool] = lambda: False,
    delimiter: str = ",",
    callbacks: Callbacks | None = None,
) -> int:
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
    client = make_client(
        **client_options, rate_limit=rate_limit, max_connections=max(100, concurrency)
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
