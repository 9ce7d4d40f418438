"""The adaptive limiter: pieces on a fake clock, then whole runs in virtual time."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from decisiontelecom_viber import (
    AdaptiveLimiter,
    AsyncViberClient,
    ConfigurationError,
    Feedback,
    Permit,
    RateLimit,
    RateLimitHeaders,
    ViberMessage,
)
from decisiontelecom_viber._limits import parse_rate_limit_headers

from .helpers import FakeClock
from .simulation import BucketServer, LoopClock, run_virtual


class HeldLimiter(AdaptiveLimiter):
    """An AdaptiveLimiter whose permits are kept and released oldest first.

    The pieces below exercise the algorithm, not the permit bookkeeping:
    ``acquire`` returns the seconds waited, ``release`` releases the oldest
    permit held.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: collections.deque[Permit] = collections.deque()

    async def acquire(self, deadline: float | None = None) -> float:  # type: ignore[override]
        permit = await super().acquire(deadline)
        self.held.append(permit)
        return permit.waited

    def release(self, feedback: Feedback) -> None:
        self.held.popleft().release(feedback)


def ok(sent: float, received: float | None = None, **kwargs: Any) -> Feedback:
    return Feedback(
        sent, received if received is not None else sent + 0.001, 200, **kwargs
    )


def refused(sent: float, received: float | None = None, **kwargs: Any) -> Feedback:
    at = received if received is not None else sent + 0.001
    return Feedback(sent, at, 429, rate_limited=True, **kwargs)


class TestConfig:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"rate": 0},
            {"rate": -5},
            {"burst": 0},
            {"burst": 1.5},
            {"initial_window": 0},
            {"adaptive": False},
            {"max_pause": 0},
        ],
    )
    def test_invalid(self, kwargs: dict[str, Any]) -> None:
        """Nonsense settings fail when built (a fixed limiter needs a rate)."""
        with pytest.raises(ConfigurationError):
            RateLimit(**kwargs)

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({}, None),
            (
                {
                    "X-Rate-Limit-Limit": "20",
                    "X-Rate-Limit-Remaining": "3",
                    "X-Rate-Limit-Reset": "1",
                },
                RateLimitHeaders(20, 3, 1),
            ),
            ({"X-Rate-Limit-Remaining": "0"}, RateLimitHeaders(None, 0, None)),
            ({"X-Rate-Limit-Limit": "x", "X-Rate-Limit-Remaining": "-1"}, None),
            (
                {"X-Rate-Limit-Limit": "5", "X-Rate-Limit-Remaining": "y"},
                RateLimitHeaders(5, None, None),
            ),
        ],
    )
    def test_headers(
        self, headers: dict[str, str], expected: RateLimitHeaders | None
    ) -> None:
        """Yii2 headers are read tolerantly; garbage counts as absent."""
        assert expected == parse_rate_limit_headers(httpx.Headers(headers))


async def grant_times(
    limiter: HeldLimiter, clock: FakeClock, count: int
) -> list[float]:
    times = []
    for _ in range(count):
        start = clock.now
        waited = await limiter.acquire()
        times.append(round(start + waited - 1000.0, 6))
        limiter.release(ok(start + waited))
    return times


class TestPacing:
    async def test_fixed_rate(self, clock: FakeClock) -> None:
        """A fixed 10/s rate lets one request go every 0.1 s."""
        limiter = HeldLimiter(RateLimit(rate=10, adaptive=False), clock)

        assert [0.0, 0.1, 0.2, 0.3, 0.4] == await grant_times(limiter, clock, 5)

    async def test_burst(self, clock: FakeClock) -> None:
        """burst=3 lets three go at once, then the rate applies."""
        limiter = HeldLimiter(RateLimit(rate=10, burst=3, adaptive=False), clock)

        assert [0.0, 0.0, 0.0, 0.1, 0.2] == await grant_times(limiter, clock, 5)

    async def test_concurrent_callers_queue_in_order(self, clock: FakeClock) -> None:
        """Many waiting callers are granted one slot each, in arrival order."""
        limiter = HeldLimiter(RateLimit(rate=100, adaptive=False), clock)
        order: list[int] = []

        async def caller(n: int) -> None:
            await limiter.acquire()
            order.append(n)

        await asyncio.gather(*(caller(n) for n in range(10)))

        assert list(range(10)) == order
        assert pytest.approx(0.09, abs=1e-6) == clock.now - 1000.0

    async def test_429_pauses_everyone_for_retry_after(self, clock: FakeClock) -> None:
        """A refusal with Retry-After pauses every caller until then."""
        limiter = HeldLimiter(RateLimit(rate=100, adaptive=False), clock)
        await limiter.acquire()
        limiter.release(refused(clock.now, retry_after=2.0))

        waited = await limiter.acquire()

        assert pytest.approx(2.0, abs=0.011) == waited
        assert 1 == limiter.pauses

    async def test_reset_header_sets_the_pause(self, clock: FakeClock) -> None:
        """Without Retry-After, X-Rate-Limit-Reset gives the pause."""
        limiter = HeldLimiter(RateLimit(rate=100, adaptive=False), clock)
        await limiter.acquire()
        limiter.release(refused(clock.now, headers=RateLimitHeaders(10, 0, 3)))

        assert pytest.approx(3.0, abs=0.011) == await limiter.acquire()

    async def test_server_pause_is_capped(self, clock: FakeClock) -> None:
        """A huge Retry-After is capped at max_pause."""
        limiter = HeldLimiter(RateLimit(rate=100, adaptive=False, max_pause=5), clock)
        await limiter.acquire()
        limiter.release(refused(clock.now, retry_after=3600))

        assert await limiter.acquire() <= 5.01

    async def test_cancelled_waiter_leaves_nothing_behind(
        self, clock: FakeClock
    ) -> None:
        """Cancelling a queued caller removes it; the dispatcher task ends."""
        limiter = HeldLimiter(RateLimit(rate=1, adaptive=False), clock)
        await limiter.acquire()
        before = asyncio.all_tasks()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0)

        assert before == asyncio.all_tasks()
        assert 1 == limiter.in_flight


