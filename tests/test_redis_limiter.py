"""`RedisLimiter` and its Lua scripts, against a real redis-server.

The scripts take the time as an argument when asked (``now=``), so most of
their decisions are tested on a controlled clock; the limiter itself is
tested in (short) real time.
"""

from __future__ import annotations

import asyncio
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
        slots = []
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

        assert (10.0, 101.01) == (report.rate, pytest.approx(report.paused_until))

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
            reply = await scripts.acquire(KEY, config, want=50, horizon=0.0, now=now)
            rates.append(reply.rate)

        assert rates[0] < 98.0
        assert 98.0 == pytest.approx(rates[-1])
        assert max(rates) <= 98.0 + 1e-9


class TestUnknownLimit:
    async def test_starts_at_the_initial_rate_and_ramps_while_callers_wait(
        self, scripts: LimiterScripts
    ) -> None:
        """With no rate configured the shared rate doubles every 50 ms of demand."""
        unknown = params(rate=None, burst=1, initial_rate=50.0)
        rates = []
        for step in range(4):
            # 1/16 s apart (exact in binary), a bit more than 50 ms
            reply = await scripts.acquire(
                KEY, unknown, want=20, horizon=0.0, now=100.0 + step / 16
            )
            rates.append(reply.rate)

        assert [50.0, 100.0, 200.0, 400.0] == rates
        assert reply.estimate is None

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
        self, redis_client: Redis, options: dict[str, object]
    ) -> None:
        """Each setting is checked when the limiter is built."""
        with pytest.raises(ConfigurationError):
            RedisLimiter(redis_client, RateLimit(rate=10), **options)

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
    victims.append(waiter)  # type: ignore[arg-type]

    await asyncio.gather(waiter, return_exceptions=True)
    await limiter.aclose()

    assert waiter.cancelled()
