"""`RedisLimiter` and its Lua scripts, against a real redis-server.

The scripts take the time as an argument when asked (``now=``), so most of
their decisions are tested on a controlled clock; the limiter itself is
tested in (short) real time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis

from decisiontelecom_viber import (
    AsyncViberClient,
    ConfigurationError,
    Feedback,
    RateLimit,
    ViberMessage,
)
from decisiontelecom_viber._limits import Priority
from decisiontelecom_viber.redis import RedisLimiter, RedisUnavailableError
from decisiontelecom_viber.redis._scripts import LimiterParams, LimiterScripts

from .helpers import FakeClock
from .servers import unused_port


if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from decisiontelecom_viber.sandbox import SandboxServer

    from .redis_server import RedisServer


pytestmark = pytest.mark.integration
pytest_plugins = ["tests.redis_server"]

KEY = "test:limiter"


def params(
    rate: float | None = 10.0,
    burst: int = 3,
    *,
    adaptive: bool = True,
    headroom: float = 0.0,
    initial_rate: float = 50.0,
) -> LimiterParams:
    return LimiterParams(
        rate=rate,
        burst=burst,
        adaptive=adaptive,
        initial_rate=initial_rate,
        headroom=headroom,
        state_ttl=60.0,
    )


@pytest.fixture
def scripts(redis_client: Redis) -> LimiterScripts:
    return LimiterScripts(redis_client)


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "decisiontelecom_viber"]


def message(text: str = "hello") -> ViberMessage:
    return ViberMessage.transactional(sender="Acme", receiver="380501234567", text=text)


class TestGcra:
    async def test_burst_then_one_slot_per_interval(
        self, scripts: LimiterScripts
    ) -> None:
        """A burst goes at once, then one slot per 1/rate, within the horizon."""
        reply = await scripts.acquire(KEY, params(), want=5, horizon=0.25, now=100.0)

        assert (100.0, 100.0, 100.0) == reply.slots[:3]
        assert [100.1, 100.2] == pytest.approx(list(reply.slots[3:]))
        assert 10.0 == reply.rate

    async def test_nothing_reserved_beyond_the_horizon(
        self, scripts: LimiterScripts
    ) -> None:
        """Past the horizon a caller is told when to ask again instead."""
        await scripts.acquire(KEY, params(), want=5, horizon=0.25, now=100.0)

        reply = await scripts.acquire(KEY, params(), want=5, horizon=0.25, now=100.0)

        assert () == reply.slots
        assert 0.05 == pytest.approx(reply.retry_in)

    async def test_workers_share_the_slots(self, scripts: LimiterScripts) -> None:
        """Two workers asking in turn get interleaved slots, never the same one."""
        slots: list[float] = []
        for now in (100.0, 100.0, 100.0, 100.0, 100.1, 100.1):
            reply = await scripts.acquire(
                KEY, params(burst=1), want=1, horizon=0.1, now=now
            )
            slots += reply.slots

        assert [100.0, 100.1, 100.2] == pytest.approx(slots)

    async def test_idle_time_refills_the_burst(self, scripts: LimiterScripts) -> None:
        """After an idle spell the burst is available again, no more."""
        await scripts.acquire(KEY, params(), want=3, horizon=0.0, now=100.0)

        reply = await scripts.acquire(KEY, params(), want=5, horizon=0.0, now=110.0)

        assert (110.0, 110.0, 110.0) == reply.slots

    @pytest.mark.parametrize(
        ("adaptive", "paced"), [(True, 9.9), (False, 10.0)], ids=["adaptive", "fixed"]
    )
    async def test_the_configured_rate_is_a_ceiling(
        self, scripts: LimiterScripts, adaptive: bool, paced: float
    ) -> None:
        """RateLimit(rate=10): 1 % below it when adaptive, exactly 10/s when fixed."""
        config = params(adaptive=adaptive, burst=1, headroom=0.01)

        reply = await scripts.acquire(KEY, config, want=3, horizon=1.0, now=100.0)

        assert paced == pytest.approx(reply.rate)
        assert [100.0, 100.0 + 1 / paced, 100.0 + 2 / paced] == pytest.approx(
            list(reply.slots)
        )

    async def test_a_new_rate_keeps_the_buckets_fill_level(
        self, scripts: LimiterScripts
    ) -> None:
        """Slots booked at 50/s take half the time once the rate doubles."""
        unknown = params(rate=None, burst=1, initial_rate=50.0)
        # 11 slots, 100.0 to 100.2: the next would be at 100.22.
        await scripts.acquire(KEY, unknown, want=11, horizon=0.2, now=100.0)

        reply = await scripts.acquire(
            KEY, unknown, want=2, horizon=0.2, acked=100.1, now=100.1
        )

        assert 100.0 == reply.rate
        # 6 slots' worth (0.12 s at 50/s) left after 100.1: 0.06 s at 100/s.
        assert [100.16, 100.17] == pytest.approx(list(reply.slots))

    async def test_a_new_configuration_starts_afresh(
        self, scripts: LimiterScripts
    ) -> None:
        """Workers with another rate reset the shared state."""
        await scripts.acquire(KEY, params(), want=3, horizon=0.0, now=100.0)

        reply = await scripts.acquire(
            KEY, params(rate=20.0), want=3, horizon=0.0, now=100.0
        )

        assert (20.0, (100.0, 100.0, 100.0)) == (reply.rate, reply.slots)


class TestRefusals:
    async def test_a_429_pauses_every_worker(self, scripts: LimiterScripts) -> None:
        """After a 429 reported by one worker, every next slot is after the pause."""
        await scripts.acquire(KEY, params(burst=1), want=1, horizon=0.0, now=100.0)
        report = await scripts.report(
            KEY,
            params(burst=1),
            sent_at=100.001,
            received_at=100.02,
            retry_after=None,
            max_pause=30.0,
            now=100.02,
        )

        reply = await scripts.acquire(
            KEY, params(burst=1), want=1, horizon=1.0, now=100.02
        )

        assert report.paused_until == reply.slots[0]
        assert report.paused_until > 100.02
        assert not report.stale

    async def test_no_burst_when_the_pause_ends(self, scripts: LimiterScripts) -> None:
        """The server's bucket is empty after a 429: slots resume at the pace.

        (A burst after every pause was how RateLimit(rate=200, burst=20)
        lost half a campaign to 429s in the in-process limiter.)
        """
        fixed = params(rate=100.0, burst=10, adaptive=False)
        await scripts.acquire(KEY, fixed, want=10, horizon=0.0, now=100.0)
        report = await scripts.report(
            KEY,
            fixed,
            sent_at=100.001,
            received_at=100.005,
            retry_after=None,
            max_pause=30.0,
            now=100.005,
        )

        reply = await scripts.acquire(KEY, fixed, want=5, horizon=1.0, now=100.005)

        start = report.paused_until
        assert [start + k / 100 for k in range(5)] == pytest.approx(list(reply.slots))

    async def test_the_reset_header_is_only_an_upper_bound(
        self, scripts: LimiterScripts
    ) -> None:
        """Reset: 5 at 0.5/s pauses one interval (2 s), not 5 s; Reset: 0, 1 s."""
        fixed = params(rate=0.5, burst=1, adaptive=False)
        pauses = []
        for reset in (5.0, 0.0):
            key = f"{KEY}:{reset}"
            await scripts.acquire(key, fixed, want=1, horizon=0.0, now=100.0)
            report = await scripts.report(
                key,
                fixed,
                sent_at=100.001,
                received_at=100.01,
                retry_after=None,
                max_pause=30.0,
                reset=reset,
                now=100.01,
            )
            pauses.append(report.paused_until - 100.01)

        # One interval, unless Reset + 1 is shorter.
        assert [2.0, 1.0] == pytest.approx(pauses)

    async def test_retry_after_is_honoured_up_to_max_pause(
        self, scripts: LimiterScripts
    ) -> None:
        """The server's Retry-After sets the shared pause, capped at max_pause."""
        await scripts.acquire(KEY, params(), want=1, horizon=0.0, now=100.0)

        short = await scripts.report(
            KEY,
            params(),
            sent_at=100.001,
            received_at=100.001,
            retry_after=2.0,
            max_pause=30.0,
            now=100.001,
        )
        long = await scripts.report(
            KEY,
            params(),
            sent_at=101.0,
            received_at=101.0,
            retry_after=60.0,
            max_pause=5.0,
            now=101.0,
        )

        assert [102.001, 106.0] == pytest.approx(
            [short.paused_until, long.paused_until]
        )

    async def test_a_429_lowers_the_shared_rate(self, scripts: LimiterScripts) -> None:
        """Refused at the configured rate: the limit is believed lower (3 %)."""
        await scripts.acquire(KEY, params(), want=1, horizon=0.0, now=100.0)

        report = await scripts.report(
            KEY,
            params(),
            sent_at=100.001,
            received_at=100.01,
            retry_after=None,
            max_pause=30.0,
            now=100.01,
        )

        assert 9.7 == pytest.approx(report.rate)
        assert 9.7 == pytest.approx(report.estimate)

    async def test_stale_429s_are_only_counted(self, scripts: LimiterScripts) -> None:
        """429s for slots reserved before the last decrease change nothing."""
        await scripts.acquire(KEY, params(), want=3, horizon=0.0, now=100.0)
        first = await scripts.report(
            KEY,
            params(),
            sent_at=100.001,
            received_at=100.01,
            retry_after=None,
            max_pause=30.0,
            now=100.01,
        )

        second = await scripts.report(
            KEY,
            params(),
            sent_at=100.005,
            received_at=100.02,
            retry_after=None,
            max_pause=30.0,
            reserved_at=100.0,
            now=100.02,
        )

        assert second.stale
        assert (first.rate, first.paused_until) == (second.rate, second.paused_until)

    async def test_a_fixed_rate_pauses_but_never_changes(
        self, scripts: LimiterScripts
    ) -> None:
        """With adaptive=False a 429 pauses everyone and leaves the rate alone."""
        fixed = params(adaptive=False)
        await scripts.acquire(KEY, fixed, want=1, horizon=0.0, now=100.0)

        report = await scripts.report(
            KEY,
            fixed,
            sent_at=100.001,
            received_at=100.01,
            retry_after=1.0,
            max_pause=30.0,
            now=100.01,
        )

        assert 10.0 == report.rate
        assert pytest.approx(101.01) == report.paused_until

    async def test_the_rate_climbs_back_but_not_above_the_configured_one(
        self, scripts: LimiterScripts
    ) -> None:
        """Without 429s, while callers wait, the rate returns to its cap and stays."""
        config = params(rate=100.0, headroom=0.02)
        await scripts.acquire(KEY, config, want=1, horizon=0.0, now=100.0)
        await scripts.report(
            KEY,
            config,
            sent_at=100.001,
            received_at=100.01,
            retry_after=None,
            max_pause=30.0,
            now=100.01,
        )
        rates = []
        now = 100.01
        while now < 106.0:
            now += 0.05
            # (Requests sent until 10 ms ago were accepted.)
            reply = await scripts.acquire(
                KEY, config, want=50, horizon=0.0, acked=now - 0.01, now=now
            )
            rates.append(reply.rate)

        assert rates[0] < 98.0
        assert 98.0 == pytest.approx(rates[-1])
        assert max(rates) <= 98.0 + 1e-9


