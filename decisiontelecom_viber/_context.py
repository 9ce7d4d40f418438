"""What a bulk worker task shares with the request pipeline, through a context variable.

A `ResultStream` worker sets `worker` once, in its own task. Every call made
in that task — through any public method of the client, so `SendOnceGuard`
too — then counts its attempts, retries and limiter waits into the stream's
`Tally`, says whether it has a request on the wire (``writing``), and stops
before writing anything once the stream is closed (``stopping``).
"""

from __future__ import annotations

import contextvars

from ._metrics import Tally


__all__ = ["WorkerContext", "worker"]


class WorkerContext:
    """The shared state of one bulk worker task.

    Attributes:
        tally: The stream's counters.
        writing: Requests of this worker on the wire now (0 or 1).
        stopping: The stream was closed: write nothing more.
    """

    __slots__ = ("stopping", "tally", "writing")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.writing = 0
        self.stopping = False


worker: contextvars.ContextVar[WorkerContext | None] = contextvars.ContextVar(
    "decisiontelecom_viber_worker", default=None
)
