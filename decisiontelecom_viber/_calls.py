"""The calls in flight, and which of them have a request on the wire.

A call may be *on the wire* from the moment its request may start leaving
the process (the transport's wire signal, or the start of the exchange when
the transport gives none) until its answer or failure. Closing aborts every
call that is not on the wire — now, or later when one comes off it to wait
for a retry — and waits until every call has ended.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ._cancel import cancel_for, ours
from ._limits import Permit
from ._telemetry import CallSpan


__all__ = ["Call", "Calls", "abort"]

_ABORTED = "the client is closing"


class Call:
    """One call in flight.

    Attributes:
        task: The task running it.
        exchanging: Whether its current attempt is in the exchange.
        tracked: Whether the transport said it started the request (then
            it also says when the request goes on the wire); without that,
            a request in the exchange may be on the wire at any moment.
        wrote: Whether the transport handed a connection to the current
            attempt's request (from then on it may be on the wire).
        aborted: Whether closing cancelled it (before anything was written).
        maybe_processed: An earlier attempt may have been processed (only
            after retrying an unknown outcome, which a policy must opt into).
        first_permit: A bulk item's first permit, taken before its deadline
            starts, and when it was granted.
        attempts: Requests built for it so far.
        in_doubt: Whether a request of it may have reached the API and was
            not refused for sure since.
        span: Its OpenTelemetry span (None: not traced).
    """

    __slots__ = (
        "abort_reason",
        "aborted",
        "attempts",
        "exchanging",
        "first_granted_at",
        "first_permit",
        "in_doubt",
        "maybe_processed",
        "span",
        "task",
        "tracked",
        "wrote",
    )

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.exchanging = False
        self.tracked = False
        self.wrote = False
        self.aborted = False
        self.abort_reason = ""
        self.attempts = 0
        self.in_doubt = False
        self.span: CallSpan | None = None
        self.maybe_processed = False
        self.first_permit: Permit | None = None
        self.first_granted_at = 0.0

    def started(self) -> None:
        """The transport started the request (a `_transport.WireSignal`)."""
        self.tracked = True

    def on_the_wire(self) -> None:
        """The transport handed the request a connection: it may leave now."""
        self.wrote = True

    @property
    def may_be_on_the_wire(self) -> bool:
        """Whether some of the current request may have left the process."""
        return self.exchanging and (self.wrote or not self.tracked)


def abort(call: Call, reason: str = "") -> None:
    """Cancel *call*, which has nothing on the wire: it raises `ClientClosedError`.

    (Or `OutcomeUnknownError`, when an earlier attempt may have been
    processed: `Pipeline.run` decides.) *reason* words the error.
    """
    if not call.aborted and call.task is not None and cancel_for(call.task, _ABORTED):
        call.aborted = True
        call.abort_reason = reason


class Running(Protocol):
    """Where a bulk worker shows the call it runs (`WorkerContext`)."""

    call: Call | None
    sent_something: bool


class Calls:
    """The calls of one client."""

    __slots__ = ("_calls", "_changed", "closed")

    def __init__(self) -> None:
        self._calls: set[Call] = set()
        self._changed: asyncio.Event | None = None
        self.closed = False

    def start(self, context: Running | None) -> Call:
        """A new call of the current task, shown in its worker's *context*."""
        call = Call(asyncio.current_task())
        self._calls.add(call)
        if context is not None:
            context.call = call
        return call

    def finish(self, call: Call, context: Running | None) -> None:
        """*call* has ended; its worker's *context* no longer shows it."""
        self._calls.discard(call)
        if context is not None and context.call is call:
            context.call = None
        self._notify()

    def begin_exchange(self, call: Call) -> None:
        call.exchanging = True
        call.tracked = call.wrote = False

    def end_exchange(self, call: Call, context: Running | None) -> None:
        """*call*'s exchange ended; its worker's *context* learns if it wrote."""
        if call.may_be_on_the_wire and context is not None:
            context.sent_something = True
        call.exchanging = False
        self._notify()

    def take_cancel(self, call: Call, error: asyncio.CancelledError) -> bool:
        """Consume the cancellation `abort` sent; False if the caller's came too."""
        if not call.aborted or call.task is None:
            return False
        return ours(call.task, error, _ABORTED)

    async def close(self) -> None:
        """Abort the calls not on the wire; wait until every call has ended."""
        self.closed = True
        current = asyncio.current_task()
        if self._changed is None:
            self._changed = asyncio.Event()
        while True:
            others = [call for call in self._calls if call.task is not current]
            for call in others:
                if not call.may_be_on_the_wire:
                    abort(call)
            if not others:
                return
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