class TestUnknownLimit:
    async def test_starts_at_the_initial_rate_and_ramps_while_callers_wait(
        self, scripts: LimiterScripts
    ) -> None:
        """With no rate configured the shared rate doubles every 100 ms of demand.

        (Once requests sent 100 ms after the last doubling have been accepted.)
        """
        unknown = params(rate=None, burst=1, initial_rate=50.0)
        rates = []
        for step in range(8):
            now = 100.0 + step / 16  # (exact in binary)
            reply = await scripts.acquire(
                KEY, unknown, want=20, horizon=0.0, acked=now - 1 / 64, now=now
            )
            rates.append(reply.rate)

        assert [50.0, 50.0, 100.0, 100.0, 200.0, 200.0, 400.0, 400.0] == rates
        assert reply.estimate is None

    async def test_slow_answers_hold_the_ramp_back(
        self, scripts: LimiterScripts
    ) -> None:
        """The rate doubles only once answers tell the last doubling's effect.

        (429s reach every worker late when the server answers slowly: ramping
        on regardless is how 4 workers drew 8 % of 429s finding a limit.)
        """
        unknown = params(rate=None, burst=1, initial_rate=50.0)
        rates = []
        for step in range(8):
            now = 100.0 + step / 16
            # The answers come 200 ms after their requests were sent.
            reply = await scripts.acquire(
                KEY, unknown, want=20, horizon=0.0, acked=now - 0.2, now=now
            )
            rates.append(reply.rate)

        assert [50.0] * 5 + [100.0] * 3 == rates

    @pytest.mark.parametrize(
        ("reserved_at", "halved"),
        [(100.3, 200.0), (100.4, 400.0)],
        ids=["reserved-before-the-last-doubling", "reserved-after-it"],
    )
    async def test_the_first_429_halves_the_rate_its_request_was_sent_at(
        self, scripts: LimiterScripts, reserved_at: float, halved: float
    ) -> None:
        """A 429 that comes after another doubling halves the rate before it.

        (A busy server's 429s come late: halving the doubled rate left 4
        workers at twice the limit, 33 of 1,600 messages refused.)
        """
        unknown = params(rate=None, burst=1, initial_rate=100.0)
        for step in range(8):  # 100, 100, 200, 200, 400, 400, 800 (at 100.375)
            now = 100.0 + step / 16
            reply = await scripts.acquire(
                KEY, unknown, want=20, horizon=0.0, acked=now - 1 / 64, now=now
            )
        assert 800.0 == reply.rate

        refused = await scripts.report(
            KEY,
            unknown,
            sent_at=reserved_at,
            received_at=100.41,
            retry_after=None,
            max_pause=30.0,
            reserved_at=reserved_at,
            now=100.41,
        )

        assert halved == refused.rate

    async def test_429s_measure_the_servers_rate(self, scripts: LimiterScripts) -> None:
        """Accepted requests between two 429s over the time between: the limit."""
        unknown = params(rate=None, burst=1, initial_rate=400.0)
        await scripts.acquire(KEY, unknown, want=1, horizon=0.0, now=100.0)
        first = await scripts.report(
            KEY,
            unknown,
            sent_at=100.001,
            received_at=100.001,
            retry_after=None,
            max_pause=30.0,
            now=100.001,
        )
        # 50 requests accepted in the next 0.25 s, counted by the workers.
        await scripts.acquire(KEY, unknown, want=0, horizon=0.0, accepted=50, now=100.2)
        second = await scripts.report(
            KEY,
            unknown,
            sent_at=100.251,
            received_at=100.251,
            retry_after=None,
            max_pause=30.0,
            now=100.251,
        )

        assert (200.0, None) == (first.rate, first.estimate)
        assert 200.0 == pytest.approx(second.estimate)
        assert 200.0 == pytest.approx(second.rate)

    async def test_a_stale_429_measures_too(self, scripts: LimiterScripts) -> None:
        """A 429 of a slot reserved before the last cut still says "bucket empty"."""
        unknown = params(rate=None, burst=1, initial_rate=800.0)
        await scripts.acquire(KEY, unknown, want=1, horizon=0.0, now=100.0)
        first = await scripts.report(
            KEY,
            unknown,
            sent_at=100.001,
            received_at=100.001,
            retry_after=None,
            max_pause=30.0,
            now=100.001,
        )
        await scripts.acquire(
            KEY, unknown, want=0, horizon=0.0, accepted=[100.1] * 50, now=100.2
        )
        stale = await scripts.report(
            KEY,
            unknown,
            sent_at=100.0005,
            received_at=100.251,
            retry_after=None,
            max_pause=30.0,
            reserved_at=100.0,
            now=100.251,
        )

        assert (400.0, None) == (first.rate, first.estimate)
        assert stale.stale
        assert 200.0 == pytest.approx(stale.estimate)
        assert 200.0 == pytest.approx(stale.rate)

    async def test_answers_are_counted_by_when_they_came(
        self, scripts: LimiterScripts
    ) -> None:
        """Accepted answers that came before the bucket was seen empty do not count.

        (They are reported late, after the 429, when workers are busy: counted,
        they made the measurement 25 % too high.)
        """
        unknown = params(rate=None, burst=1, initial_rate=800.0)
        await scripts.acquire(KEY, unknown, want=1, horizon=0.0, now=100.0)
        await scripts.report(
            KEY,
            unknown,
            sent_at=100.09,
            received_at=100.1,
            retry_after=None,
            max_pause=30.0,
            now=100.1,
        )
        await scripts.acquire(
            KEY,
            unknown,
            want=0,
            horizon=0.0,
            accepted=[100.05] * 10 + [100.2] * 30,
            now=100.2,
        )
        second = await scripts.report(
            KEY,
            unknown,
            sent_at=100.29,
            received_at=100.3,
            retry_after=None,
            max_pause=30.0,
            now=100.3,
        )

        assert 150.0 == pytest.approx(second.estimate)


