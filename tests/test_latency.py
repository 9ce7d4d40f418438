"""`LatencyHistogram`: what ``client.metrics.send_latency`` says, table-tested."""

from __future__ import annotations

import pytest

from decisiontelecom_viber import LatencyHistogram
from decisiontelecom_viber._metrics import Tally


BOUNDS = (0.1, 0.5, 1.0)


def histogram(*durations: float) -> LatencyHistogram:
    tally = Tally()
    for duration in durations:
        tally.count_send("sent", duration)
    latency = tally.send_latency()
    # (The tally's own bounds; the table below uses three of its own.)
    counts = [0] * (len(BOUNDS) + 1)
    for duration in durations:
        counts[sum(duration > bound for bound in BOUNDS)] += 1
    return LatencyHistogram(BOUNDS, tuple(counts), total=latency.total, max=latency.max)


@pytest.mark.parametrize(
    ("durations", "percent", "expected"),
    [
        ((), 50, None),
        ((0.05,), 50, 0.05),  # (never above the longest)
        ((0.05, 0.05, 0.05, 0.05), 100, 0.05),
        ((0.05, 0.3, 0.3, 0.7), 50, 0.3),  # 2nd of 4: half-way into (0.1, 0.5]
        ((0.05, 0.3, 0.3, 0.7), 25, 0.1),  # all of the first bucket
        ((0.05, 0.3, 0.3, 0.7), 0, 0.0),
        ((0.2, 5.0), 100, 5.0),  # above the highest bound: up to the max
        ((0.2, 5.0), 75, 3.0),  # half-way into (1.0, 5.0]
        ((0.1,), 100, 0.1),  # a bound is inclusive
    ],
)
def test_percentiles_interpolate_within_their_bucket(
    durations: tuple[float, ...], percent: float, expected: float | None
) -> None:
    """Like Prometheus's histogram_quantile, capped at the longest duration."""
    got = histogram(*durations).percentile(percent)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_the_tally_puts_a_duration_in_the_first_bucket_that_holds_it() -> None:
    """Bounds are inclusive upper bounds, as in OpenTelemetry."""
    tally = Tally()
    for duration in (0.005, 0.0051, 0.01, 120.0):
        tally.count_send("sent", duration)
    tally.count_send("unknown", 1.0)
    latency = tally.send_latency()
    assert latency.counts[0] == 1  # 0.005
    assert latency.counts[1] == 2  # 0.0051, 0.01
    assert latency.counts[-1] == 1  # above 60 s
    assert latency.count == 5
    assert latency.max == 120.0
    assert latency.mean == pytest.approx((0.005 + 0.0051 + 0.01 + 120.0 + 1.0) / 5)
    assert tally.outcomes == {"sent": 4, "failed": 0, "unknown": 1}


@pytest.mark.parametrize("percent", [-1, 100.5])
def test_a_percent_outside_0_to_100_is_refused(percent: float) -> None:
    """A percentile is asked for in percent, not as a fraction past 1."""
    with pytest.raises(ValueError, match="between 0 and 100"):
        histogram(0.1).percentile(percent)
