"""The shared limiter's Lua decides as the in-process `AdaptiveLimiter` does.

The Lua scripts (``decisiontelecom_viber/redis/lua``) re-implement the rate
decisions of ``_ratecontrol``/``_ratelimit`` for many workers, with the same
constants (passed from Python). Here the same traces — sequential sends,
their answers (accepted, 429s with or without Retry-After), a virtual clock —
go through both: `AdaptiveLimiter` on a `FakeClock`, and the scripts on the
real test Redis, with the clock given as each call's ``now``. They must
agree on every wait, every rate, and every pause.

What is meant to be the same, and covered: GCRA pacing (burst 1), the pause
a 429 imposes (Retry-After, capped at ``max_pause``) with no burst after it,
the backlog kept across a rate change, the decreases (back to just below
the measured limit when above it; the limit itself cut by 3 % when refused
at or below it), the probe above it after a quiet spell, the ceiling of a
configured rate, and the measurement's shortest baseline.

Where they differ, on purpose (the distributed version has another shape),
and not compared:

- A configured rate: the Lua takes it as the measured limit from the start
  (``estimate = rate``, so a first 429 cuts 3 %); `AdaptiveLimiter` keeps
  it only as a ceiling and measures from nothing (a first 429 cuts 30 %,
  ``_BLIND_DECREASE``). The traces give the Python limiter the same
  starting estimate (``_estimate``) to compare what follows.
- An unknown limit: `AdaptiveLimiter` runs TCP-like slow start (a window on
  requests in flight); the Lua starts from ``initial_rate`` and doubles the
  rate every 100 ms (``_RAMP_STEP``, twice ``_RAMP_INTERVAL``: 429s reach
  every worker late), halves it at the first 429 and holds it, then cuts a
  quarter at each (``_NEAR_DECREASE``): counting requests in flight across
  processes would leak whenever a worker dies.
- The pause of a 429 without Retry-After: one interval at the new rate
  after the slots already reserved (Lua) against one at the old rate
  (Python); a Retry-After shorter than that: the Lua waits the longer.
- Stale feedback: the Lua judges it by when the slot was reserved, and a
  stale 429 still measures the server's rate; Python judges by when the
  request was sent, and ignores it.
- The measurement's moment: when the answer came (Lua) or halfway through
  the round trip (Python); the same here, with answers at once.
- Increases wait for evidence: the Lua for an accepted answer to a request
  sent one step after the change (``acked``), Python for one step of time;
  the same when answers come at once, as here.
- Rate-limit headers: the Lua reads only ``X-Rate-Limit-Reset`` (each worker
  sees only its own answers); Remaining/Limit (`ServerView`, Yii2's ticks,
  the informed margin) and the cap on requests in flight are Python's only.
- A burst: Python keeps ``_JITTER`` of tokens from a burst, the Lua does
  not (and `RedisLimiter` gives it half the account's burst). The traces
  use burst 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

from decisiontelecom_viber import RateLimit
from decisiontelecom_viber._limits import Feedback
from decisiontelecom_viber._ratecontrol import MARGIN
from decisiontelecom_viber._ratelimit import AdaptiveLimiter
from decisiontelecom_viber.redis._scripts import LimiterParams, LimiterScripts

from .helpers import FakeClock


if TYPE_CHECKING:
    from redis.asyncio import Redis


pytestmark = pytest.mark.integration
pytest_plugins = ["tests.redis_server"]

KEY = "test:equivalence"
START = 1000.0
# Far enough for a slot after any pause: one call, one slot.
HORIZON = 60.0


@attrs.frozen
class Answer:
    """What the server answers one send: accepted, or a 429."""

    refused: bool = False
    retry_after: float | None = None


OK = Answer()


@attrs.frozen
class Decisions:
    """What a limiter decided along a trace.

    Attributes:
        waits: Each send's wait for its slot.
        pauses: The pauses decided so far, after each send.
        rates: The rate changes, as (when, the new rate). A change is
            compared by when it was decided: `AdaptiveLimiter` may raise
            the rate when it grants a slot, the Lua when the next slot is
            asked for; with answers at once, that is the same moment, and
            the same slots follow.
    """

    waits: list[float] = attrs.field(factory=list)
    pauses: list[int] = attrs.field(factory=list)
    rates: list[tuple[float, float]] = attrs.field(factory=list)

    def rate(self, when: float, rate: float) -> None:
        if not self.rates or rate != self.rates[-1][1]:
            self.rates.append((when, rate))


def trace(*parts: tuple[int, Answer]) -> list[Answer]:
    """A trace: *count* sends answered *answer*, for each part in order."""
    return [answer for count, answer in parts for _ in range(count)]


async def through_python(
    limit: RateLimit, answers: list[Answer], *, estimate: float | None = None
) -> Decisions:
    clock = FakeClock(start=START)
    limiter = AdaptiveLimiter(limit, clock)
    if estimate is not None:
        # The Lua's starting point for a configured rate (see the module
        # docstring): the configured rate is the measured limit.
        limiter._estimate = estimate  # noqa: SLF001 - no public way: on purpose
    decisions = Decisions()
    decisions.rate(clock.now, limiter.current_rate or 0.0)
    for answer in answers:
        permit = await limiter.acquire()
        sent = clock.now
        decisions.rate(sent, limiter.current_rate or 0.0)
        permit.release(
            Feedback(
                sent,
                sent,
                429 if answer.refused else 200,
                rate_limited=answer.refused,
                retry_after=answer.retry_after,
            )
        )
        decisions.rate(sent, limiter.current_rate or 0.0)
        decisions.waits.append(permit.waited)
        decisions.pauses.append(limiter.pauses)
    return decisions


async def through_lua(
    redis: Redis, limit: RateLimit, answers: list[Answer]
) -> Decisions:
    scripts = LimiterScripts(redis)
    params = LimiterParams(
        rate=limit.rate,
        burst=limit.burst,
        adaptive=limit.adaptive,
        initial_rate=limit.initial_rate,
        headroom=MARGIN,
        state_ttl=60.0,
    )
    now = START
    accepted: list[float] = []
    acked: float | None = None
    pauses = 0
    decisions = Decisions()
    for answer in answers:
        reply = await scripts.acquire(
            KEY,
            params,
            want=1,
            horizon=HORIZON,
            accepted=accepted,
            acked=acked,
            now=now,
        )
        accepted, acked = [], None
        (slot,) = reply.slots
        decisions.rate(now, reply.rate)
        wait, reserved_at, now = slot - now, now, slot
        if answer.refused:
            report = await scripts.report(
                KEY,
                params,
                sent_at=now,
                received_at=now,
                retry_after=answer.retry_after,
                max_pause=limit.max_pause,
                reserved_at=reserved_at,
                now=now,
            )
            decisions.rate(now, report.rate)
            state = await scripts.read_state(KEY)
            pauses = int(float(state["pauses"]))
        else:
            accepted, acked = [now], now
        decisions.waits.append(wait)
        decisions.pauses.append(pauses)
    return decisions


def assert_alike(python: Decisions, lua: Decisions) -> None:
    # Lua numbers cross as %.17g text, and the traces sum hundreds of
    # intervals: equal to rounding, not to the last bit.
    assert pytest.approx(lua.waits, rel=1e-9, abs=1e-9) == python.waits
    assert lua.pauses == python.pauses
    assert [when for when, _ in lua.rates] == pytest.approx(
        [when for when, _ in python.rates], rel=1e-12
    )
    assert rates(lua) == pytest.approx(rates(python), rel=1e-9)


def rates(decisions: Decisions) -> list[float]:
    """The rates, in the order they were decided."""
    return [rate for _, rate in decisions.rates]


class TestFixedRate:
    async def test_pacing(self, redis_client: Redis) -> None:
        limit = RateLimit(rate=50, burst=1, adaptive=False)
        answers = trace((30, OK))

        python = await through_python(limit, answers)
        lua = await through_lua(redis_client, limit, answers)

        assert_alike(python, lua)
        assert [0.0] + [pytest.approx(0.02)] * 29 == lua.waits

    async def test_a_429_pauses_for_its_retry_after_with_no_burst_after(
        self, redis_client: Redis
    ) -> None:
        limit = RateLimit(rate=50, burst=1, adaptive=False)
        refused = Answer(refused=True, retry_after=0.5)
        answers = trace((10, OK), (1, refused), (10, OK), (1, refused), (5, OK))

        python = await through_python(limit, answers)
        lua = await through_lua(redis_client, limit, answers)

        assert_alike(python, lua)
        assert 2 == lua.pauses[-1]
        assert pytest.approx(0.5) == lua.waits[11]
        assert pytest.approx(0.02) == lua.waits[12]  # no burst after the pause

    async def test_the_pause_is_capped(self, redis_client: Redis) -> None:
        limit = RateLimit(rate=50, burst=1, adaptive=False, max_pause=2.0)
        answers = trace((3, OK), (1, Answer(refused=True, retry_after=100.0)), (3, OK))

        python = await through_python(limit, answers)
        lua = await through_lua(redis_client, limit, answers)

        assert_alike(python, lua)
        assert pytest.approx(2.0) == lua.waits[4]


class TestAdaptiveRate:
    async def test_decreases_probes_and_the_ceiling(self, redis_client: Redis) -> None:
        """A 3 % cut at the limit, the probe after 1.5 s, back to the target."""
        limit = RateLimit(rate=100, burst=1)
        refused = Answer(refused=True, retry_after=0.5)
        answers = trace(
            (50, OK),
            (1, refused),  # at the limit: the limit fell 3 %
            (250, OK),  # quiet for 1.5 s: probes, up to the ceiling
            (1, refused),  # above the limit: back to just below it
            (20, OK),
            (1, refused),  # at it (a measurement, lower: not believed): cut 3 %
            (5, OK),
            (1, refused),  # at it again: cut 3 %
            (200, OK),  # quiet for 1.5 s: probes 5 %, then the ceiling
        )

        python = await through_python(limit, answers, estimate=100.0)
        lua = await through_lua(redis_client, limit, answers)

        assert_alike(python, lua)
        limits = [100.0, 97.0, 97.0, 97.0 * 0.97, 97.0 * 0.97**2]
        ceiling, target, twice = (x * (1 - MARGIN) for x in (100.0, 97.0, limits[4]))
        cut = limits[3] * (1 - MARGIN)
        expected = [ceiling, target, ceiling, target, cut, twice, twice * 1.05, ceiling]
        assert pytest.approx(expected) == rates(lua)

    async def test_no_probe_above_a_fixed_ceiling(self, redis_client: Redis) -> None:
        limit = RateLimit(rate=100, burst=1)
        answers = trace((400, OK))

        python = await through_python(limit, answers, estimate=100.0)
        lua = await through_lua(redis_client, limit, answers)

        assert_alike(python, lua)
        assert [pytest.approx(100 * (1 - MARGIN))] == rates(lua)