class TestPriority:
    async def test_high_priority_callers_elsewhere_hold_normal_ones_back(
        self, scripts: LimiterScripts
    ) -> None:
        """While worker b's high-priority caller has no slot, worker a gets none."""
        config = params(rate=10.0, burst=1)

        def acquire(worker: str, now: float, want: int = 1, high: int = 0) -> Any:
            return scripts.acquire(
                KEY, config, want=want, high=high, horizon=0.05, worker=worker, now=now
            )

        first = await acquire("a", 100.0)
        waiting = await acquire("b", 100.0, high=1)  # next slot 100.1: too far
        held = await acquire("a", 100.06, want=5)  # 100.1 is within reach
        served = await acquire("b", 100.06, high=1)
        after = await acquire("a", 100.16, want=5)

        assert (100.0,) == first.slots
        assert ((), True) == (waiting.slots, waiting.registered)
        assert ((), 1) == (held.slots, held.high_elsewhere)
        assert 0 < held.retry_in < 0.05
        assert ((pytest.approx(100.1),), False) == (served.slots, served.registered)
        assert ((pytest.approx(100.2),), 0) == (after.slots, after.high_elsewhere)

    async def test_a_stopped_workers_registration_lapses(
        self, scripts: LimiterScripts
    ) -> None:
        """A worker that registered high-priority callers and died holds no one."""
        config = params(rate=10.0, burst=1)
        await scripts.acquire(KEY, config, want=1, horizon=0.05, worker="a", now=100.0)
        waiting = await scripts.acquire(
            KEY, config, want=1, high=1, horizon=0.05, worker="b", now=100.0
        )

        soon = await scripts.acquire(
            KEY, config, want=1, horizon=0.2, worker="a", now=100.1
        )
        later = await scripts.acquire(
            KEY, config, want=1, horizon=0.2, worker="a", now=100.6
        )

        assert waiting.registered
        assert ((), 1) == (soon.slots, soon.high_elsewhere)
        assert pytest.approx((100.6,)) == later.slots
        assert 0 == later.high_elsewhere

    async def test_a_high_priority_caller_goes_first_in_its_worker(
        self, redis_client: Redis
    ) -> None:
        """Within one limiter the high lane is served before queued normal callers."""
        limiter = RedisLimiter(
            redis_client, RateLimit(rate=50, adaptive=False), key=KEY
        )
        order: list[str] = []

        async def caller(name: str, priority: Priority) -> None:
            await limiter.acquire(priority=priority)
            order.append(name)

        await limiter.acquire()  # the next slot is 20 ms away
        normals = [asyncio.create_task(caller(f"n{i}", "normal")) for i in range(5)]
        await asyncio.sleep(0)
        await caller("high", "high")
        await asyncio.gather(*normals)
        await limiter.aclose()

        assert ["high", "n0", "n1", "n2", "n3", "n4"] == order

    async def test_a_high_priority_caller_goes_before_other_workers_campaigns(
        self, redis_client: Redis
    ) -> None:
        """Two workers flood normal callers; a third one's high caller cuts in.

        Its slot is the next one, before any the flooding workers had not
        reserved yet; and once it is served they go on at the pace (its
        registration is gone, not left to lapse).
        """
        rate, horizon = 20.0, 0.02
        limit = RateLimit(rate=rate, adaptive=False)
        flooders = [RedisLimiter(redis_client, limit, key=KEY) for _ in range(2)]
        single = RedisLimiter(redis_client, limit, key=KEY, horizon=horizon)
        grants: list[float] = []

        async def flood(limiter: RedisLimiter) -> None:
            async def one() -> None:
                await limiter.acquire(priority="normal")
                grants.append(time.monotonic())

            await asyncio.gather(*(one() for _ in range(12)))

        floods = [asyncio.create_task(flood(limiter)) for limiter in flooders]
        await asyncio.sleep(0.3)
        asked = time.monotonic()
        await single.acquire(priority="high")
        granted = time.monotonic()
        await asyncio.gather(*floods)
        for limiter in (*flooders, single):
            await limiter.aclose()

        # (Slots reserved before it asked, at most one horizon ahead, go first;
        # 25 ms for timers and the loop.)
        cut_in = [t for t in grants if asked + horizon + 0.025 < t < granted]
        grants.sort()
        gaps = [b - a for a, b in itertools.pairwise(grants)]
        assert [] == cut_in
        assert granted - asked < 1.5 / rate + horizon
        assert max(gaps) < 2.5 / rate


