"""Rate-limit headers read as evidence: dialect, tokens left, tick phase.

The API sends ``X-Rate-Limit-Limit/Remaining/Reset`` from Yii2's
``yii/filters/RateLimiter``, but proxies, gateways and other backends send
the same names with other meanings. `ServerView` never takes them as
commands. It infers from the answers which semantics they follow:

* **Yii2, exactly** (`Dialect.YII2`): time in whole seconds of the server's
  clock, so tokens come back only when its second changes (``int(limit /
  window)`` of them), ``Reset`` is ``window`` on a 429 and
  ``int((limit - remaining) * window / limit)`` otherwise (Yii2 2.0.14 and
  later; ``limit - remaining - 1`` before). When tokens run
  out, waiting for the next tick is the only thing that works; where in our
  second the server's tick falls (`TickPhase`) is learned by bisection, one
  probe a second.
* **A continuous bucket** (`Dialect.CONTINUOUS`): tokens trickle back; ``Reset``
  (seconds until full, or until the next token) is only an upper bound.
* **Nonsense** (`Dialect.NONSENSE`): headers that contradict themselves or the
  429s; they are ignored from then on.

In every dialect ``Remaining`` is the server's own count: requests granted
after an answer's request are taken off it (`ServerView.credit`), so it lets
senders go at once while the server has tokens, and never more.

Pure: times are the limiter's clock (when requests were let go), no I/O.
"""

from __future__ import annotations

import enum
import math

import attrs


__all__ = ["Dialect", "ServerView", "TickPhase"]

# Yii2 counts whole seconds.
_PERIOD = 1.0
# Remaining is disbelieved after this many 429s for requests it let go, if
# they are more than this share of those requests.
_DISTRUST_AFTER = 5
_DISTRUST_SHARE = 0.05
# Once the phase is known within _KNOWN_PHASE, tokens more than _JITTER away
# from it are not Yii2's; one probe half-way between two ticks checks that.
_KNOWN_PHASE = 0.05
_JITTER = 0.05
# The tick's phase is bisected until known within this.
_PRECISION = 0.003


class Dialect(enum.Enum):
    """How a server's rate-limit headers read (see the module docstring)."""

    UNKNOWN = "unknown"
    YII2 = "yii2"
    CONTINUOUS = "continuous"
    NONSENSE = "nonsense"


@attrs.define
class TickPhase:
    """When in each second the server's tokens come back: in ``(lower, upper]``.

    Bounds are send times of one period; ``(lower + k, upper + k]`` holds the
    tick of every other period *k*, so sending at ``upper + k`` is safe.
    """

    lower: float
    upper: float

    def first_tick_after(self, when: float, *, empty: bool) -> float:
        """The safe time of the first tick certainly after *when*.

        After an answer that found the bucket *empty*, the tick of the
        interval it fell in is still to come; after any other, only ticks
        whose whole interval is later are certain.
        """
        if empty:
            return self.upper + math.floor(when - self.upper) + 1
        return self.upper + math.ceil(when - self.lower - 1e-9)

    def probe_before(self, safe: float) -> float | None:
        """Where to probe the tick before the safe time *safe* (None: known well)."""
        width = self.upper - self.lower
        if width <= _PRECISION:
            return None
        return safe - width / 2

    def narrow(self, after: float, until: float) -> None:
        """A tick came in ``(after, until]`` (send times): narrow the phase to it."""
        if until - after >= _PERIOD:
            return  # says nothing about the phase
        # The period of the known interval nearest this one.
        k = round((after + until - self.lower - self.upper) / 2)
        lower = max(self.lower, after - k)
        upper = min(self.upper, until - k)
        if lower < upper:
            self.lower, self.upper = lower, upper
        else:
            # Contradicts what was known (jitter, a drifting clock): start
            # again from this interval.
            self.lower, self.upper = after - k, until - k


@attrs.define
class _Answer:
    """One answer, as the credit and the ticks need it."""

    remaining: int
    sent_at: float
    received_at: float


