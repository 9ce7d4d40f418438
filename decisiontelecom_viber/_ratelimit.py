"""Client-side rate limiting: one adaptive limiter shared by every call of a client.

Every attempt first ``acquire``s a `Permit` from the limiter — waiting at
most until the call's deadline — and ``release``s the permit with what the
answer said (`Feedback`). `AdaptiveLimiter` is a GCRA (a token bucket in
"theoretical arrival time" form) whose rate it adjusts; docs/bulk.md tells
the whole story. Here: slow start while the limit is unknown (a window on
requests in flight, +0.5 per answer), the pause after a 429, measuring the
server's rate between two moments its bucket was seen empty, a cap on what
is in flight once paced, and the headers (through `ServerView`). What rate
to pace at is decided in ``_ratecontrol``; callers wait at ``_gate``.

Time comes from the client's `Clock`, so all of this is tested with a fake one.
"""

from __future__ import annotations

import math

from ._clock import Clock, SystemClock
from ._evidence import ServerView
from ._gate import Gate
from ._inflight import Flight, InFlight
from ._limits import (
    Feedback,
    Permit,
    Priority,
    RateLimit,
    RateLimitHeaders,
    bind_clock,
)
from ._ratecontrol import MARGIN, Control, after_empty, raised_rate
from ._ratesample import EmptySamples


__all__ = ["AdaptiveLimiter"]

# Shortest time between two "bucket empty" moments used to measure the
# server's rate: shorter baselines are too noisy (one token is a big share).
_MIN_SAMPLE_SECONDS = 0.15
# The same between two answers saying Remaining 0: a bucket with 0.9 of a
# token says 0 too, and answers cross on the way back.
_MIN_HEADER_SAMPLE_SECONDS = 0.5
# Slow start widens the window by this much per answer: 1.5x per round trip,
# not TCP's 2x, since every request in flight when the server's bucket runs
# dry comes back a 429 (the overshoot is about growth x the burst).
_WINDOW_GROWTH = 0.5
# Slow start stops limiting requests in flight past this window.
_MAX_WINDOW = 512
# Once paced, requests in flight stay within the bucket and what the pace
# sends in two round trips and _STALL_SLACK: a server (or proxy) that stalls
# takes everything queued at once when it resumes, and every request beyond
# its bucket would be a 429.
_STALL_SLACK = 0.02
# A request unanswered this long (plus 4 round trips) is hung, not held by a
# stalled server: it no longer counts against that cap.
_HUNG = 1.0
# Seconds' worth of tokens a burst leaves in the server's bucket (`_delay`).
_JITTER = 0.02


class _Permit:
    """The permit of `AdaptiveLimiter`: releasing it gives the slot back."""

    __slots__ = ("_flight", "_limiter", "waited")

    def __init__(self, limiter: AdaptiveLimiter, waited: float, flight: Flight) -> None:
        self._limiter = limiter
        self._flight = flight
        self.waited = waited

    def release(self, feedback: Feedback) -> None:
        if not self._flight.ended:
            self._limiter._release(feedback, self._flight)