class _Distant:
    """The limiter's scripts with the acquire replies 30 ms on their way."""

    def __init__(self, scripts: LimiterScripts, reserved: asyncio.Event) -> None:
        self._scripts = scripts
        self._reserved = reserved

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scripts, name)

    async def acquire(self, *args: Any, **kwargs: Any) -> Any:
        reply = await self._scripts.acquire(*args, **kwargs)
        if kwargs.get("want"):
            self._reserved.set()
            await asyncio.sleep(0.03)
        return reply


class TestRedisLimiter:
    async def test_two_workers_together_stay_under_the_rate(
        self, redis_client: Redis
    ) -> None:
        """Two limiters on one key share the rate: 30 slots at 100/s take ~0.3 s."""
        limit = RateLimit(rate=100, burst=1)
        async with (
            RedisLimiter(redis_client, limit, key=KEY, headroom=0.0) as first,
            RedisLimiter(redis_client, limit, key=KEY, headroom=0.0) as second,
        ):
            start = time.monotonic()
            await asyncio.gather(
                *(limiter.acquire() for limiter in (first, second) for _ in range(15))
            )
            elapsed = time.monotonic() - start

        assert 0.28 <= elapsed < 0.6

    async def test_a_429_seen_by_one_worker_slows_and_pauses_the_other(
        self, redis_client: Redis
    ) -> None:
        """The pause and the lower rate reach a worker that saw no 429."""
        limit = RateLimit(rate=100, burst=1)
        async with (
            RedisLimiter(redis_client, limit, key=KEY) as seeing,
            RedisLimiter(redis_client, limit, key=KEY) as other,
        ):
            await other.acquire()
            permit = await seeing.acquire()
            sent = time.monotonic()
            permit.release(
                Feedback(sent, sent + 0.01, 429, rate_limited=True, retry_after=0.3)
            )
            await seeing.aclose()  # the report has reached Redis
            start = time.monotonic()
            await other.acquire()
            paused = time.monotonic() - start
            state = await other.shared_state()

        assert state is not None
        assert (1, 1) == (state.pauses, state.refusals)
        assert 0.25 <= paused < 0.6
        assert other.current_rate is not None
        assert other.current_rate < 99.0

    @pytest.mark.parametrize(
        "redis_far", [False, True], ids=["after-the-reservation", "during-it"]
    )
    async def test_slots_reserved_before_its_own_429_go_unused(
        self, redis_client: Redis, redis_far: bool
    ) -> None:
        """A worker that draws a 429 asks Redis again before sending more.

        (Its slots in hand were reserved before the pause: a starved worker
        sent 8 at once into the server's empty bucket, and 7 were refused.
        *redis_far*: the 429 comes while Redis's reply is on its way; found
        by an attack, a Redis 30 ms away let the slots go 35 ms after it.)
        """
        limit = RateLimit(rate=20, burst=1, adaptive=False)
        async with RedisLimiter(redis_client, limit, key=KEY, horizon=1.0) as limiter:
            await limiter.acquire()  # (the state is made: later slots are news)
            first = await limiter.acquire()
            reserved = asyncio.Event()
            if redis_far:
                # (The worker's link to Redis makes its script calls.)
                link = limiter._link
                link._scripts = _Distant(link._scripts, reserved)  # type: ignore[assignment]
            waiting = [asyncio.ensure_future(limiter.acquire()) for _ in range(3)]
            if redis_far:
                await reserved.wait()
            else:
                await asyncio.sleep(0.01)  # the dispatcher holds their 3 slots
            sent = time.monotonic()
            first.release(
                Feedback(sent, sent + 0.005, 429, rate_limited=True, retry_after=0.5)
            )
            start = time.monotonic()
            await asyncio.wait_for(waiting[0], 2.0)
            next_grant = time.monotonic() - start
            await asyncio.gather(*waiting)

        assert next_grant >= 0.45

    async def test_a_client_sends_through_it(
        self, redis_client: Redis, viber_sandbox: SandboxServer
    ) -> None:
        """AsyncViberClient takes it as rate_limit and reports its shared rate."""
        limiter = RedisLimiter(redis_client, RateLimit(rate=50, burst=4), key=KEY)
        async with AsyncViberClient(
            viber_sandbox.access_key,
            base_url=viber_sandbox.base_url,
            rate_limit=limiter,
        ) as client:
            ids = [await client.send_message(message(f"m{i}")) for i in range(3)]
        await limiter.aclose()

        assert 3 == len(set(ids))
        assert 49.5 == pytest.approx(client.current_rate)
        assert 3 == viber_sandbox.sandbox.stats.accepted


