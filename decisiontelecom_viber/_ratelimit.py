"""Client-side rate limiting: one adaptive limiter shared by every call of a client.

Every attempt first ``acquire``s a `Permit` from the limiter — waiting at
most until the call's deadline — and ``release``s the permit with what the
answer said (`Feedback`). The limiter (`AdaptiveLimiter`) is a GCRA
(a token bucket in "theoretical arrival time" form) whose rate it adjusts:

* **Unknown limit.** Before the first 429 it limits only the requests in
  flight, starting at ``initial_window`` and growing by half a request per
  answer (a gentler slow start than TCP's): harmless for an unlimited server
  (the window grows 1.5x every round trip) and gentle on a limited one.
* **A 429** means the server's bucket is empty. Every sender pauses until the
  server's ``Retry-After`` / ``X-Rate-Limit-Reset`` (or a short backoff), and
  the rate drops (multiplicative decrease). Feedback from requests sent
  before that decision is stale and ignored for rate control.
* **Measuring the limit.** Between two moments the server's bucket is seen
  empty (a 429, or ``X-Rate-Limit-Remaining`` at 0), every token the server
  made was spent on requests it accepted: the server's rate is the number of
  accepted requests over the time between. The rate is then set just below
  that estimate.
* **Probing upward.** Without a 429 for a while, while callers are waiting on
  the limiter, the rate grows (additive increase), so a raised limit is found.
* **Yii2 headers** (``X-Rate-Limit-Limit/Remaining/Reset``) are used
  proactively: when few requests remain, senders wait for tokens to come back
  before the server has to refuse them.

Time comes from the client's `Clock`, so all of this is tested with a fake one.
"""

from __future__ import annotations

import asyncio
import math

from ._clock import Clock, SystemClock
from ._errors import DeadlineExceededError
from ._evidence import ServerView
from ._inflight import Flight, InFlight
from ._limits import (
    Feedback,
    Permit,
    Priority,
    RateLimit,
    RateLimitHeaders,
    bind_clock,
)
from ._waiters import WaitQueue


__all__ = ["AdaptiveLimiter"]

# Shortest time between two "bucket empty" moments used to measure the
# server's rate: shorter baselines are too noisy (one token is a big share).
_MIN_SAMPLE_SECONDS = 0.15
# The same between two answers saying Remaining 0: a bucket with 0.9 of a
# token says 0 too, and answers cross on the way back.
_MIN_HEADER_SAMPLE_SECONDS = 0.5
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
# Headroom kept below a measured rate.
_MARGIN = 0.01
# More of it when X-Rate-Limit-Remaining is known: the server's spare tokens
# are spent as it reports them, so pacing low costs nothing, and measurements
# from answers that come back out of order err by a token or two.
_INFORMED_MARGIN = 0.04
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


def _late() -> DeadlineExceededError:
    return DeadlineExceededError("the rate limiter")