@attrs.define
class ServerView:
    """The server's bucket as its answers describe it (see the module docstring).

    Attributes:
        dialect: The header semantics inferred so far.
        limit: ``X-Rate-Limit-Limit`` as last seen.
        window: Yii2's window in seconds, once a 429 has told it.
        ticks: Where the Yii2 server's second begins, once learned.
    """

    dialect: Dialect = Dialect.UNKNOWN
    limit: int | None = None
    window: int | None = None
    ticks: TickPhase | None = None
    # The fewest tokens an answer reported since tokens were last seen
    # coming back: the server had at most this many when it handled it.
    _basis: _Answer | None = None
    _probed_for: float | None = None
    # The Yii2 windows (seconds) the answers so far fit, lowest and highest.
    _windows: tuple[float, float] = (1, math.inf)
    # Whether a request sent between two ticks found the bucket still empty.
    _verified: bool = False
    # Requests let go on Remaining's word, and how many of those got a 429.
    _on_credit: int = 0
    _refused_on_credit: int = 0

    @property
    def trusted(self) -> bool:
        """Whether the headers are used at all."""
        return self.dialect is not Dialect.NONSENSE

    @property
    def informed(self) -> bool:
        """Whether the headers have said how many tokens the server has."""
        return self._basis is not None and self.trusted

    @property
    def quantized(self) -> bool:
        """Whether tokens come back only at the server's whole seconds (Yii2)."""
        return self.dialect is Dialect.YII2 and self.ticks is not None

    @property
    def per_tick(self) -> int:
        """Tokens a Yii2 server adds each second."""
        if self.limit is None or not self.window:
            return 0
        return self.limit // self.window

    @property
    def rate(self) -> float | None:
        """The server's rate, when its dialect says it (Yii2: limit per window)."""
        if self.dialect is Dialect.YII2 and self.per_tick:
            return self.per_tick / _PERIOD
        return None

    def credit(self, now: float, in_flight: int) -> int | None:
        """Tokens the server certainly has for requests let go from *now* on.

        Every request in flight may still take one. None when the headers
        have said nothing usable.
        """
        basis = self._basis
        if basis is None or not self.trusted:
            return None
        remaining = basis.remaining
        if self.quantized:
            # Ticks certainly after the server handled the basis request.
            first = self._first_tick()
            if now >= first:
                ticks = 1 + math.floor(now - first + 1e-9)
                cap = self.limit if self.limit is not None else remaining
                remaining = min(cap, remaining + ticks * self.per_tick)
        return remaining - in_flight

    def next_tokens_at(self, now: float) -> float | None:
        """When a Yii2 server next has tokens (a probe or the safe tick), if known.

        Before the safe tick, one request a second probes the middle of the
        tick's interval: a 429 there costs nothing on the server, and halves
        the interval either way.
        """
        if not self.quantized:
            return None
        assert self.ticks is not None  # noqa: S101 - quantized says so
        first = self._first_tick()
        # (Past the first tick, credit counts it: then the next one.)
        safe = first if now < first else first + math.floor(now - first) + 1
        if self._probed_for != safe:
            probe = self.ticks.probe_before(safe)
            if probe is None and not self._verified:
                probe = safe - _PERIOD / 2  # between two ticks: still empty?
            basis = self._basis
            if probe is not None and (basis is None or probe > basis.sent_at):
                return min(probe, safe)
        return safe

    def _first_tick(self) -> float:
        """The safe time of the first tick certainly after the basis answer."""
        basis = self._basis
        assert self.ticks is not None  # noqa: S101 - quantized callers
        assert basis is not None  # noqa: S101 - quantized callers
        if basis.remaining == 0:
            return self.ticks.first_tick_after(basis.sent_at, empty=True)
        return self.ticks.first_tick_after(basis.received_at, empty=False)

    def granted_on_credit(self) -> None:
        """A request went on the tokens Remaining reported."""
        self._on_credit += 1

    def credit_refused(self) -> None:
        """A request let go on Remaining's word got a 429.

        Once in a while another client of the account takes the token first;
        often, and Remaining is not the server's count (a cache, a proxy's,
        a constant): the headers are ignored from then on.
        """
        self._refused_on_credit += 1
        if self._refused_on_credit >= _DISTRUST_AFTER and (
            self._refused_on_credit > _DISTRUST_SHARE * self._on_credit
        ):
            self.dialect = Dialect.NONSENSE

    def granting_without_credit(self, now: float) -> None:
        """A request goes while the headers promise no token (a probe)."""
        if self.quantized:
            tokens_at = self.next_tokens_at(now)
            first = self._first_tick()
            safe = first if now < first else first + math.floor(now - first) + 1
            if tokens_at is not None and tokens_at < safe:
                self._probed_for = safe

    def observe(
        self,
        sent_at: float,
        received_at: float,
        *,
        refused: bool,
        limit: int | None,
        remaining: int | None,
        reset: float | None,
    ) -> None:
        """Learn from one answer (its request's send time and arrival)."""
        if not self.trusted:
            return
        if refused and remaining is None:
            remaining = 0
        if remaining is None:
            return
        if (refused and remaining > 0) or (limit is not None and remaining > limit):
            # A 429 with tokens left, or more left than the bucket holds.
            self.dialect = Dialect.NONSENSE
            return
        if limit is not None:
            self.limit = limit
        self._classify(refused, remaining, reset)
        answer = _Answer(remaining, sent_at, received_at)
        basis = self._basis
        if basis is None:
            self._basis = answer
        elif (
            sent_at >= basis.received_at
            and remaining >= basis.remaining
            and not refused
        ):
            # Sent after the basis answer came, so handled after it; yet as
            # many tokens left: the server made some in between.
            if self.dialect is Dialect.YII2:
                self._bracket_tick(basis.sent_at, sent_at)
            self._basis = answer
        elif remaining < basis.remaining or (
            remaining == basis.remaining and sent_at > basis.sent_at
        ):
            self._basis = answer
        ticks = self.ticks
        if refused and ticks is not None and ticks.upper - ticks.lower <= _KNOWN_PHASE:
            # Empty well after a tick: what Yii2 does, and a trickle does not.
            phase = (sent_at - ticks.upper) % _PERIOD
            if 0.25 < phase < 0.75:
                self._verified = True
        if self.dialect is Dialect.YII2 and self.ticks is None and remaining == 0:
            # Empty: a tick comes within a second of any moment.
            self.ticks = TickPhase(sent_at, sent_at + _PERIOD)

    def _bracket_tick(self, before: float, after: float) -> None:
        """A tick came between two requests' send times: narrow the phase."""
        ticks = self.ticks
        if ticks is None:
            self.ticks = TickPhase(max(before, after - _PERIOD), after)
            return
        if after - before < _PERIOD and ticks.upper - ticks.lower <= _KNOWN_PHASE:
            # Tokens came where the known phase has no tick: they trickle
            # in (a continuous bucket whose headers read like Yii2's).
            # The first tick that ends after *before* must begin before *after*.
            k = math.ceil(before - ticks.upper - _JITTER)
            if ticks.lower + k - _JITTER >= after:
                self._no_longer_yii2()
                return
        ticks.narrow(before, after)

    def _classify(self, refused: bool, remaining: int, reset: float | None) -> None:
        """Narrow the dialect by what Yii2 would have said here."""
        if self.dialect is Dialect.CONTINUOUS or reset is None:
            return
        if self.limit == 1:
            # A bucket of one: Yii2 and a continuous bucket's "seconds until
            # the next token" say the same (Remaining 0, Reset 1). Taken for
            # Yii2's 1/s, a bucket making a token a millisecond costs 1000x;
            # taken for continuous, a Yii2 one costs a few 429s.
            self._no_longer_yii2()
            return
        if refused:
            # Yii2 answers a 429 with Reset = window, a whole number >= 1
            # that fits what the successes said about the window.
            window = int(reset)
            low, high = self._windows
            if window >= 1 and reset == window and low <= window <= high:
                self.window = window
                self._windows = (window, window)
                self.dialect = Dialect.YII2
            else:
                self._no_longer_yii2()
            return
        limit = self.limit
        if limit is None or limit < 1 or reset != int(reset):
            if reset != int(reset):
                self._no_longer_yii2()
            return
        low, high = _yii2_windows(limit, remaining, int(reset))
        low, high = max(low, self._windows[0]), min(high, self._windows[1])
        if low > high:
            self._no_longer_yii2()
        else:
            self._windows = (low, high)

    def _no_longer_yii2(self) -> None:
        self._windows = (1, 0)
        self._verified = False
        self.dialect = Dialect.CONTINUOUS
        self.ticks = None
        self.window = None


def _yii2_windows(limit: int, remaining: int, reset: int) -> tuple[float, float]:
    """The windows *W* for which Yii2 would send this Reset (either formula).

    Yii2 2.0.14 and later: ``int((limit - remaining) * W / limit)``; before:
    ``int((limit - remaining - 1) * W / limit)``. Empty: ``(1, 0)``.
    """
    ranges = []
    for used in (limit - remaining, limit - remaining - 1):
        if used <= 0:
            if reset == 0:
                ranges.append((1.0, math.inf))
            continue
        # int(used * W / limit) == reset  <=>  reset <= used*W/limit < reset+1
        low = max(1, math.ceil(reset * limit / used))
        high = math.ceil((reset + 1) * limit / used) - 1
        if low <= high:
            ranges.append((float(low), float(high)))
    if not ranges:
        return (1.0, 0.0)
    return (min(r[0] for r in ranges), max(r[1] for r in ranges))