async def campaign(
    redis: Redis, sandbox: SandboxServer, limit: RateLimit, total: int, workers: int = 2
) -> tuple[float, int]:
    """*total* messages through *workers* limiters on one key, at once.

    Returns the seconds from the first send to the last result, and how many
    were sent.
    """
    limiters = [RedisLimiter(redis, limit, key=KEY) for _ in range(workers)]
    clients = [
        AsyncViberClient(
            sandbox.access_key, base_url=sandbox.base_url, rate_limit=limiter
        )
        for limiter in limiters
    ]
    share = total // workers

    async def run(client: AsyncViberClient, first: int) -> int:
        messages = (message(f"m{i}") for i in range(first, first + share))
        return sum([result.ok async for result in client.send_messages(messages)])

    start = time.monotonic()
    sent = await asyncio.gather(
        *(run(client, index * share) for index, client in enumerate(clients))
    )
    elapsed = time.monotonic() - start
    for client in clients:
        await client.aclose()
    for limiter in limiters:
        await limiter.aclose()
    return elapsed, sum(sent)


@pytest.fixture
async def warm_sandbox(viber_sandbox: SandboxServer) -> SandboxServer:
    """The sandbox, after a few unpaced requests (then forgotten).

    It shares this process: cold, its first requests wait for the GIL (the
    client starting up holds it) and arrive all at once, which a real server
    would not see.
    """
    async with AsyncViberClient(
        viber_sandbox.access_key, base_url=viber_sandbox.base_url, rate_limit=None
    ) as client:
        async for _ in client.send_messages(message() for _ in range(20)):
            pass
    viber_sandbox.sandbox.reset()
    return viber_sandbox


