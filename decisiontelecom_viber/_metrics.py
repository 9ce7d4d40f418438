"""Counters: per client (`ClientMetrics`) and per bulk call (`BulkSummary`).

Counting is a few integer additions per attempt, on a mutable `Tally`; users
see frozen snapshots, to feed their own metrics. A bulk call's counters are
found through its workers' context (`_context.worker`), so that anything
sending through the client's public methods from a bulk worker —
`SendOnceGuard` among them — counts into that call's summary.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs


__all__ = ["BulkSummary", "ClientMetrics", "Tally"]


class Tally:
    """Mutable counters, updated on the hot path (one per client, one per bulk)."""

    __slots__ = ("attempts", "limiter_wait", "limiter_waits", "rate_limited", "retries")

    def __init__(self) -> None:
        self.attempts = 0
        self.retries = 0
        self.rate_limited = 0
        self.limiter_waits = 0
        self.limiter_wait = 0.0


@attrs.frozen
class ClientMetrics:
    """A snapshot of a client's counters since it was created.

    Attributes:
        attempts: Requests sent (each retry is one more).
        retries: Retries scheduled.
        rate_limited: 429 answers received.
        limiter_waits: Attempts that had to wait for the rate limiter.
        limiter_wait: Seconds spent waiting for the rate limiter, summed over
            attempts.
        current_rate: The limiter's rate now (requests/s), None if unlimited.
        estimated_limit: The server's limit as the limiter last measured it.
    """

    attempts: int
    retries: int
    rate_limited: int
    limiter_waits: int
    limiter_wait: float
    current_rate: float | None
    estimated_limit: float | None


@attrs.frozen
class BulkSummary:
    """Where a bulk call stands (final once ``done``).

    Attributes:
        total: Items finished so far (results yielded or ready), not the
            number of inputs: a stream reads its input lazily and may not
            know that number. Equal to it once the stream is done.
        outcomes: Items per outcome (``"sent"``, ``"failed"``, ``"unknown"``
            for sends; ``"ok"``, ``"failed"`` for status lookups).
        attempts: Requests sent for these items, retries included.
        retries: Retries among them.
        rate_limited: 429 answers received for them.
        limiter_wait: Seconds their attempts waited for the rate limiter, summed.
        elapsed: Seconds since the call started.
        done: Whether every item has a result.
    """

    total: int
    outcomes: Mapping[str, int]
    attempts: int
    retries: int
    rate_limited: int
    limiter_wait: float
    elapsed: float
    done: bool

    @property
    def sent(self) -> int:
        """Messages the API accepted."""
        return self.outcomes.get("sent", 0)

    @property
    def failed(self) -> int:
        """Items that definitely failed."""
        return self.outcomes.get("failed", 0)

    @property
    def unknown(self) -> int:
        """Messages that may or may not have been sent."""
        return self.outcomes.get("unknown", 0)

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0
