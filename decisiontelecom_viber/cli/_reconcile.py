"""Unknown bulk rows settled by the API's own status callbacks.

``bulk --callback-secret S`` signs each row's callback URL with a reference
``<run ID>:<row>`` (the run ID is the journal's). A status callback whose
token matches (a `CallbackReceiver` with *S*) and whose reference names a
row of this journal proves that row was accepted, with its message ID:
`RowReconciler` turns the row from ``unknown`` (or left ``writing`` by a
crash) into ``sent``, appending the record to the journal. A row still on
the wire when its callback comes is settled by `Job` when its answer is
lost. Nothing else counts: unsigned or forged callbacks are refused by the
receiver (403), and those of other runs or rows without a doubt are
ignored; a callback naming another ID than a sent row's is a conflict,
logged, never applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable

import attrs
import click

from .._callbacks import StatusCallback
from .._errors import ConfigurationError, ValidationError
from .._models import ViberMessage
from .._receiver import CallbackReceiver
from .._signing import signed_callback_url
from ._job import Job
from ._journal import Journal, RowResult


__all__ = [
    "Callbacks",
    "RowReconciler",
    "await_callbacks",
    "listening",
    "parse_address",
]

logger = logging.getLogger("decisiontelecom_viber")


def reference_for(run_id: str, row: int) -> str:
    """The callback reference of *row* of the run *run_id*."""
    return f"{run_id}:{row}"


@attrs.define
class Counts:
    """What the reconciler did."""

    settled: int = 0
    conflicts: int = 0
    ignored: int = 0


class RowReconciler:
    """The ``on_status`` handler settling a journal's unknown rows.

    Args:
        journal: The run's journal (its ``run_id`` names the references).
        called_back: Where message IDs of rows still without a result are
            kept (`Job.called_back`), for `Job` to use when their answer is
            lost.
        on_settled: Called with each row settled.
    """

    def __init__(
        self,
        journal: Journal,
        called_back: dict[int, int],
        on_settled: Callable[[int], None] = lambda row: None,
    ) -> None:
        self._journal = journal
        self._called_back = called_back
        self._on_settled = on_settled
        self.counts = Counts()
        self.changed = asyncio.Event()

    def unknown_rows(self) -> set[int]:
        """Rows in doubt now: unknown results, and rows left on the wire."""
        journal = self._journal
        unknown = {r.row for r in journal.results.values() if r.outcome == "unknown"}
        return unknown | journal.in_flight

    async def __call__(self, event: StatusCallback) -> None:
        row = self._row_of(event)
        if row is None:
            self.counts.ignored += 1
            return
        journal = self._journal
        current = journal.results.get(row)
        if (current is None and row not in journal.in_flight) or (
            current is not None and current.outcome == "failed"
        ):
            # On the wire now (or not sent yet; a failed row is sent again
            # by this run): its answer decides, unless it is lost.
            self._called_back.setdefault(row, event.message_id)
            return
        if current is not None and current.outcome != "unknown":
            if current.message_id != event.message_id:
                self.counts.conflicts += 1
                logger.error(
                    "a signed status callback says row %d was sent as message "
                    "%d, but the journal says %s: not changed",
                    row,
                    event.message_id,
                    current.message_id or current.outcome,
                )
            return
        journal.record(RowResult(row, "sent", event.message_id))
        self.counts.settled += 1
        self._on_settled(row)
        self.changed.set()

    def _row_of(self, event: StatusCallback) -> int | None:
        reference = event.reference
        if not event.authenticated or not reference:
            return None
        run_id, _, row = reference.rpartition(":")
        if run_id != self._journal.run_id or not row.isdigit():
            return None
        return int(row)

    async def wait_for_all(self, timeout: float) -> None:
        """Wait until no row is in doubt, or *timeout* seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.unknown_rows() and loop.time() < deadline:
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), deadline - loop.time())


@attrs.frozen
class Callbacks:
    """How a run signs and receives its rows' status callbacks."""

    secret: str | None
    address: tuple[str, int] | None
    wait: float

    def sign(self, message: ViberMessage, journal: Journal, row: int) -> ViberMessage:
        """*message* with its callback URL signed for *row* (if asked)."""
        if self.secret is None or message.callback_url is None:
            return message
        try:
            url = signed_callback_url(
                message.callback_url,
                self.secret,
                reference=reference_for(journal.run_id or "", row),
            )
        except ConfigurationError as error:  # the URL has a ref already
            raise ValidationError("callback_url", str(error)) from None
        return attrs.evolve(message, callback_url=url)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a pair.

    Raises:
        click.BadParameter: Not of that form.
    """
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter("must be HOST:PORT", param_hint="--listen")
    return host, int(port)


async def await_callbacks(job: Job, reconciler: RowReconciler, wait: float) -> None:
    """After the run: the callbacks of the rows still unknown, for *wait* s."""
    waiting = reconciler.unknown_rows()
    if not waiting or wait <= 0 or job.stopped is not None:
        return
    click.echo(
        f"waiting up to {wait:g} s for the callbacks of {len(waiting)} unknown "
        "row(s) (Ctrl-C to stop)",
        err=True,
    )
    done = asyncio.ensure_future(reconciler.wait_for_all(wait))
    stopped = asyncio.ensure_future(job.wait_stopped())
    try:
        await asyncio.wait({done, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        done.cancel()
        stopped.cancel()
    settled = len(waiting - reconciler.unknown_rows())
    click.echo(f"callbacks settled {settled} unknown row(s) as sent", err=True)


@contextlib.asynccontextmanager
async def listening(
    reconciler: RowReconciler, address: tuple[str, int], secret: str
) -> AsyncIterator[str]:
    """Serve a `CallbackReceiver` for *reconciler* at *address* in this loop.

    Yields the URL it listens at.

    Raises:
        OSError: The address cannot be listened on.
    """
    import uvicorn  # the cli extra has it

    receiver = CallbackReceiver(on_status=reconciler, secret=secret)
    host, port = address
    # Bound here: an address in use is an OSError, not uvicorn's exit.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(receiver, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    # The run's own signal handlers stay in charge (uvicorn's would replace
    # them for as long as it serves).
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise OSError(f"cannot listen on {host}:{port}")
            await asyncio.sleep(0.01)
        bound = sock.getsockname()
        yield f"http://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