@pytest.mark.viber_sandbox(rate_limit=200, burst=20, record_requests=False)
class TestConfiguredPacing:
    """Two workers with RateLimit(rate, burst) against a 200/s, burst-20 server."""

    @pytest.mark.parametrize(
        ("rate", "burst", "total"),
        [(200, 20, 600), (100, 10, 300)],
        ids=["exact", "half"],
    )
    async def test_at_or_below_the_limit(
        self,
        redis_client: Redis,
        warm_sandbox: SandboxServer,
        rate: int,
        burst: int,
        total: int,
    ) -> None:
        """All sent, (nearly) no 429, near the ideal time at that rate.

        The 1.05x and 0.5 % targets are measured by ``nox -s bench`` on a
        quiet machine; here the bounds only catch a pace gone wrong (half
        the rate is 2x; the bug this guards against lost 44 % of a
        campaign), not a loaded CI runner's scheduling delays (one clean-
        clone run: 1.21x the ideal and 4 429s, where quiet runs have 0).
        """
        elapsed, sent = await campaign(
            redis_client, warm_sandbox, RateLimit(rate=rate, burst=burst), total
        )

        stats = warm_sandbox.sandbox.stats
        ideal = (total - burst) / rate
        print(  # noqa: T201 - the figures, with -s
            f"\n{rate}/s burst {burst}: {sent} sent in {elapsed:.2f} s "
            f"({elapsed / ideal:.3f}x the ideal), {stats.rate_limited} 429s"
        )
        assert (total, total) == (sent, stats.accepted)
        assert stats.rate_limited <= 0.01 * total
        assert elapsed <= 1.3 * ideal + 0.3

    async def test_above_the_limit(
        self, redis_client: Redis, warm_sandbox: SandboxServer
    ) -> None:
        """5 % above the limit: nothing lost, the 429s teach the real limit."""
        total = 600
        elapsed, sent = await campaign(
            redis_client, warm_sandbox, RateLimit(rate=210, burst=20), total
        )

        stats = warm_sandbox.sandbox.stats
        ideal = (total - 20) / 200
        print(  # noqa: T201 - the figures, with -s
            f"\n210/s burst 20: {sent} sent in {elapsed:.2f} s "
            f"({elapsed / ideal:.3f}x the ideal at 200/s), {stats.rate_limited} 429s"
        )
        assert (total, total) == (sent, stats.accepted)
        assert stats.rate_limited <= 0.02 * total
        assert elapsed <= 1.4 * ideal + 0.3


