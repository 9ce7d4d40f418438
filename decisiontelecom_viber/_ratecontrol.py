"""The adaptive limiter's rate decisions: pure functions of what it knows.

`AdaptiveLimiter` (``_ratelimit``) measures and paces; here it asks what
rate to pace at:

* `after_empty` — the server's bucket was seen empty (a 429, or
  ``X-Rate-Limit-Remaining: 0``). Before any measurement the rate is cut
  hard (or a ramp ends); above the measured limit it comes back to just
  below it; at or below it the limit fell (or the account is shared), so the
  estimate itself drops (multiplicative decrease).
* `raised_rate` — callers are waiting on the limiter. A ramp doubles the
  rate (the limit is not known yet); below the measured limit the rate
  climbs back; after a quiet spell it probes above it (additive increase in
  steps of 5 %), so a raised limit is found. Never faster than the server's
  answers can tell the effect, and never above a configured rate.

No clock, no state: the tests go through them as tables.
"""

from __future__ import annotations

import attrs


__all__ = ["MARGIN", "Change", "Control", "after_empty", "raised_rate"]

# While the limit is unknown the rate doubles every _RAMP_INTERVAL in which
# callers wait on the limiter; short enough that the server's bucket does not
# fill (and waste tokens) before the rate passes the limit.
_RAMP = 2.0
_RAMP_INTERVAL = 0.05
# With no measurement yet, the rate grows by _SEARCH per _INTERVAL.
_SEARCH = 1.25
# Below the measured limit the rate climbs back by _CLIMB per _INTERVAL.
_CLIMB = 1.05
_INTERVAL = 0.1
# After _QUIET seconds without a refusal the rate probes above the measured
# limit by _PROBE per _INTERVAL, so a raised (or underestimated) limit is found.
_QUIET = 1.5
_PROBE = 1.05
# A refusal at or below the measured limit: the limit fell, cut by _DECREASE.
_DECREASE = 0.97
# A refusal before any measurement: cut by _BLIND_DECREASE.
_BLIND_DECREASE = 0.7
# Headroom kept below a measured (or configured) rate.
MARGIN = 0.01
# More of it when X-Rate-Limit-Remaining is known: the server's spare tokens
# are spent as it reports them, so pacing low costs nothing, and measurements
# from answers that come back out of order err by a token or two.
_INFORMED_MARGIN = 0.04


@attrs.frozen
class Control:
    """What decides the rate.

    Attributes:
        rate: Requests per second paced now; None while only slow start limits.
        estimate: The server's rate as last measured.
        ramping: Whether the rate is still doubling towards an unknown limit.
        informed: Whether ``X-Rate-Limit-Remaining`` is known (and trusted).
    """

    rate: float | None
    estimate: float | None
    ramping: bool
    informed: bool


@attrs.frozen
class Change:
    """A new rate, the estimate that goes with it, and whether still ramping."""

    rate: float
    estimate: float | None
    ramping: bool


def after_empty(
    control: Control, *, refused: bool, initial_rate: float
) -> Change | None:
    """The rate once the server's bucket was seen empty; None: keep it.

    Args:
        control: The state (its estimate already includes this moment's sample).
        refused: A 429 (else ``Remaining: 0`` said so, without a refusal).
        initial_rate: Where pacing starts when no rate is known.
    """
    rate, estimate, ramping = control.rate, control.estimate, control.ramping
    if not refused and rate is not None:
        # Empty by the headers: the measurement is all it says, except
        # that a ramp has reached the server's rate.
        if not ramping:
            return None
        held = (estimate or rate) * (1 - _INFORMED_MARGIN)
        return Change(min(rate, held), estimate, ramping=False)
    margin = _INFORMED_MARGIN if control.informed else MARGIN
    target = estimate * (1 - margin) if estimate is not None else None
    if rate is None:
        return Change(
            max(initial_rate, target or 0.0), estimate, ramping=not control.informed
        )
    if ramping:
        return Change(target if target is not None else rate / _RAMP, estimate, False)
    if target is None:
        return Change(rate * _BLIND_DECREASE, estimate, ramping=False)
    if rate > target:
        return Change(target, estimate, ramping=False)
    # Refused at or below the measured limit: the limit fell (or the account
    # is shared). Believe the refusal.
    lowered = (estimate or rate) * _DECREASE
    return Change(lowered * (1 - margin), lowered, ramping=False)


def raised_rate(
    control: Control,
    *,
    since_wait: float,
    since_change: float,
    since_refusal: float,
    since_spare: float,
    feedback_time: float,
    ceiling: float | None,
) -> float:
    """The rate while callers wait on the limiter (the same: no change).

    Args:
        control: The state; ``control.rate`` is not None.
        since_wait: Seconds since a caller last waited on the limiter.
        since_change: Seconds since the rate last changed.
        since_refusal: Seconds since the last 429 that changed the rate.
        since_spare: Seconds since Remaining last showed a token to spare.
        feedback_time: How long the server's answers take to tell a change's
            effect (two round trips).
        ceiling: The configured rate's pace, never exceeded.
    """
    rate, estimate = control.rate, control.estimate
    assert rate is not None  # noqa: S101 - callers pace
    interval = max(_INTERVAL, feedback_time)
    if since_wait > interval:
        return rate  # callers are not waiting on the limiter: no evidence
    quiet = since_refusal >= _QUIET
    new = rate
    if control.ramping:
        if since_change >= max(_RAMP_INTERVAL, feedback_time):
            new = rate * _RAMP
    elif since_change < interval:
        return rate
    elif control.informed and estimate is not None:
        # Remaining lets senders spend what the server has beyond the pace,
        # so the pace stays a little lower; it probes upward only when
        # Remaining never shows a token to spare (a bucket of 1).
        target = estimate * (1 - _INFORMED_MARGIN)
        if rate < target:
            new = min(rate * _CLIMB, target)
        elif ceiling is not None and since_spare < interval:
            new = rate * _CLIMB  # held below a configured rate: climb back
        elif quiet and since_spare >= _QUIET:
            new = rate * _PROBE
    elif estimate is not None and rate < estimate * (1 - MARGIN):
        new = min(rate * _CLIMB, estimate * (1 - MARGIN))
    elif estimate is None:
        # Nothing measured yet (the ramp ended on a 429 too early to
        # measure): search faster than the 5 % probe.
        new = rate * _SEARCH
    elif quiet:
        new = rate * _PROBE
    if ceiling is not None:
        new = min(new, ceiling)  # a configured rate is never exceeded
    return max(new, rate)
