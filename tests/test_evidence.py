"""Rate-limit headers read as evidence (`_evidence`): pure tables, then whole runs."""

from __future__ import annotations

from typing import Any

import pytest

from decisiontelecom_viber import RateLimit
from decisiontelecom_viber._evidence import Dialect, ServerView, TickPhase

from .simulation import BucketServer
from .test_ratelimit import simulate


def answer(
    view: ServerView,
    sent: float,
    remaining: int | None,
    *,
    limit: int | None = 10,
    reset: float | None = 0,
    refused: bool = False,
    received: float | None = None,
) -> None:
    view.observe(
        sent,
        received if received is not None else sent + 0.001,
        refused=refused,
        limit=limit,
        remaining=remaining,
        reset=reset,
    )


class TestDialect:
    @pytest.mark.parametrize(
        ("answers", "dialect", "window"),
        [
            # Yii2: a 429 says Reset = window (a whole number >= 1).
            ([{"remaining": 0, "reset": 3, "refused": True}], Dialect.YII2, 3),
            # ... and later successes fit int((limit - remaining - 1) * 3 / limit).
            (
                [
                    {"remaining": 0, "reset": 3, "refused": True},
                    {"remaining": 4, "reset": 1},
                ],
                Dialect.YII2,
                3,
            ),
            # "Seconds until full" on a 429 of a nearly full bucket: 0.
            ([{"remaining": 0, "reset": 0, "refused": True}], Dialect.CONTINUOUS, None),
            # "Seconds until the next token", at least 1, for a full bucket:
            # Yii2 would say that only for a window of 10 to 19 s...
            ([{"remaining": 9, "reset": 1}], Dialect.UNKNOWN, None),
            # ... which its 429's Reset = 1 then contradicts.
            (
                [
                    {"remaining": 9, "reset": 1},
                    {"remaining": 0, "reset": 1, "refused": True},
                ],
                Dialect.CONTINUOUS,
                None,
            ),
            # Yii2 at 60 per 60 s (2.0.14): Reset int(1 * 60 / 60) = 1, then 60.
            (
                [
                    {"remaining": 59, "reset": 1, "limit": 60},
                    {"remaining": 0, "reset": 60, "refused": True, "limit": 60},
                ],
                Dialect.YII2,
                60,
            ),
            # Yii2 says Reset = int(5 * 3 / 10) = 1 here, not 2.
            (
                [
                    {"remaining": 0, "reset": 3, "refused": True},
                    {"remaining": 4, "reset": 2},
                ],
                Dialect.CONTINUOUS,
                None,
            ),
            # Both Yii2 formulas: int((10 - 3) * 3 / 10) = 2 (2.0.14 and later)
            # and int((10 - 3 - 1) * 3 / 10) = 1 (before).
            *(
                (
                    [
                        {"remaining": 0, "reset": 3, "refused": True},
                        {"remaining": 3, "reset": reset},
                    ],
                    Dialect.YII2,
                    3,
                )
                for reset in (1, 2)
            ),
            # Nothing told apart yet.
            ([{"remaining": 5, "reset": 0}], Dialect.UNKNOWN, None),
            # A 429 with tokens left, or more left than the bucket holds.
            ([{"remaining": 3, "reset": 1, "refused": True}], Dialect.NONSENSE, None),
            ([{"remaining": 11, "reset": 0}], Dialect.NONSENSE, None),
        ],
    )
    def test_inferred(
        self, answers: list[dict[str, Any]], dialect: Dialect, window: int | None
    ) -> None:
        view = ServerView()
        for n, fields in enumerate(answers):
            answer(view, 100.0 + n * 0.01, **fields)

        assert (dialect, window) == (view.dialect, view.window)

    def test_nonsense_headers_give_no_credit(self) -> None:
        """Once the headers contradict themselves, Remaining is not believed."""
        view = ServerView()
        answer(view, 100.0, 11)
        answer(view, 100.1, 9)

        assert view.credit(100.2, in_flight=0) is None