@pytest.fixture
async def unreachable_redis() -> AsyncIterator[Redis]:
    """A client of a port where no Redis listens."""
    client = Redis(host="127.0.0.1", port=unused_port(), socket_connect_timeout=1)
    yield client
    await client.aclose()


class TestRedisUnavailable:
    async def test_failing_closed_raises_before_sending(
        self,
        unreachable_redis: Redis,
        viber_sandbox: SandboxServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """on_unavailable='raise': RedisUnavailableError, no request, one log line."""
        limiter = RedisLimiter(unreachable_redis, RateLimit(rate=50), key=KEY)
        async with AsyncViberClient(
            viber_sandbox.access_key,
            base_url=viber_sandbox.base_url,
            rate_limit=limiter,
        ) as client:
            with caplog.at_level(logging.WARNING, logger="decisiontelecom_viber"):
                for _ in range(2):
                    with pytest.raises(RedisUnavailableError):
                        await client.send_message(message())
        await limiter.aclose()

        assert 0 == viber_sandbox.sandbox.stats.requests
        assert not limiter.redis_available
        assert 1 == len(ours(caplog))
        assert "failing closed" in ours(caplog)[0].getMessage()

    async def test_falling_back_to_a_local_limiter(
        self,
        unreachable_redis: Redis,
        viber_sandbox: SandboxServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """on_unavailable='local': sends go on, paced by a local AdaptiveLimiter."""
        limiter = RedisLimiter(
            unreachable_redis,
            RateLimit(rate=50),
            key=KEY,
            on_unavailable="local",
            local_limit=RateLimit(rate=20),
        )
        async with AsyncViberClient(
            viber_sandbox.access_key,
            base_url=viber_sandbox.base_url,
            rate_limit=limiter,
        ) as client:
            with caplog.at_level(logging.WARNING, logger="decisiontelecom_viber"):
                ids = [await client.send_message(message(f"m{i}")) for i in range(3)]
        await limiter.aclose()

        assert 3 == len(set(ids))
        assert pytest.approx(20.0 * 0.99) == limiter.current_rate
        assert not limiter.redis_available
        assert 1 == len(ours(caplog))
        assert "limiting this worker locally" in ours(caplog)[0].getMessage()

    async def test_the_local_fallback_keeps_the_priority_lanes(
        self, unreachable_redis: Redis
    ) -> None:
        """While Redis is down, high-priority callers still go first (locally)."""
        clock = FakeClock()
        limiter = RedisLimiter(
            unreachable_redis,
            RateLimit(rate=10, adaptive=False),
            key=KEY,
            on_unavailable="local",
            clock=clock,
        )
        order: list[str] = []

        async def caller(name: str, priority: Priority) -> None:
            await limiter.acquire(priority=priority)
            order.append(name)

        await limiter.acquire()  # Redis found down: the local limiter paces
        normals = [asyncio.create_task(caller(f"n{i}", "normal")) for i in range(3)]
        await asyncio.sleep(0)
        await asyncio.gather(caller("high", "high"), *normals)
        await limiter.aclose()

        assert not limiter.redis_available
        assert ["high", "n0", "n1", "n2"] == order

    async def test_the_shared_limit_resumes_when_redis_is_back(
        self,
        start_redis_server: Callable[[int], AbstractContextManager[RedisServer]],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A local fallback tries Redis again, and says when it is back."""
        port = unused_port()
        redis = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        clock = FakeClock()
        limiter = RedisLimiter(
            redis,
            RateLimit(rate=50),
            key=KEY,
            on_unavailable="local",
            recheck_interval=5.0,
            clock=clock,
        )
        with caplog.at_level(logging.INFO, logger="decisiontelecom_viber"):
            permit = await limiter.acquire()
            down = limiter.redis_available
            permit.release(Feedback(clock.now, clock.now, 200))
            with start_redis_server(port):
                permit = await limiter.acquire()
                still_local = limiter.redis_available
                permit.release(Feedback(clock.now, clock.now, 200))
                clock.advance(5.0)
                await limiter.acquire()
                state = await limiter.shared_state()
                await limiter.aclose()
                await redis.aclose()

        assert (False, False, True) == (down, still_local, limiter.redis_available)
        assert state is not None
        assert 49.5 == pytest.approx(state.rate)
        assert "available again" in ours(caplog)[-1].getMessage()


class TestSettings:
    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"key": ""}, id="empty key"),
            pytest.param({"on_unavailable": "ignore"}, id="unknown fallback"),
            pytest.param({"headroom": 1.0}, id="all headroom"),
            pytest.param({"horizon": 0}, id="no horizon"),
            pytest.param({"state_ttl": -1}, id="negative ttl"),
        ],
    )
    async def test_invalid_settings_are_refused(
        self, redis_client: Redis, options: dict[str, Any]
    ) -> None:
        """Each setting is checked when the limiter is built."""
        with pytest.raises(ConfigurationError):
            RedisLimiter(redis_client, RateLimit(rate=10), **options)

    async def test_current_rate_is_the_paced_rate(self, redis_client: Redis) -> None:
        """RateLimit(rate=10) paces at 9.9/s; with adaptive=False at 10/s exactly."""
        rates = []
        for adaptive in (True, False):
            limiter = RedisLimiter(
                redis_client, RateLimit(rate=10, adaptive=adaptive), key=KEY
            )
            before = limiter.current_rate
            await limiter.acquire()
            rates.append((before, limiter.current_rate))
            await limiter.aclose()

        for expected, (before, after) in zip((9.9, 10.0), rates, strict=True):
            assert pytest.approx(expected) == before
            assert pytest.approx(expected) == after

    async def test_reset_forgets_the_shared_state(self, redis_client: Redis) -> None:
        """After reset() there is no shared state until the next call."""
        limiter = RedisLimiter(redis_client, RateLimit(rate=10), key=KEY)
        await limiter.acquire()
        before = await limiter.shared_state()

        await limiter.reset()

        assert before is not None
        assert 9.9 == pytest.approx(before.rate)
        assert await limiter.shared_state() is None
        await limiter.aclose()


async def test_a_grant_never_wins_over_the_callers_cancel(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled in the very turn its slot is granted: the caller sees the cancel."""
    from decisiontelecom_viber import _waiters

    victims: list[asyncio.Task[object]] = []
    grant = _waiters.WaitQueue.grant

    def grant_and_cancel(self: Any, value: Any) -> bool:
        granted = grant(self, value)
        if granted and victims:
            victims.pop().cancel()
        return granted

    monkeypatch.setattr(_waiters.WaitQueue, "grant", grant_and_cancel)
    limiter = RedisLimiter(redis_client, RateLimit(rate=5), key=KEY)
    waiter = asyncio.create_task(limiter.acquire(time.monotonic() + 10))
    victims.append(waiter)

    await asyncio.gather(waiter, return_exceptions=True)
    await limiter.aclose()

    assert waiter.cancelled()