class TestSlowStart:
    async def test_window_limits_requests_in_flight(self, clock: FakeClock) -> None:
        """With no known limit, only initial_window requests go before answers."""
        limiter = HeldLimiter(RateLimit(initial_window=2), clock)
        await limiter.acquire()
        await limiter.acquire()
        third = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)

        assert not third.done()
        limiter.release(ok(clock.now))
        await third
        assert 2 == limiter.in_flight
        assert limiter.current_rate is None

    async def test_window_grows_and_opens_on_an_unlimited_server(
        self, clock: FakeClock
    ) -> None:
        """Every answer widens the window by half; past 512 there is no limit."""
        limiter = HeldLimiter(RateLimit(initial_window=2), clock)
        for _ in range(1_100):
            await limiter.acquire()
            limiter.release(ok(clock.now))

        assert limiter._window is None
        assert limiter.current_rate is None

    async def test_first_refusal_starts_pacing(self, clock: FakeClock) -> None:
        """The first 429 switches to a rate (initial_rate) and pauses senders."""
        limiter = HeldLimiter(RateLimit(initial_rate=40), clock)
        sent = clock.now
        await limiter.acquire()
        limiter.release(refused(sent))

        assert 40 == limiter.current_rate
        assert limiter.pauses == 1

    async def test_stale_refusals_do_not_cut_the_rate_again(
        self, clock: FakeClock
    ) -> None:
        """429s for requests sent before a change are not news."""
        limiter = HeldLimiter(RateLimit(initial_rate=40, initial_window=4), clock)
        sent = clock.now
        for _ in range(3):
            await limiter.acquire()
        limiter.release(refused(sent, sent + 0.01))
        limiter.release(refused(sent, sent + 0.02))
        limiter.release(refused(sent, sent + 0.03))

        assert 40 == limiter.current_rate


class TestAdaptation:
    async def test_rate_measured_between_two_empty_buckets(
        self, clock: FakeClock
    ) -> None:
        """Accepted requests between two 429s, over the time between: the limit."""
        limiter = HeldLimiter(RateLimit(rate=1000, burst=1000), clock)
        await limiter.acquire()
        limiter.release(refused(1000.0, 1000.0))
        for n in range(60):
            await limiter.acquire()
            limiter.release(ok(1000.001 + n * 0.01))
        clock.now = 1000.5
        await limiter.acquire()
        limiter.release(refused(1000.5, 1000.5))

        assert pytest.approx(120, rel=0.01) == limiter.estimated_limit
        assert pytest.approx(120 * 0.99, rel=0.01) == limiter.current_rate

    async def test_rate_measured_from_remaining(self, clock: FakeClock) -> None:
        """Remaining went 10 -> 6 while 24 were accepted in 0.2 s: 100/s."""
        limiter = HeldLimiter(RateLimit(rate=500), clock)
        await limiter.acquire()
        limiter.release(ok(1000.0, 1000.0, headers=RateLimitHeaders(50, 10, 0)))
        for n in range(23):
            await limiter.acquire()
            limiter.release(ok(1000.0 + n * 0.008))
        await limiter.acquire()
        limiter.release(ok(1000.2, 1000.2, headers=RateLimitHeaders(50, 6, 0)))

        assert pytest.approx(100, rel=0.01) == limiter.estimated_limit
        assert pytest.approx(99, rel=0.01) == limiter.current_rate

    async def test_low_remaining_pauses_before_a_refusal(
        self, clock: FakeClock
    ) -> None:
        """Remaining 0 with a known rate: wait for a token instead of a 429."""
        limiter = HeldLimiter(RateLimit(rate=10, adaptive=False), clock)
        await limiter.acquire()
        limiter.release(ok(clock.now, clock.now, headers=RateLimitHeaders(5, 0, 1)))

        waited = await limiter.acquire()

        assert pytest.approx(0.1, abs=0.011) == waited
        assert 0 == limiter.pauses  # no refusal was needed

    async def test_quiet_saturated_limiter_probes_upward(
        self, clock: FakeClock
    ) -> None:
        """Without refusals, while callers wait, the rate climbs."""
        limiter = HeldLimiter(RateLimit(rate=50), clock)

        async def caller() -> None:
            for _ in range(100):
                start = clock.now
                waited = await limiter.acquire()
                limiter.release(ok(start + waited))

        await asyncio.gather(*(caller() for _ in range(4)))

        assert limiter.current_rate is not None
        assert limiter.current_rate > 55

    async def test_fixed_rate_never_changes(self, clock: FakeClock) -> None:
        """adaptive=False keeps the configured rate whatever happens."""
        limiter = HeldLimiter(RateLimit(rate=50, adaptive=False), clock)
        await limiter.acquire()
        limiter.release(refused(clock.now))

        assert 50 == limiter.current_rate


