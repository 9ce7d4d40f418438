"""The limiter's rate decisions, as tables (no clock, no limiter)."""

from __future__ import annotations

from typing import Any

import pytest

from decisiontelecom_viber._ratecontrol import Change, Control, after_empty, raised_rate


def control(
    rate: float | None = 100.0,
    estimate: float | None = None,
    *,
    ramping: bool = False,
    informed: bool = False,
) -> Control:
    return Control(rate, estimate, ramping, informed)


@pytest.mark.parametrize(
    ("state", "refused", "expected"),
    [
        # No rate yet: pacing starts at the initial rate (ramping when blind).
        (control(None), True, Change(50.0, None, ramping=True)),
        (control(None, informed=True), True, Change(50.0, None, ramping=False)),
        # ... or just below a measurement already made.
        (control(None, 200.0), True, Change(198.0, 200.0, ramping=True)),
        # A ramp ends: half the rate it reached, or below the measurement.
        (control(400.0, ramping=True), True, Change(200.0, None, ramping=False)),
        (control(400.0, 200.0, ramping=True), True, Change(198.0, 200.0, False)),
        # Blind: a hard cut.
        (control(100.0), True, Change(70.0, None, ramping=False)),
        # Above the measured limit: back to just below it.
        (control(250.0, 200.0), True, Change(198.0, 200.0, ramping=False)),
        (control(250.0, 200.0, informed=True), True, Change(192.0, 200.0, False)),
        # At or below it: the limit fell; the estimate drops 3 %.
        (control(198.0, 200.0), True, Change(192.06, 194.0, ramping=False)),
        # Remaining 0 (no refusal): only a ramp ends, 4 % below.
        (control(300.0, 200.0, ramping=True), False, Change(192.0, 200.0, False)),
        (control(150.0, 200.0, ramping=True), False, Change(150.0, 200.0, False)),
        (control(150.0, 200.0), False, None),
    ],
)
def test_after_empty(state: Control, refused: bool, expected: Change | None) -> None:
    change = after_empty(state, refused=refused, initial_rate=50.0)

    if expected is None:
        assert change is None
    else:
        assert change is not None
        assert (expected.estimate, expected.ramping) == (
            change.estimate,
            change.ramping,
        )
        assert pytest.approx(expected.rate) == change.rate
        if change.estimate is not None:
            assert pytest.approx(expected.estimate) == change.estimate


WAITING = {
    "since_wait": 0.0,
    "since_change": 0.2,
    "since_refusal": 0.2,
    "since_spare": 10.0,
    "feedback_time": 0.002,
    "ceiling": None,
}


@pytest.mark.parametrize(
    ("state", "overrides", "expected"),
    [
        # Nobody waits: no evidence the rate is too low.
        (control(100.0), {"since_wait": 0.5}, 100.0),
        # Ramping: doubles every 50 ms (or two round trips).
        (control(100.0, ramping=True), {"since_change": 0.06}, 200.0),
        (control(100.0, ramping=True), {"since_change": 0.04}, 100.0),
        (
            control(100.0, ramping=True),
            {"since_change": 0.06, "feedback_time": 0.08},
            100.0,
        ),
        # Changed too recently to tell.
        (control(100.0), {"since_change": 0.05}, 100.0),
        # Nothing measured: search, 25 % a step.
        (control(100.0), {}, 125.0),
        # Below the measurement: climb back 5 %, not past 99 % of it.
        (control(100.0, 200.0), {}, 105.0),
        (control(197.0, 200.0), {}, 198.0),
        # At it: probe 5 % only after a quiet 1.5 s.
        (control(198.0, 200.0), {}, 198.0),
        (control(198.0, 200.0), {"since_refusal": 2.0}, 207.9),
        # Remaining known: 96 % of the measurement, probing only when
        # Remaining never shows a token to spare.
        (control(150.0, 200.0, informed=True), {}, 157.5),
        (control(192.0, 200.0, informed=True), {"since_refusal": 2.0}, 201.6),
        (
            control(192.0, 200.0, informed=True),
            {"since_refusal": 2.0, "since_spare": 0.5},
            192.0,
        ),
        # A configured rate is a ceiling, climbed back to when held below it.
        (control(150.0, None), {"ceiling": 160.0}, 160.0),
        (
            control(192.0, 200.0, informed=True),
            {"ceiling": 198.0, "since_spare": 0.05},
            198.0,
        ),
        (control(198.0, 200.0), {"since_refusal": 2.0, "ceiling": 198.0}, 198.0),
    ],
)
def test_raised_rate(
    state: Control, overrides: dict[str, Any], expected: float
) -> None:
    assert pytest.approx(expected) == raised_rate(state, **{**WAITING, **overrides})
