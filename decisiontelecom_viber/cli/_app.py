"""The Click application: global options, error reporting, and the small commands."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import click

from .._client import AsyncViberClient
from .._constants import ACCESS_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from .._errors import (
    APIConnectionError,
    APIError,
    ConfigurationError,
    OutcomeUnknownError,
    StatusTimeoutError,
    ValidationError,
)
from .._models import MessageReceipt
from .._retry import RetryPolicy
from ._exit import ExitCode
from ._fields import message_from_options, message_options


__all__ = ["cli", "run_cli"]

F = TypeVar("F", bound=Callable[..., Any])


# The SDK's errors name its Python API; the command line's name its flags.
_FLAGS = (
    ("pass AsyncViberClient(access_key=...)", "pass --access-key"),
    ("allow_insecure_http=True", "--allow-insecure-http"),
    ("base_url", f"--base-url ({BASE_URL_ENV})"),
)


def _in_flags(text: str) -> str:
    for python, flag in _FLAGS:
        text = text.replace(python, flag)
    return text


def describe(error: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one-line message for an error."""
    if isinstance(error, ConfigurationError):
        return ExitCode.CONFIGURATION, _in_flags(str(error))
    if isinstance(error, ValidationError):
        return ExitCode.INVALID, f"invalid message: {error}"
    if isinstance(error, StatusTimeoutError):
        return ExitCode.TIMEOUT, str(error)
    if isinstance(error, OutcomeUnknownError):
        return ExitCode.OUTCOME_UNKNOWN, (
            f"{error}; check its status before sending it again"
        )
    if isinstance(error, APIError):
        return ExitCode.REFUSED, f"the API refused the request: {error}"
    if isinstance(error, APIConnectionError):
        return ExitCode.UNREACHABLE, str(error)
    name = type(error).__name__
    return ExitCode.ERROR, (
        f"unexpected {name}: {error} (run with --debug for the traceback)"
    )


def run(ctx: click.Context, coroutine: Coroutine[Any, Any, int]) -> int:
    """Run *coroutine*; turn its errors into one readable line and an exit code."""
    try:
        return asyncio.run(coroutine)
    except Exception as error:
        if ctx.obj.get("debug"):
            raise
        code, message = describe(error)
        click.echo(f"error: {message}", err=True)
        return int(code)


def api_options(function: F) -> F:
    """Options of every command that talks to the API."""
    function = click.option(
        "--attempts",
        default=5,
        show_default=True,
        type=click.IntRange(1, 20),
        help="Attempts per request (1 = no retries).",
    )(function)
    function = click.option(
        "--allow-insecure-http",
        is_flag=True,
        help="Allow an http:// base URL that is not loopback (the key then "
        "travels in clear text).",
    )(function)
    function = click.option(
        "--base-url",
        envvar=BASE_URL_ENV,
        show_envvar=True,
        default=DEFAULT_BASE_URL,
        show_default=True,
        help="API root (point it at the sandbox or a proxy).",
    )(function)
    return click.option(
        "--access-key",
        envvar=ACCESS_KEY_ENV,
        show_envvar=True,
        help="Your DecisionTelecom access key.",
    )(function)


def make_client(
    access_key: str | None,
    base_url: str,
    allow_insecure_http: bool,
    attempts: int = 5,
    **options: Any,
) -> AsyncViberClient:
    """A client from the common options (raises ConfigurationError clearly)."""
    return AsyncViberClient(
        access_key,
        base_url=base_url,
        allow_insecure_http=allow_insecure_http,
        retry=RetryPolicy(attempts=attempts),
        **options,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("decisiontelecom_viber").setLevel(level)


@cli.command()
@api_options
@message_options(required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def send(
    ctx: click.Context,
    /,
    access_key: str | None,
    base_url: str,
    allow_insecure_http: bool,
    attempts: int,
    as_json: bool,
    **fields: Any,
) -> int:
    """Send one message and print its message ID."""

    async def main() -> int:
        message = message_from_options(fields)
        client = make_client(access_key, base_url, allow_insecure_http, attempts)
        async with client:
            message_id = await client.send_message(message)
        click.echo(json.dumps({"message_id": message_id}) if as_json else message_id)
        return int(ExitCode.OK)

    return run(ctx, main())


def receipt_dict(receipt: MessageReceipt) -> dict[str, Any]:
    """A receipt as JSON-ready data."""
    return {
        "message_id": receipt.message_id,
        "status": int(receipt.status),
        "status_name": receipt.status.name.lower(),
        "final": receipt.is_final,
        "sms_message_id": receipt.sms_message_id,
        "sms_message_status": (
            None
            if receipt.sms_message_status is None
            else int(receipt.sms_message_status)
        ),
    }


def receipt_line(receipt: MessageReceipt) -> str:
    """A receipt as one line of text."""
    line = f"{receipt.message_id}\t{receipt.status.name.lower()}"
    if receipt.sms_message_status is not None:
        line += (
            f"\tsms {receipt.sms_message_id} {receipt.sms_message_status.name.lower()}"
        )
    return line


@cli.command()
@api_options
@click.argument("message_ids", nargs=-1, required=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_context
def status(
    ctx: click.Context,
    /,
    access_key: str | None,
    base_url: str,
    allow_insecure_http: bool,
    attempts: int,
    message_ids: Sequence[int],
    as_json: bool,
) -> int:
    """Print the status of messages sent in the last 5 days."""

    async def main() -> int:
        code = ExitCode.OK
        client = make_client(access_key, base_url, allow_insecure_http, attempts)
        lookups = client.get_message_statuses(message_ids, ordered=True)
        async with client, lookups as results:
            async for result in results:
                if result.receipt is not None:
                    receipt = result.receipt
                    click.echo(
                        json.dumps(receipt_dict(receipt))
                        if as_json
                        else receipt_line(receipt)
                    )
                    continue
                assert result.error is not None  # noqa: S101 - not ok
                error_code, message = describe(result.error)
                code = code or error_code
                click.echo(f"error: {result.message_id}: {message}", err=True)
        return int(code)

    return run(ctx, main())


@cli.command()
@api_options
@click.argument("message_id", type=click.IntRange(min=0))
@click.option(
    "--timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait in all.",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="First interval between lookups, in seconds, at least 0.5 (it grows "
    "up to 30 s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def wait(
    ctx: click.Context,
    /,
    access_key: str | None,
    base_url: str,
    allow_insecure_http: bool,
    attempts: int,
    message_id: int,
    timeout: float,
    interval: float,
    as_json: bool,
) -> int:
    """Wait until a message's status is final, then print it."""

    async def main() -> int:
        client = make_client(access_key, base_url, allow_insecure_http, attempts)
        async with client:
            receipt = await client.wait_for_status(
                message_id, timeout=timeout, poll_initial=interval
            )
        click.echo(
            json.dumps(receipt_dict(receipt)) if as_json else receipt_line(receipt)
        )
        return int(ExitCode.OK)

    return run(ctx, main())


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def sandbox(arguments: Sequence[str]) -> int:
    """Serve the fake API (sandbox); `sandbox --help` lists its knobs."""
    from ..sandbox._cli import main

    return main(list(arguments), prog="decisiontelecom-viber sandbox")


def run_cli(argv: Sequence[str] | None) -> int:
    """Run the command line without letting Click exit the process."""
    from ._bulk import bulk
    from ._demo import demo
    from ._reconcile_command import reconcile

    cli.add_command(bulk)
    cli.add_command(demo)
    cli.add_command(reconcile)
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
