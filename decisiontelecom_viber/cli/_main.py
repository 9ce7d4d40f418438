"""The Click group, with every command registered when it is imported.

The root of the command line's imports: it imports the commands, and none
of them imports it, so `cli` is complete for whoever imports it (`run_cli`,
a `click.testing.CliRunner`, a docs generator).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from ._bulk import bulk
from ._demo import demo
from ._exit import ExitCode
from ._reconcile_command import reconcile
from ._single import send, status, wait


__all__ = ["cli", "run_cli"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    commands=[send, status, wait, bulk, demo, reconcile],
)
@click.option("--debug", is_flag=True, help="Show tracebacks and the SDK's debug log.")
@click.option("-v", "--verbose", is_flag=True, help="Show retries and pauses.")
@click.version_option(package_name="decisiontelecom-viber")
@click.pass_context
def cli(ctx: click.Context, /, debug: bool, verbose: bool) -> None:
    """Send Viber messages through DecisionTelecom, check statuses, push CSV files.

    The access key comes from --access-key or DECISIONTELECOM_ACCESS_KEY.
    Try it without an account: `decisiontelecom-viber demo`.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    # Retries are routine and counted in summaries: only errors by default.
    # (This sets the level for the whole process, as a program may: a caller
    # running the command line in process keeps it afterwards.)
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("decisiontelecom_viber").setLevel(level)


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def sandbox(arguments: Sequence[str]) -> int:
    """Serve the fake API (sandbox); `sandbox --help` lists its knobs."""
    # Imported when run: only this command needs the sandbox's own parser.
    from ..sandbox._cli import main

    return main(list(arguments), prog="decisiontelecom-viber sandbox")


def run_cli(argv: Sequence[str] | None) -> int:
    """Run the command line without letting Click exit the process.

    Args:
        argv: The arguments after the program name (None: `sys.argv`'s).

    Returns:
        The exit code (see `ExitCode`).
    """
    try:
        result = cli.main(
            args=list(argv) if argv is not None else sys.argv[1:],
            prog_name="decisiontelecom-viber",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as error:
        error.show()
        return int(error.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    return int(result) if isinstance(result, int) else int(ExitCode.OK)