def simulate(
    server: BucketServer, count: int, concurrency: int = 64, **client: Any
) -> tuple[int, float, AsyncViberClient]:
    """Send *count* messages with the real client to *server*, in virtual time."""

    async def main() -> tuple[int, float, AsyncViberClient]:
        http = httpx.AsyncClient(transport=server.transport())
        clock = LoopClock()
        async with AsyncViberClient(
            "key",
            base_url="http://127.0.0.1/v1/api",
            http_client=http,
            clock=clock,
            **client,
        ) as viber:
            messages = (
                ViberMessage.transactional(sender="A", receiver="1", text=f"m{n}")
                for n in range(count)
            )
            start = clock.monotonic()
            sent = sum(
                [
                    r.ok
                    async for r in viber.send_messages(
                        messages, concurrency=concurrency
                    )
                ]
            )
            elapsed = clock.monotonic() - start
        await http.aclose()
        return sent, elapsed, viber

    return run_virtual(main())


class TestConvergence:
    """Whole runs of the real client against a simulated Yii2 rate limiter."""

    def test_discovers_the_limit_without_configuration(self) -> None:
        """200/s, burst 20, 2,000 messages: all sent, near the ideal time, few 429s."""
        server = BucketServer(rate=200, burst=20)

        sent, elapsed, client = simulate(server, 2000)

        assert 2000 == sent
        assert elapsed <= 1.05 * 2000 / 200
        assert server.refused <= 0.02 * 2000
        assert pytest.approx(200, rel=0.03) == client.metrics.estimated_limit

    def test_uses_yii2_headers_proactively(self) -> None:
        """With X-Rate-Limit-* headers: at most 0.5 % refused."""
        server = BucketServer(rate=200, burst=20, headers=True)

        sent, elapsed, _ = simulate(server, 2000)

        assert 2000 == sent
        assert elapsed <= 1.05 * 2000 / 200
        assert server.refused <= 0.005 * 2000

    def test_configured_rate_below_the_limit_never_refused(self) -> None:
        """A fixed rate under the server's limit gets no 429 at all."""
        server = BucketServer(rate=100, burst=5)

        sent, elapsed, _ = simulate(
            server, 300, rate_limit=RateLimit(rate=90, adaptive=False)
        )

        assert (300, 0) == (sent, server.refused)
        assert pytest.approx(300 / 90, rel=0.05) == elapsed

    def test_unlimited_server_is_not_slowed(self) -> None:
        """No 429 ever: the limiter never paces (slow start opens up)."""
        server = BucketServer(rate=1e9, burst=10**9, latency=0.01)

        sent, elapsed, client = simulate(server, 5000, concurrency=64)

        assert 5000 == sent
        assert client.current_rate is None
        # 64 in flight at 10 ms each: the latency bound is 0.78 s.
        assert elapsed <= 0.9

    def test_a_lowered_limit_is_followed(self) -> None:
        """When the limit drops mid-run, the rate follows it down."""
        server = BucketServer(rate=200, burst=20)

        async def lower_later() -> None:
            await asyncio.sleep(3)
            server.rate = server.bucket.rate = 100

        async def main() -> AsyncViberClient:
            http = httpx.AsyncClient(transport=server.transport())
            clock = LoopClock()
            async with AsyncViberClient(
                "key", base_url="http://127.0.0.1/v1/api", http_client=http, clock=clock
            ) as viber:
                asyncio.get_running_loop().create_task(lower_later())
                messages = (
                    ViberMessage.transactional(sender="A", receiver="1", text=f"m{n}")
                    for n in range(1500)
                )
                assert 1500 == sum([r.ok async for r in viber.send_messages(messages)])
            await http.aclose()
            return viber

        client = run_virtual(main())

        estimate = client.metrics.estimated_limit
        assert estimate is not None
        assert 90 <= estimate <= 110
        # The rate may be mid-probe above the estimate (5 % steps until the
        # next 429), but nowhere near the old 200/s.
        assert client.current_rate is not None
        assert 90 <= client.current_rate <= 1.2 * estimate


def test_virtual_time_is_deterministic() -> None:
    """Two identical simulated runs give identical numbers."""
    first = BucketServer(rate=150, burst=10)
    second = BucketServer(rate=150, burst=10)

    a = simulate(first, 500)[:2]
    b = simulate(second, 500)[:2]

    assert (a, first.refused) == (b, second.refused)


MakeClient = Callable[..., AsyncViberClient]
