"""The commands about one message at a time: ``send``, ``status`` and ``wait``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from .._models import MessageReceipt
from ._common import ClientOptions, client_options, describe, run
from ._exit import ExitCode
from ._fields import message_from_options, message_options


__all__ = ["send", "status", "wait"]


@click.command()
@client_options
@message_options(required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def send(
    ctx: click.Context, api: ClientOptions, /, as_json: bool, **fields: Any
) -> int:
    """Send one message and print its message ID."""

    async def main() -> int:
        message = message_from_options(fields)
        client = api.client()
        async with client:
            message_id = await client.send_message(message)
        click.echo(json.dumps({"message_id": message_id}) if as_json else message_id)
        return int(ExitCode.OK)

    return run(ctx, main())


def _receipt_dict(receipt: MessageReceipt) -> dict[str, Any]:
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


def _receipt_line(receipt: MessageReceipt) -> str:
    """A receipt as one line of text."""
    line = f"{receipt.message_id}\t{receipt.status.name.lower()}"
    if receipt.sms_message_status is not None:
        line += (
            f"\tsms {receipt.sms_message_id} {receipt.sms_message_status.name.lower()}"
        )
    return line


def _receipt(receipt: MessageReceipt, as_json: bool) -> str:
    return json.dumps(_receipt_dict(receipt)) if as_json else _receipt_line(receipt)


@click.command()
@client_options
@click.argument("message_ids", nargs=-1, required=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_context
def status(
    ctx: click.Context,
    api: ClientOptions,
    /,
    message_ids: Sequence[int],
    as_json: bool,
) -> int:
    """Print the status of messages sent in the last 5 days."""

    async def main() -> int:
        code = ExitCode.OK
        client = api.client()
        lookups = client.get_message_statuses(message_ids, ordered=True)
        async with client, lookups as results:
            async for result in results:
                if result.receipt is not None:
                    click.echo(_receipt(result.receipt, as_json))
                    continue
                assert result.error is not None  # noqa: S101 - not ok
                error_code, message = describe(result.error)
                code = code or error_code
                click.echo(f"error: {result.message_id}: {message}", err=True)
        return int(code)

    return run(ctx, main())


@click.command()
@client_options
@click.argument("message_id", type=click.IntRange(min=0))
@click.option(
    "--timeout",
    # The defaults of `AsyncViberClient.wait_for_status` (`_constants` has
    # none for them).
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
    api: ClientOptions,
    /,
    message_id: int,
    timeout: float,
    interval: float,
    as_json: bool,
) -> int:
    """Wait until a message's status is final, then print it."""

    async def main() -> int:
        client = api.client()
        async with client:
            receipt = await client.wait_for_status(
                message_id, timeout=timeout, poll_initial=interval
            )
        click.echo(_receipt(receipt, as_json))
        return int(ExitCode.OK)

    return run(ctx, main())