class _Schedule:
    """The `Schedule` the gate asks: the limiter's pacing, nothing else."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: AdaptiveLimiter) -> None:
        self._limiter = limiter

    def delay(self, now: float) -> float:
        return self._limiter._delay(now)

    def grant(self, now: float) -> Flight:
        return self._limiter._grant(now)

    def give_back(self, flight: Flight) -> None:
        self._limiter._flights.end(flight)

    def first_slot(self, now: float) -> float:
        return max(now, self._limiter._paused_until)

    def lifts_at(self) -> float | None:
        return self._limiter._cap_lifts_at()

    def wakes_early(self) -> bool:
        return self._limiter._view.informed


class AdaptiveLimiter:
    """The default `Limiter`: an adaptive GCRA (see the module docstring).

    Callers that cannot go at once wait at its `Gate` (``_gate``): by
    priority, first come first served within one, refused at once
    (`DeadlineExceededError`) when their deadline comes before their slot.

    Args:
        config: The `RateLimit` settings.
        clock: Where time is read and waits happen; by default the clock of
            the client it is given to.
    """

    def __init__(self, config: RateLimit, clock: Clock | None = None) -> None:
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._clock_given = clock is not None
        # A configured rate is the account's limit: paced a little below
        # it (clocks and networks jitter), and never exceeded.
        self._ceiling = (
            config.rate * (1 - MARGIN) if config.adaptive and config.rate else None
        )
        self._rate: float | None = self._ceiling or config.rate
        self._view = ServerView()
        # When Remaining last showed a token to spare beyond those in flight.
        self._spare_at = -math.inf
        # Without a configured rate, the server's Remaining lets senders go
        # at once; a configured rate is kept to (the account may be shared).
        self._discovering = config.rate is None
        self._burst = config.burst
        self._tat = 0.0  # GCRA: theoretical arrival time of the next request
        self._paused_until = 0.0
        self._flights = InFlight()
        # Slow start: a window on requests in flight while the limit is unknown.
        self._window: float | None = (
            config.initial_window if config.rate is None else None
        )
        self._gate = Gate(_Schedule(self), self._clock)
        # Feedback for requests sent no later than this is stale.
        self._changed_at = -1.0
        # Measurement: the server's rate between two moments its bucket was
        # seen empty.
        self._samples = EmptySamples(_MIN_SAMPLE_SECONDS, _MIN_HEADER_SAMPLE_SECONDS)
        self._estimate: float | None = None
        self._ramping = False
        self._last_change = self._clock.monotonic()
        self._last_refusal = self._last_change
        self._rtt: float | None = None
        self.pauses = 0

    def bind(self, clock: Clock) -> None:
        """Use the client's *clock* (see `Limiter.bind`)."""
        if bind_clock(self._clock, self._clock_given, clock, "AdaptiveLimiter"):
            self._clock = self._gate.clock = clock
            self._clock_given = True
            self._last_change = self._last_refusal = clock.monotonic()

    def __repr__(self) -> str:
        return f"<AdaptiveLimiter rate={self._rate!r} estimate={self._estimate!r}>"

    @property
    def current_rate(self) -> float | None:
        """Requests per second allowed now; None while only slow start limits."""
        return self._rate

    @property
    def estimated_limit(self) -> float | None:
        """The server's rate as last measured, if it has been."""
        return self._estimate

    @property
    def in_flight(self) -> int:
        """Requests acquired and not yet released."""
        return len(self._flights)

    # -- granting slots --------------------------------------------------------

    async def acquire(
        self, deadline: float | None = None, priority: Priority = "normal"
    ) -> Permit:
        """Wait for a slot, but not past *deadline*; return its permit.

        Every waiting ``"high"`` caller is granted before any ``"normal"`` one.

        Raises:
            DeadlineExceededError: No slot before *deadline*.
        """
        now = self._clock.monotonic()
        if not self._gate.waiting and self._delay(now) <= 0:
            return _Permit(self, 0.0, self._grant(now))
        flight = await self._gate.wait(now, deadline, priority)
        # The grant time, not the time this task resumed: feedback is judged
        # stale or fresh by when the limiter let the request go.
        return _Permit(self, flight.granted_at - now, flight)

    def _delay(self, now: float) -> float:
        """Seconds until the next caller may go (inf: wait for a release)."""
        if self._paused_until > now:
            return self._paused_until - now
        view = self._view
        credit = self._credit(now)
        if credit is not None and credit >= 1:
            self._spare_at = now
            if self._discovering:
                return 0.0  # the server said it has these tokens
        tick = 0.0
        if view.quantized and (credit is None or credit < 1):
            # Tokens come only at the server's next second (Yii2).
            tokens_at = view.next_tokens_at(now)
            tick = 0.0 if tokens_at is None else max(0.0, tokens_at - now)
            if self._discovering:
                return tick
        rate = self._rate
        if credit is not None and rate is None:
            # The server has no token to spare for more requests, and its
            # rate is not known yet: start pacing, and ramp up to find it.
            rate = self._rate = max(self._config.initial_rate, self._estimate or 0.0)
            self._ramping = True
            self._last_change = now
            self._tat = max(self._tat, now + 1.0 / rate)  # (no token now)
        # Hung and overtaken requests hold no slot: neither slow start's
        # window nor the cap waits on a request that will never be answered.
        if self._window is not None and self._held(now) >= self._window:
            return float("inf")
        if rate is None:
            return 0.0
        if self._rtt is not None:
            bucket = max(self._burst, self._view.limit or 1)
            cap = bucket + math.ceil(rate * (2 * self._rtt + _STALL_SLACK))
            if self._held(now) >= cap:
                return float("inf")
        self._maybe_increase(now)
        interval = 1.0 / (self._rate or rate)
        # With Remaining known, the server's own count is the burst.
        burst = self._burst if credit is None or not self._discovering else 1
        # A burst keeps _JITTER's worth of tokens: the server's bucket refills
        # from when it handled the first request, a little after the limiter
        # let it go, and requests arrive unevenly.
        tolerance = max(0.0, (burst - 1) * interval - _JITTER)
        return max(tick, max(self._tat, now) - tolerance - now)

    def _credit(self, now: float) -> int | None:
        credit = self._view.credit(now, len(self._flights))
        if credit is None or self._view.quantized:
            return credit
        # The pace's next request needs the token the bucket is making:
        # Remaining spent to the last token leaves it none, and a request
        # that arrives a little early (the network jitters) gets a 429.
        return credit - 1

    def _held(self, now: float) -> int:
        """Requests in flight that a stalled server may be holding."""
        if self._rtt is None:
            return len(self._flights)  # (no answer yet: none overtaken or hung)
        slack = 2 * self._rtt + _STALL_SLACK
        return self._flights.held(now, _HUNG + 4 * self._rtt, slack)

    def _cap_lifts_at(self) -> float | None:
        """When the oldest held request will count as hung (no answer needed)."""
        if self._rtt is None:
            return None
        hung_at = self._flights.hung_at(_HUNG + 4 * self._rtt)
        # (A microsecond past: at the moment itself it still counts.)
        return None if hung_at is None else hung_at + 1e-6

    def _grant(self, now: float) -> Flight:
        """Let one request go at *now*."""
        view = self._view
        credit = self._credit(now)
        if credit is not None and credit >= 1 and self._discovering:
            # On the server's tokens: no slot of the schedule used, none saved.
            self._tat = max(self._tat, now)
            view.granted_on_credit()
            return self._flights.start(now, on_credit=True)
        if view.quantized and (credit is None or credit < 1):
            view.granting_without_credit(now)
        if self._rate is not None:
            interval = 1.0 / self._rate
            # A late wake-up (timers fire late by a fraction of a millisecond)
            # must not push every later slot back: within one slot of the
            # schedule, keep to it; after an idle spell, start afresh.
            start = self._tat if self._tat >= now - interval else now
            self._tat = start + interval
        return self._flights.start(now, on_credit=False)

    def _release(self, feedback: Feedback, flight: Flight) -> None:
        """Account for an answer, and adapt to it (through the permit)."""
        self._flights.end(flight, answered=feedback.status is not None)
        if flight.on_credit and feedback.rate_limited:
            # Refused although Remaining promised the token.
            self._view.credit_refused()
        self._gate.released()
        if feedback.status is not None:
            # Smoothed round trip: rate changes wait for their feedback.
            rtt = feedback.received_at - feedback.sent_at
            self._rtt = rtt if self._rtt is None else 0.9 * self._rtt + 0.1 * rtt
        # Sent no later than the last change: it says nothing about the new rate.
        stale = feedback.sent_at <= self._changed_at
        headers = feedback.headers
        if headers is not None or (feedback.rate_limited and self._view.limit):
            self._observe(feedback, headers)
        if feedback.rate_limited:
            if not stale:
                self._on_empty(feedback, refused=True)
        elif feedback.status is not None:
            # Any answer of the API (not a 429) used one of the server's tokens.
            self._samples.accepted += 1
            if self._window is not None:
                self._window += _WINDOW_GROWTH
                if self._window >= _MAX_WINDOW:
                    self._window = None
        if headers is not None and not stale and not self._view.quantized:
            self._on_headers(feedback, headers)

    # -- adaptation ------------------------------------------------------------

    def _observe(self, feedback: Feedback, headers: RateLimitHeaders | None) -> None:
        """Give the answer to the `ServerView`; follow a Yii2 server's rate."""
        view = self._view
        view.observe(
            feedback.sent_at,
            feedback.received_at,
            refused=feedback.rate_limited,
            limit=headers.limit if headers is not None else None,
            remaining=headers.remaining if headers is not None else None,
            reset=headers.reset if headers is not None else None,
        )
        self._gate.evidence()
        rate = view.rate
        if view.quantized and rate is not None:
            # Its headers say its rate; the ticks pace, not a schedule.
            self._estimate = rate
            self._rate = min(rate, self._ceiling or rate)
            self._window = None
            self._ramping = False

    def _on_empty(self, feedback: Feedback, *, refused: bool) -> None:
        """The server's bucket was empty when it handled this request."""
        config = self._config
        moment = (feedback.sent_at + feedback.received_at) / 2
        now = feedback.received_at
        # (A lower bound of the server's rate: the highest one is kept.)
        sample = self._samples.empty(moment, refused=refused)
        if sample is not None and sample > (self._estimate or 0.0):
            self._estimate = sample
        self._window = None
        if self._view.quantized:
            # The ticks gate senders; only an explicit Retry-After pauses.
            if refused and feedback.retry_after:
                self._pause(feedback, now)
            return
        if refused:
            self._pause(feedback, now)
        if not config.adaptive:
            return
        change = after_empty(
            self._control(), refused=refused, initial_rate=config.initial_rate
        )
        if change is None:
            return
        if refused or self._rate is None:
            self._last_refusal = now
        self._estimate, self._ramping = change.estimate, change.ramping
        self._set_rate(change.rate, now)

    def _on_headers(self, feedback: Feedback, headers: RateLimitHeaders) -> None:
        remaining = headers.remaining
        if self._window is not None and headers.limit is not None:
            # The server said how many it takes at once: no need to creep.
            self._window = max(self._window, min(headers.limit, _MAX_WINDOW))
        if remaining is None or feedback.rate_limited:
            return
        if remaining == 0:
            # Empty: the same signal as a 429, without the refusal (the
            # credit the headers give stops senders: no pause needed).
            self._on_empty(feedback, refused=False)

    def _pause(self, feedback: Feedback, now: float) -> None:
        config = self._config
        # One token's time at the pace; X-Rate-Limit-Reset is only an upper
        # bound (seconds until full, or until the next token, in whole
        # seconds, truncated or not: dialects differ). Retry-After is the
        # server's request.
        pause = 1.0 / (self._rate or config.initial_rate)
        reset = feedback.headers.reset if feedback.headers is not None else None
        if reset is not None:
            pause = min(pause, reset + 1)
        if feedback.retry_after:
            pause = feedback.retry_after
        self._pause_until(now + pause, count=True)

    def _pause_until(self, until: float, *, count: bool) -> None:
        now = self._clock.monotonic()
        until = min(until, now + self._config.max_pause)
        if until > self._paused_until:
            self._paused_until = until
            # The server's bucket is empty: no burst when the pause ends.
            interval = 1.0 / self._rate if self._rate else 0.0
            self._tat = max(self._tat, until + (self._burst - 1) * interval)
            self.pauses += count

    def _set_rate(self, rate: float, now: float) -> None:
        if self._ceiling is not None:
            rate = min(rate, self._ceiling)
        old = self._rate
        self._rate = rate
        self._changed_at = now
        self._last_change = now
        start = max(now, self._paused_until)
        if old is None:
            self._tat = start  # the first slot when the pause ends
        else:
            # Slots promised at the old rate are not kept, and the bucket
            # stays as full as it was: the backlog scales to the new rate.
            self._tat = start + max(0.0, self._tat - start) * old / rate

    def _control(self) -> Control:
        return Control(self._rate, self._estimate, self._ramping, self._view.informed)

    def _maybe_increase(self, now: float) -> None:
        """Grow the rate while callers wait on the limiter (see `_ratecontrol`)."""
        rate = self._rate
        if rate is None or not self._config.adaptive:
            return
        new = raised_rate(
            self._control(),
            since_wait=now - self._gate.last_wait,
            since_change=now - self._last_change,
            since_refusal=now - self._last_refusal,
            since_spare=now - self._spare_at,
            # Never change faster than the server's answers can tell the effect.
            feedback_time=2 * (self._rtt or 0.0),
            ceiling=self._ceiling,
        )
        if new > rate:
            self._raise_rate(new, now)

    def _raise_rate(self, rate: float, now: float) -> None:
        """A higher rate; the slots already promised scale to it (no stall)."""
        old = self._rate or rate
        start = max(now, self._paused_until)
        self._tat = start + max(0.0, self._tat - start) * old / rate
        self._rate = rate
        self._last_change = now
