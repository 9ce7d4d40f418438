"""``decisiontelecom-viber reconcile``: a run's unknown rows, settled by callbacks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from ._exit import ExitCode
from ._journal import Journal, JournalError, JournalLockedError, RowResult
from ._reconcile import RowReconciler, listening, parse_address
from ._results import write_results


__all__ = ["reconcile"]


@click.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--listen",
    metavar="HOST:PORT",
    required=True,
    help="Where to receive the status callbacks (behind the public "
    "--callback-url the run signed).",
)
@click.option(
    "--callback-secret",
    envvar="DECISIONTELECOM_CALLBACK_SECRET",
    required=True,
    help="The secret the run signed its callback URLs with. Env: "
    "DECISIONTELECOM_CALLBACK_SECRET.",
)
@click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for the callbacks of the unknown rows.",
)
def reconcile(output: Path, listen: str, callback_secret: str, timeout: float) -> int:
    """Turn the unknown rows of a bulk run's OUTPUT into sent ones, from callbacks.

    Listens for the status callbacks of the run's rows (signed by `bulk
    --callback-secret`): each one whose row is unknown proves it was
    accepted, with its message ID, and is recorded in the journal and in
    OUTPUT. Stops when no row is unknown, after --timeout, or on Ctrl-C. A
    row the API never accepted gets no callback and stays unknown. Exit 0
    when no row is left unknown, 9 otherwise.
    """
    address = parse_address(listen)
    journal_path = output.with_name(output.name + ".journal")
    if not journal_path.exists():
        click.echo(
            f"error: {journal_path} does not exist: nothing to reconcile", err=True
        )
        return int(ExitCode.INVALID)
    try:
        journal = Journal(journal_path, None, resume=True)
    except JournalLockedError as error:
        click.echo(f"error: {error}", err=True)
        return int(ExitCode.LOCKED)
    except (JournalError, OSError) as error:
        click.echo(f"error: {error}", err=True)
        return int(ExitCode.INVALID)
    try:
        if journal.run_id is None:
            click.echo(
                f"error: {journal_path} was made by an older version: its rows "
                "carry no reference to reconcile by",
                err=True,
            )
            return int(ExitCode.INVALID)
        reconciler = RowReconciler(journal, {})
        waiting = reconciler.unknown_rows()
        if waiting:
            try:
                asyncio.run(_listen(reconciler, address, callback_secret, timeout))
            except KeyboardInterrupt:
                click.echo("stopped", err=True)
            except OSError as error:
                click.echo(f"error: cannot listen on {listen}: {error}", err=True)
                return int(ExitCode.INVALID)
        for row in sorted(journal.in_flight):  # left on the wire, still unknown
            journal.record(
                RowResult(
                    row,
                    "unknown",
                    error_type="OutcomeUnknownError",
                    error="in flight when its run stopped; no callback came",
                )
            )
        write_results(output, journal.results)
        left = reconciler.unknown_rows()
        click.echo(
            f"settled {len(waiting - left)} row(s) as sent; {len(left)} still "
            f"unknown; results in {output}",
            err=True,
        )
        return int(ExitCode.PARTIAL if left else ExitCode.OK)
    finally:
        journal.close()


async def _listen(
    reconciler: RowReconciler, address: tuple[str, int], secret: str, timeout: float
) -> None:
    async with listening(reconciler, address, secret) as url:
        click.echo(
            f"receiving callbacks at {url} for {len(reconciler.unknown_rows())} "
            "unknown row(s)",
            err=True,
        )
        await reconciler.wait_for_all(timeout)