class AdaptiveLimiter:
    """The default `Limiter`: an adaptive GCRA (see the module docstring).

    Callers that cannot go at once queue in FIFO order; one dispatcher task
    (alive only while someone waits) grants them slots as time allows, so a
    new rate or a pause takes effect at the next slot. A caller whose
    deadline comes before its slot could is refused at once
    (`DeadlineExceededError`).

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
            config.rate * (1 - _MARGIN) if config.adaptive and config.rate else None
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
        # Waiters get (grant time, whether granted on the server's Remaining).
        self._queue: WaitQueue[Flight] = WaitQueue()
        self._dispatcher: asyncio.Task[None] | None = None
        # What the dispatcher waits for: a slot at this time, or a release.
        self._sleeping_until = 0.0
        self._release_waiter: asyncio.Task[object] | None = None
        self._released = asyncio.Event()
        # Set when an answer's headers are read: tokens may have come.
        self._evidence = asyncio.Event()
        # Feedback for requests sent no later than this is stale.
        self._changed_at = -1.0
        # Measurement: when the server's bucket was last seen empty, and how
        # many requests it has accepted since.
        self._empty_at: float | None = None
        self._accepted_since_empty = 0
        self._estimate: float | None = None
        self._ramping = False
        self._last_change = self._clock.monotonic()
        self._last_refusal = self._last_change
        self._last_wait = -1.0
        self._rtt: float | None = None
        self.pauses = 0

    def bind(self, clock: Clock) -> None:
        """Use the client's *clock* (see `Limiter.bind`)."""
        if bind_clock(self._clock, self._clock_given, clock, "AdaptiveLimiter"):
            self._clock = clock
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
        if not self._queue and self._delay(now) <= 0:
            return _Permit(self, 0.0, self._grant(now))
        if deadline is not None:
            # No slot comes before the pause ends, nor before the one the
            # dispatcher is sleeping towards (it goes to a caller ahead).
            if deadline < max(now, self._paused_until, self._sleeping_until):
                raise _late()
            if self._release_waiter is not None:
                self._released.set()  # wake the dispatcher to watch this deadline
        self._last_wait = now
        future = self._queue.add(deadline, priority)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        try:
            flight = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted just as the caller was cancelled: give the slot back.
                self._flights.end(future.result())
                self._released.set()
            else:
                self._forget(future)
            raise
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
        if self._window is not None and len(self._flights) >= self._window:
            return float("inf")
        if rate is None:
            return 0.0
        if self._rtt is not None:
            bucket = max(self._burst, self._view.limit or 1)
            cap = bucket + math.ceil(rate * (2 * self._rtt + _STALL_SLACK))
            if self._flights.recent(now, _HUNG + 4 * self._rtt) >= cap:
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

    async def _dispatch(self) -> None:
        clock = self._clock
        queue = self._queue
        while queue.peek() is not None:
            now = clock.monotonic()
            self._last_wait = now
            delay = self._delay(now)
            if delay == float("inf"):
                await self._wait_for_release(now)
            elif delay > 0:
                # Whoever cannot have a slot before its deadline is refused
                # now, not let through late.
                queue.expire(now + delay, _late)
                if queue.peek() is not None:
                    self._sleeping_until = now + delay
                    try:
                        await self._nap(delay)
                    finally:
                        self._sleeping_until = 0.0
            else:
                flight = self._grant(now)
                if not queue.grant(flight):  # pragma: no cover - peeked
                    self._flights.end(flight)

    async def _nap(self, delay: float) -> None:
        """Sleep *delay*, or less if an answer's headers bring tokens sooner."""
        if not self._view.informed:
            await self._clock.sleep(delay)
            return
        self._evidence.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        waker = asyncio.ensure_future(self._evidence.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _wait_for_release(self, now: float) -> None:
        """Wait for a request to end (slow start), or for a waiter's deadline."""
        self._released.clear()
        earliest = self._queue.earliest_deadline()
        me = asyncio.current_task()
        self._release_waiter = me
        try:
            if earliest is None:
                await self._released.wait()
                return
            # The event loop's timer, not the clock's sleep: this races a
            # real event (an answer), which a fake clock's instant sleep
            # would lose.
            try:
                await asyncio.wait_for(self._released.wait(), max(0.0, earliest - now))
            except asyncio.TimeoutError:
                # The earliest deadline came before any request ended: no
                # slot can reach that waiter in time.
                self._queue.expire(self._clock.monotonic() + 1e-9, _late)
        finally:
            # (Only if still ours: a cancelled dispatcher unwinds late.)
            if self._release_waiter is me:
                self._release_waiter = None

    def _forget(self, future: asyncio.Future[Flight]) -> None:
        self._queue.discard(future)
        if not self._queue and self._dispatcher is not None:
            self._dispatcher.cancel()
            self._dispatcher = None

    def _release(self, feedback: Feedback, flight: Flight) -> None:
        """Account for an answer, and adapt to it (through the permit)."""
        self._flights.end(flight)
        if flight.on_credit and feedback.rate_limited:
            # Refused although Remaining promised the token.
            self._view.credit_refused()
        self._released.set()
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
            self._accepted_since_empty += 1
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
        self._evidence.set()
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
        if self._empty_at is None:
            self._empty_at = moment
            self._accepted_since_empty = 0
        elif moment - self._empty_at >= (
            _MIN_SAMPLE_SECONDS if refused else _MIN_HEADER_SAMPLE_SECONDS
        ):
            # Every token made since the bucket was last empty went to an
            # accepted request, unless the bucket overflowed meanwhile: the
            # sample is a lower bound of the server's rate.
            sample = self._accepted_since_empty / (moment - self._empty_at)
            self._empty_at = moment
            self._accepted_since_empty = 0
            if sample > (self._estimate or 0.0):
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
        rate, estimate = self._rate, self._estimate
        if not refused and rate is not None:
            # Empty by the headers: the measurement above is all it says,
            # except that a ramp has reached the server's rate.
            if self._ramping:
                self._ramping = False
                held = (estimate or rate) * (1 - _INFORMED_MARGIN)
                self._set_rate(min(rate, held), now)
            return
        margin = _INFORMED_MARGIN if self._view.informed else _MARGIN
        target = estimate * (1 - margin) if estimate is not None else None
        if rate is None:
            new_rate = max(config.initial_rate, target or 0.0)
            self._ramping = not self._view.informed
        elif self._ramping:
            self._ramping = False
            new_rate = target if target is not None else rate / _RAMP
        elif target is None:
            new_rate = rate * _BLIND_DECREASE
        elif rate > target:
            new_rate = target
        else:
            # Refused at or below the measured limit: the limit fell (or the
            # account is shared). Believe the refusal.
            self._estimate = (estimate or rate) * _DECREASE
            new_rate = self._estimate * (1 - margin)
        self._set_rate(new_rate, now)
        self._last_refusal = now

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

    def _maybe_increase(self, now: float) -> None:
        """Grow the rate while callers wait on the limiter (see module docstring)."""
        rate = self._rate
        if rate is None or not self._config.adaptive:
            return
        # Never change faster than the server's answers can tell the effect.
        feedback_time = 2 * (self._rtt or 0.0)
        interval = max(_INTERVAL, feedback_time)
        if now - self._last_wait > interval:
            return  # callers are not waiting on the limiter: no evidence
        since_change = now - self._last_change
        estimate = self._estimate
        quiet = now - self._last_refusal >= _QUIET
        new = rate
        if self._ramping:
            if since_change >= max(_RAMP_INTERVAL, feedback_time):
                new = rate * _RAMP
        elif since_change < interval:
            return
        elif self._view.informed and estimate is not None:
            # Remaining lets senders spend what the server has beyond the
            # pace, so the pace stays a little lower; it probes upward only
            # when Remaining never shows a token to spare (a bucket of 1).
            target = estimate * (1 - _INFORMED_MARGIN)
            if rate < target:
                new = min(rate * _CLIMB, target)
            elif self._ceiling is not None and now - self._spare_at < interval:
                new = rate * _CLIMB  # held below a configured rate: climb back
            elif quiet and now - self._spare_at >= _QUIET:
                new = rate * _PROBE
        elif estimate is not None and rate < estimate * (1 - _MARGIN):
            new = min(rate * _CLIMB, estimate * (1 - _MARGIN))
        elif estimate is None:
            # Nothing measured yet (the ramp ended on a 429 too early to
            # measure): search faster than the 5 % probe.
            new = rate * _SEARCH
        elif quiet:
            new = rate * _PROBE
        if self._ceiling is not None:
            new = min(new, self._ceiling)  # a configured rate is never exceeded
        if new > rate:
            self._raise_rate(new, now)

    def _raise_rate(self, rate: float, now: float) -> None:
        """A higher rate; the slots already promised scale to it (no stall)."""
        old = self._rate or rate
        start = max(now, self._paused_until)
        self._tat = start + max(0.0, self._tat - start) * old / rate
        self._rate = rate
        self._last_change = now