def test_tokens_between_known_ticks_are_not_yii2() -> None:
    """Limit 2, Reset 1 reads like Yii2 at 2 per 1 s; a token mid-second does not.

    Once the tick's phase is known, one probe goes half-way between two
    ticks: Yii2 refuses it, a continuous bucket (burst 1) accepts it.
    """
    view = ServerView()
    answer(view, 100.0, 0, limit=2, reset=1)
    answer(view, 100.01, 0, limit=2, reset=1, refused=True)
    answer(view, 100.998, 0, limit=2, reset=1, refused=True)
    answer(view, 101.0, 0, limit=2, reset=1)  # a tick in (100.998, 101.0]
    assert view.quantized
    assert view.ticks is not None
    assert (100.998, 101.0) == (view.ticks.lower, view.ticks.upper)
    answer(view, 101.1, 0, limit=2, reset=1, refused=True)
    # The phase is known: the next probe checks half-way.
    assert pytest.approx(101.5) == view.next_tokens_at(101.11)
    view.granting_without_credit(101.5)
    answer(view, 101.5, 0, limit=2, reset=1)  # accepted: tokens trickle in

    assert Dialect.CONTINUOUS == view.dialect
    assert not view.quantized


def test_a_bucket_of_one_is_never_taken_for_yii2() -> None:
    """Limit 1, Reset 1 on a 429: Yii2 at 1/s, or a bucket of one token.

    The headers cannot tell them apart, and a bucket of one refilling every
    millisecond taken for Yii2 was paced at 1/s (191x the ideal time, a
    configured rate overridden): such headers are read as a continuous bucket.
    """
    view = ServerView()
    answer(view, 100.0, 0, limit=1, reset=1)
    answer(view, 100.01, 0, limit=1, reset=1, refused=True)

    assert Dialect.CONTINUOUS == view.dialect
    assert view.rate is None
    assert not view.quantized


def test_yii2_refuses_the_half_way_probe() -> None:
    """A 429 half-way between known ticks confirms Yii2: no more such probes."""
    view = ServerView()
    answer(view, 100.0, 0, limit=200, reset=1, refused=True)
    answer(view, 100.998, 0, limit=200, reset=1, refused=True)
    answer(view, 101.0, 199, limit=200)
    answer(view, 101.01, 0, limit=200, reset=1)  # (the rest spent meanwhile)
    answer(view, 101.5, 0, limit=200, reset=1, refused=True)

    assert view.quantized
    assert pytest.approx(102.0) == view.next_tokens_at(101.6)


class TestCredit:
    def test_remaining_minus_in_flight(self) -> None:
        view = ServerView()
        answer(view, 100.0, 7)

        assert 7 == view.credit(100.1, in_flight=0)
        assert 4 == view.credit(100.1, in_flight=3)

    def test_the_fewest_left_wins_when_answers_cross(self) -> None:
        """Answers come back out of order: the lowest Remaining is the newest state."""
        view = ServerView()
        answer(view, 100.000, 5, received=100.010)
        answer(view, 100.001, 7, received=100.011)  # handled earlier

        assert 5 == view.credit(100.02, in_flight=0)

    def test_tokens_made_later_are_believed(self) -> None:
        """A request sent after an answer came, reporting as many left: new tokens."""
        view = ServerView()
        answer(view, 100.0, 2)
        answer(view, 100.5, 6)

        assert 6 == view.credit(100.6, in_flight=0)


