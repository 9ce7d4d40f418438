"""``decisiontelecom-viber bulk``: a CSV or JSON Lines file through `send_messages`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._constants import DEFAULT_CONCURRENCY
from ._bulk_run import send_file
from ._common import ClientOptions, client_options, run
from ._exit import ExitCode
from ._fields import message_options
from ._input import InputError, check_csv, detect_delimiter
from ._job import early_signals
from ._journal import Journal, JournalError, JournalLockedError
from ._reconcile import Callbacks, parse_address


__all__ = ["bulk"]

_JSON_LINES = (".jsonl", ".ndjson")


def _check_extension(path: Path, what: str) -> None:
    if path.suffix.lower() not in (".csv", *_JSON_LINES):
        raise click.BadParameter(
            f"{what} must end in .csv or .jsonl (or .ndjson)", param_hint=what
        )


@click.command()
@client_options
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
    "--concurrency",
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    type=click.IntRange(1, 512),
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
    api: ClientOptions,
    /,
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
                send_file(
                    journal,
                    input_file,
                    output,
                    shared,
                    api=api,
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
