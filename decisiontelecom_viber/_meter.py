"""What came of calls and attempts: the client's counters and telemetry.

The pipeline decides *what* to count; this module holds *where* it goes:
the client's `Tally`, the bulk stream's own (when the call is one of its
items), and OpenTelemetry. Kept apart from the attempt runner so that the
order of an attempt reads without the bookkeeping around it, and so that a
telemetry failure is contained in one place: it is logged, never raised.
"""

from __future__ import annotations

import logging

from ._calls import Call
from ._clock import Clock
from ._context import worker
from ._metrics import Tally
from ._outcomes import call_outcome
from ._telemetry import Instrumentation


__all__ = ["Meter"]

logger = logging.getLogger("decisiontelecom_viber")


class Meter:
    """Counts and traces what the pipeline's calls and attempts did.

    Args:
        tally: The client's counters.
        telemetry: The client's OpenTelemetry instrumentation (None: none).
        clock: The client's clock (call durations).
    """

    __slots__ = ("_clock", "_tally", "_telemetry")

    def __init__(
        self, tally: Tally, telemetry: Instrumentation | None, clock: Clock
    ) -> None:
        self._tally = tally
        self._telemetry = telemetry
        self._clock = clock

    def observe(
        self,
        idempotent: bool,
        call: Call,
        started: float,
        error: BaseException | None,
        message_type: str | None,
        message_id: int | None,
    ) -> None:
        """Count what came of *call* (and end its span)."""
        outcome = call_outcome(idempotent, error, in_doubt=call.in_doubt)
        duration = self._clock.monotonic() - started
        if message_type is not None:
            self._tally.count_send(outcome, duration)
        span = call.span
        if span is not None:
            try:
                span.end(
                    outcome,
                    duration,
                    attempts=call.attempts,
                    message_type=message_type,
                    message_id=message_id,
                    error=error,
                )
            except Exception:
                logger.exception("could not record a call's telemetry")

    def count(
        self,
        counter: str,
        amount: float = 1,
        *,
        operation: str | None = None,
        call: Call | None = None,
    ) -> None:
        """Add *amount* to *counter*: the client's, the bulk stream's, OTel's.

        OpenTelemetry gets it only with the *operation* and a traced *call*.
        """
        context = worker.get()
        for tally in (self._tally, context.tally if context else None):
            if tally is not None:
                setattr(tally, counter, getattr(tally, counter) + amount)
        if operation is not None and call is not None and call.span is not None:
            # (No span: no SDK is configured, nothing would be recorded.)
            self.count_otel(counter, amount, operation)

    def count_otel(self, counter: str, amount: float, operation: str) -> None:
        """Record *amount* of *counter* with OpenTelemetry (failures logged)."""
        if self._telemetry is not None:
            try:
                self._telemetry.count(counter, amount, operation)
            except Exception:
                logger.exception("could not record a measurement")
