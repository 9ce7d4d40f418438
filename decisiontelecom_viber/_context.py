"""What callers share with the request pipeline, through context variables.

A `ResultStream` worker sets `worker` once, in its own task. Every call made
in that task — through any public method of the client, so `SendOnceGuard`
too — then counts its attempts, retries and limiter waits into the stream's
`Tally`, shows which call it is running (``call``: whether its request may
be on the wire), and stops before writing anything once the stream is closed
(``stopping``).

`before_write` holds what must happen immediately before a request of the
current task is written (a `SendOnceGuard` marks its record "on the wire",
the bulk CLI journals the row as "writing"): the pipeline awaits it before
each attempt's exchange, and writes nothing if it raises. A hook with a
``not_written`` method is told when an attempt was refused for sure (a
429, the API's own 5xx body, a connection that never reached it) and a
retry will wait: until it is called again, nothing is on the wire.

`wire_witness` holds a `WireWitness` that the sync client gives each of its
calls: the pipeline sets ``written`` when an exchange ends with some of its
request possibly out (an answer, an error, a cancellation), and clears it
when that attempt was refused for sure, so that a Ctrl-C can be told "may
have been sent" or "nothing sent" after the call's task has ended.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ._metrics import Tally


if TYPE_CHECKING:
    from ._calls import Call


__all__ = [
    "WireWitness",
    "WorkerContext",
    "before_write",
    "wire_witness",
    "worker",
]

BeforeWrite = Callable[[], "Awaitable[None] | None"]


class WorkerContext:
    """The shared state of one bulk worker task.

    Attributes:
        tally: The stream's counters.
        call: The call the worker is running, if any.
        sent_something: A request of the current item may have left (the
            worker may be recording what came of it, as `SendOnceGuard` does).
        stopping: The stream was closed: write nothing more.
    """

    __slots__ = ("call", "sent_something", "stopping", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.call: Call | None = None
        self.sent_something = False
        self.stopping = False

    @property
    def on_the_wire(self) -> bool:
        """Whether the worker's current request may have left the process."""
        return self.call is not None and self.call.may_be_on_the_wire


worker: contextvars.ContextVar[WorkerContext | None] = contextvars.ContextVar(
    "decisiontelecom_viber_worker", default=None
)

before_write: contextvars.ContextVar[BeforeWrite | None] = contextvars.ContextVar(
    "decisiontelecom_viber_before_write", default=None
)


class WireWitness:
    """Whether a request of the current task may have reached the API."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written = False


wire_witness: contextvars.ContextVar[WireWitness | None] = contextvars.ContextVar(
    "decisiontelecom_viber_wire_witness", default=None
)
