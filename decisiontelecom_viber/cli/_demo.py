"""``decisiontelecom-viber demo``: the whole SDK end to end, with no account.

It starts the sandbox on loopback (realistic latency, a rate limit, a few
faults), sends a few hundred mixed messages through the real client,
receives status callbacks and 2Way replies through a `CallbackReceiver`
(signed callback URLs), then prints what happened.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from .._callbacks import IncomingMessage, StatusCallback
from .._client import AsyncViberClient
from .._enums import MessageStatus, MessageType, SourceType
from .._metrics import BulkSummary
from .._models import SendResult, ViberMessage
from .._outcomes import SendOutcome
from .._receiver import CallbackReceiver
from ..sandbox import SandboxConfig, serve_app, serve_sandbox
from ._common import run
from ._exit import ExitCode


__all__ = ["demo"]

DEMO_CONFIG = SandboxConfig(
    access_key="demo-access-key",
    rate_limit=100,
    burst=10,
    latency=0.03,
    latency_distribution="lognormal",
    fault_500=0.02,
    fault_502_html=0.01,
    fault_disconnect_after=0.005,
    time_scale=20.0,
    sent_after=1.0,
    delivered_after=2.0,
    seen_after=3.0,
    seen_fraction=0.6,
    undelivered_fraction=0.05,
    rejected_fraction=0.02,
    undelivered_after=20.0,
    sms_delivered_after=2.0,
    reply_fraction=1.0,
    reply_after=2.0,
    reply_text="Yes, call me back please",
    seed=2024,
)


def demo_messages(count: int) -> Iterator[ViberMessage | dict[str, Any]]:
    """A realistic mix, and exactly one invalid message (the 7th)."""
    for n in range(count):
        receiver = f"38050{n:07d}"
        if n == 6:
            # Invalid on purpose: a promotional type without its image.
            yield {
                "sender": "Acme",
                "receiver": receiver,
                "message_type": int(MessageType.TEXT_IMAGE_BUTTON),
                "source_type": int(SourceType.PROMOTIONAL),
                "text": "This one has no image and never leaves the client",
            }
        elif n % 10 < 5:
            yield ViberMessage.transactional(
                sender="Acme",
                receiver=receiver,
                text=f"Your code is {n:06d}",
                text_sms=f"Your code is {n:06d}" if n % 2 else None,
                validity_period=60,
            )
        elif n % 10 < 8:
            yield ViberMessage.promotional(
                sender="Acme",
                receiver=receiver,
                text="Spring sale: 20% off everything this week",
                image_url="https://cdn.example.com/spring-sale.png",
                button_caption="Shop now",
                button_action="https://shop.example.com/sale",
            )
        else:
            yield ViberMessage(
                sender="Acme",
                receiver=receiver,
                message_type=MessageType.TEXT_2WAY,
                source_type=SourceType.PROMOTIONAL,
                text="Your order is ready. Shall we deliver it tomorrow?",
            )


class Inbox:
    """What the callback receiver got (its handlers run in the server's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.final: dict[int, MessageStatus] = {}
        self.status_callbacks = 0
        self.replies: list[IncomingMessage] = []

    async def on_status(self, event: StatusCallback) -> None:
        with self.lock:
            self.status_callbacks += 1
            if event.is_final:
                self.final[event.message_id] = event.status

    async def on_message(self, event: IncomingMessage) -> None:
        with self.lock:
            self.replies.append(event)


@click.command()
@click.option(
    "--messages",
    "count",
    default=300,
    show_default=True,
    type=click.IntRange(10, 5000),
    help="How many messages to send.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def demo(ctx: click.Context, /, count: int, no_progress: bool) -> int:
    """Run the SDK end to end against the embedded sandbox (no account needed)."""
    return run(ctx, run_demo(count, progress=not no_progress))


async def run_demo(count: int, *, progress: bool) -> int:
    """Run the demo; return the exit code."""
    console = Console()
    started = time.monotonic()
    inbox = Inbox()
    secret = secrets.token_urlsafe(32)
    receiver = CallbackReceiver(
        on_status=inbox.on_status,
        on_message=inbox.on_message,
        secret=secret,
        deduplicate=10_000,
    )
    console.print(
        "[bold]Demo:[/] a sandbox API (100 requests/s, ~30 ms latency, 3 % faults) "
        "and a callback receiver, both on loopback."
    )
    # The receiver outlives the sandbox: late callbacks (a "seen" after the
    # wait below) must not meet a closed port and count as undelivered.
    async with serve_app(receiver) as hooks, serve_sandbox(DEMO_CONFIG) as api:
        async with AsyncViberClient(
            api.access_key,
            base_url=api.base_url,
            callback_url=f"{hooks.root_url}/viber/callbacks",
            callback_secret=secret,
        ) as client:
            results = await _send(client, count, progress, console)
            sent = {r.message_id: r for r in results if r.message_id is not None}
            await _wait_for_callbacks(inbox, set(sent), deadline=10.0)
            statuses = collections.Counter(
                [
                    r.receipt.status.name.lower()
                    async for r in client.get_message_statuses(list(sent))
                    if r.receipt is not None
                ]
            )
            metrics = client.metrics
        stats = api.sandbox.stats
    _report(
        console, results, statuses, inbox, metrics, stats, time.monotonic() - started
    )
    return int(ExitCode.OK)


async def _send(
    client: AsyncViberClient, count: int, progress: bool, console: Console
) -> list[SendResult]:
    bar = Progress(
        TextColumn("[bold]sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>5.0f} msg/s  {task.fields[counts]}"),
        console=console,
        disable=not progress,
    )
    task = bar.add_task("send", total=count, rate=0.0, counts="")

    def update(summary: BulkSummary) -> None:
        bar.update(
            task,
            completed=summary.total,
            rate=summary.rate,
            counts=f"ok {summary.sent}  failed {summary.failed}  "
            f"unknown {summary.unknown}  429s {summary.rate_limited}",
        )

    with bar:
        async with client.send_messages(
            demo_messages(count),
            concurrency=32,
            on_progress=update,
            progress_interval=0.1,
        ) as stream:
            results = [result async for result in stream]
    return results


async def _wait_for_callbacks(inbox: Inbox, sent: set[int], deadline: float) -> None:
    """Wait (real time: the sandbox's lifecycle runs in its own thread)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with inbox.lock:
            done = sent <= inbox.final.keys()
            replies = len(inbox.replies)
        if done and replies:
            return
        await asyncio.sleep(0.1)


def _report(
    console: Console,
    results: list[SendResult],
    statuses: collections.Counter[str],
    inbox: Inbox,
    metrics: Any,
    stats: Any,
    elapsed: float,
) -> None:
    outcomes = collections.Counter(r.outcome for r in results)
    undelivered = stats.callbacks_undelivered
    invalid = [r for r in results if r.outcome is SendOutcome.FAILED]
    table = Table(title="What happened", show_header=False)
    table.add_column("what")
    table.add_column("how many", justify="right")
    table.add_row("messages given", str(len(results)))
    table.add_row("sent (accepted by the API)", str(outcomes[SendOutcome.SENT]))
    table.add_row("failed (never sent)", str(outcomes[SendOutcome.FAILED]))
    table.add_row("outcome unknown (not resent)", str(outcomes[SendOutcome.UNKNOWN]))
    table.add_row("retries", str(metrics.retries))
    table.add_row("429s absorbed", str(metrics.rate_limited))
    faults = ", ".join(
        f"{k.removeprefix('fault_')} {v}" for k, v in sorted(stats.faults.items())
    )
    table.add_row("faults injected by the sandbox", faults or "none")
    limit = metrics.estimated_limit
    table.add_row(
        "rate limit discovered",
        f"{limit:.0f}/s (really 100/s)" if limit else "not needed",
    )
    table.add_row("duplicates at the API", str(stats.duplicates))
    table.add_row("status callbacks received", str(inbox.status_callbacks))
    table.add_row("callbacks the sandbox could not deliver", str(undelivered))
    table.add_row("2Way replies received", str(len(inbox.replies)))
    table.add_row("seconds", f"{elapsed:.1f}")
    console.print(table)

    final = Table(title="Final statuses")
    final.add_column("status")
    final.add_column("messages", justify="right")
    for name, number in statuses.most_common():
        final.add_row(name, str(number))
    console.print(final)

    if undelivered:
        console.print(
            f"[red]{undelivered} callback(s) never reached the receiver[/]: "
            "run the demo with -v to see why (the sandbox logs each one)"
        )
    for result in invalid[:3]:
        console.print(f"[yellow]not sent[/] (item {result.index}): {result.error}")
    for result in [r for r in results if r.outcome is SendOutcome.UNKNOWN][:3]:
        console.print(
            f"[yellow]outcome unknown[/] (item {result.index}): the connection broke "
            "after the request was written; not resent, to avoid a paid duplicate"
        )
    if inbox.replies:
        reply = inbox.replies[0]
        console.print(
            f"[green]a reply[/] to message {reply.reply_to_message_id}: {reply.text!r}"
        )
