"""Counters: per client (`ClientMetrics`) and per bulk call (`BulkSummary`).

Counting is a few integer additions per attempt, on a mutable `Tally`; users
see frozen snapshots, to feed their own metrics. A bulk call's counters are
found through its workers' context (`_context.worker`), so that anything
sending through the client's public methods from a bulk worker —
`SendOnceGuard` among them — counts into that call's summary.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import attrs

from ._telemetry import DURATION_BOUNDS


__all__ = ["BulkSummary", "ClientMetrics", "LatencyHistogram", "Tally"]


class Tally:
    """Mutable counters, updated on the hot path (one per client, one per bulk)."""

    __slots__ = (
        "attempts",
        "limiter_wait",
        "limiter_waits",
        "outcomes",
        "rate_limited",
        "retries",
        "send_durations",
        "send_max",
        "send_total",
    )

    def __init__(self) -> None:
        self.attempts = 0
        self.retries = 0
        self.rate_limited = 0
        self.limiter_waits = 0
        self.limiter_wait = 0.0
        self.outcomes = {"sent": 0, "failed": 0, "unknown": 0}
        self.send_durations = [0] * (len(DURATION_BOUNDS) + 1)
        self.send_total = 0.0
        self.send_max = 0.0

    def count_send(self, outcome: str, duration: float) -> None:
        """Count a send call's outcome and duration."""
        self.outcomes[outcome] += 1
        self.send_durations[bisect.bisect_left(DURATION_BOUNDS, duration)] += 1
        self.send_total += duration
        self.send_max = max(self.send_max, duration)

    def send_latency(self) -> LatencyHistogram:
        """A snapshot of the send durations."""
        return LatencyHistogram(
            DURATION_BOUNDS,
            tuple(self.send_durations),
            total=self.send_total,
            max=self.send_max,
        )


@attrs.frozen
class LatencyHistogram:
    """Durations (seconds) in buckets, as OpenTelemetry histograms hold them.

    Attributes:
        bounds: The buckets' upper bounds (inclusive), ascending.
        counts: Calls per bucket; one more than *bounds* (the last is above
            the highest bound).
        total: The durations' sum.
        max: The longest.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float
    max: float

    @property
    def count(self) -> int:
        """How many durations."""
        return sum(self.counts)

    @property
    def mean(self) -> float | None:
        """The mean duration (None before the first)."""
        count = self.count
        return self.total / count if count else None

    def percentile(self, percent: float) -> float | None:
        """An estimate of the *percent*-th percentile (None before the first).

        Interpolated within its bucket (never above `max`), as Prometheus's
        ``histogram_quantile`` does.
        """
        if not 0 <= percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        count = self.count
        if not count:
            return None
        rank = percent / 100 * count
        seen = 0
        for index, in_bucket in enumerate(self.counts):
            if in_bucket and seen + in_bucket >= rank:
                low = self.bounds[index - 1] if index else 0.0
                high = self.bounds[index] if index < len(self.bounds) else self.max
                estimate = low + (high - low) * max(rank - seen, 0) / in_bucket
                return min(estimate, self.max)
            seen += in_bucket
        return self.max  # pragma: no cover - the loop ends at the last count


class _Outcomes:
    """``sent``, ``failed`` and ``unknown``, read from ``outcomes``."""

    __slots__ = ()
    outcomes: Mapping[str, int]

    @property
    def sent(self) -> int:
        """Messages the API accepted."""
        return self.outcomes.get("sent", 0)

    @property
    def failed(self) -> int:
        """Sends (or items) that definitely failed: nothing was sent."""
        return self.outcomes.get("failed", 0)

    @property
    def unknown(self) -> int:
        """Messages that may or may not have been sent."""
        return self.outcomes.get("unknown", 0)


@attrs.frozen
class ClientMetrics(_Outcomes):
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
        outcomes: Sends per outcome (``"sent"``, ``"failed"``, ``"unknown"``),
            bulk items included.
        send_latency: How long sends took, start to outcome, retries and
            limiter waits included.
    """

    attempts: int
    retries: int
    rate_limited: int
    limiter_waits: int
    limiter_wait: float
    current_rate: float | None
    estimated_limit: float | None
    outcomes: Mapping[str, int] = attrs.field(factory=dict)
    send_latency: LatencyHistogram | None = None


@attrs.frozen
class BulkSummary(_Outcomes):
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
    def rate(self) -> float:
        """Items per second so far."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0