class TestYii2Ticks:
    def test_first_429_brackets_the_tick_within_a_second(self) -> None:
        view = ServerView()
        answer(view, 100.0, 0, reset=1, refused=True)

        assert view.quantized
        assert TickPhase(100.0, 101.0) == view.ticks
        # No token before the next tick; the probe goes mid-way.
        assert 0 == view.credit(100.1, in_flight=0)
        assert pytest.approx(100.5) == view.next_tokens_at(100.1)

    def test_probe_results_halve_the_interval(self) -> None:
        view = ServerView(limit=200)
        answer(view, 100.0, 0, limit=200, reset=1, refused=True)
        # The probe at 100.5 is refused: the tick is later.
        view.granting_without_credit(100.5)
        answer(view, 100.5, 0, limit=200, reset=1, refused=True)
        # No second probe before the safe time.
        assert pytest.approx(101.0) == view.next_tokens_at(100.6)
        assert view.ticks is not None
        # At the safe time, 101.0, the tokens came (199 left): narrowed again.
        answer(view, 101.0, 199, limit=200)
        assert (100.5, 101.0) == (view.ticks.lower, view.ticks.upper)

    def test_credit_counts_ticks_after_the_basis(self) -> None:
        """An empty bucket gets limit / window tokens at each safe tick."""
        view = ServerView()
        answer(view, 100.0, 0, limit=600, reset=3, refused=True)
        assert 200 == view.per_tick

        assert 0 == view.credit(100.9, in_flight=0)
        assert 200 == view.credit(101.0, in_flight=0)
        assert 400 == view.credit(102.0, in_flight=0)
        # Never more than the bucket holds.
        assert 600 == view.credit(110.0, in_flight=0)

    def test_a_contradicting_interval_starts_again(self) -> None:
        phase = TickPhase(100.40, 100.45)

        phase.narrow(101.70, 101.75)

        assert (100.70, 100.75) == pytest.approx((phase.lower, phase.upper))

    def test_a_too_wide_interval_says_nothing(self) -> None:
        phase = TickPhase(100.40, 100.45)

        phase.narrow(100.0, 101.5)

        assert (100.40, 100.45) == (phase.lower, phase.upper)


@pytest.mark.parametrize("epoch", [1_700_000_000.0, 1_700_000_000.5, 1_700_000_000.99])
def test_yii2_truncated_refills(epoch: float) -> None:
    """Yii2 at 3 per 2 s: a second brings int(1 * 3 / 2) = 1 token, the half lost.

    The timestamp is saved on every request, so a client sending every
    second gets 1/s, not 1.5/s: the SDK follows the 1/s without a 429 storm
    (finding the tick costs at most one early probe a second, until it is
    known within 3 ms: log2(1 s / 3 ms), about 9).
    """
    server = BucketServer(rate=1.5, headers="yii2", window=2, epoch=epoch)

    sent, elapsed, _ = simulate(server, 20)

    assert 20 == sent
    assert server.capacity == 3
    # 3 at once, then one per second: 17 seconds, plus at most one to find the tick.
    assert 16.0 <= elapsed <= 19.0
    assert server.refused <= 11  # (and one probe half-way, to confirm)


def test_headers_contradicting_429s_fall_back_to_header_blind_pacing() -> None:
    """Remaining always "10" (a proxy's constant): as fast as without headers."""

    class Lying(BucketServer):
        def take(self, now: float) -> tuple[bool, dict[str, str]]:
            ok, extra = super().take(now)
            if extra:
                extra["X-Rate-Limit-Remaining"] = "10"
            return ok, extra

    lying = Lying(rate=200, burst=20, headers="full-reset")
    blind = BucketServer(rate=200, burst=20)

    sent, elapsed, _ = simulate(lying, 1000)
    _, blind_elapsed, _ = simulate(blind, 1000)

    assert 1000 == sent
    # (Known cost: the 429s that expose the lie come before any rate is
    # measured, and the search restarts from half the initial rate.)
    assert elapsed <= 1.4 * blind_elapsed
    assert lying.refused <= max(2 * blind.refused, 20)


def test_configured_rate_with_yii2_is_never_exceeded() -> None:
    """RateLimit(rate=100) against Yii2 200/1 s: about 100/s, no 429."""
    server = BucketServer(rate=200, headers="yii2", window=1)

    sent, elapsed, _ = simulate(server, 500, rate_limit=RateLimit(rate=100))

    assert (500, 0) == (sent, server.refused)
    assert pytest.approx(499 / 99, rel=0.03) == elapsed
