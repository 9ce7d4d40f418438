"""The sandbox's rate-limit buckets (`sandbox._buckets`), table-tested (pure).

Times are Unix seconds; T = 1000.0 is a whole second. Verdicts are
``(allowed, Limit, Remaining, Reset)``.
"""

from __future__ import annotations

import pytest

from decisiontelecom_viber.sandbox._buckets import (
    DIALECTS,
    Dialect,
    TokenBucket,
    Verdict,
    Yii2Bucket,
    make_bucket,
)


T = 1000.0


def takes(bucket: Yii2Bucket | TokenBucket, *times: float) -> list[Verdict]:
    return [bucket.take(now) for now in times]


class TestYii2:
    def test_counts_down(self) -> None:
        """Remaining = allowance - 1; Reset = int((limit - allowance + 1) x w / limit).

        (Yii2 2.0.14 and later, #15432; before, (limit - allowance).)
        """
        bucket = Yii2Bucket(limit=10, window=60, now=T)

        assert [
            (True, 10, 9, 6),  # allowance 10: int(1 x 60 / 10)
            (True, 10, 8, 12),  # allowance 9: int(2 x 6)
            (True, 10, 7, 18),
        ] == takes(bucket, T, T + 0.1, T + 0.2)

    def test_429_says_remaining_0_and_reset_window(self) -> None:
        """On a 429: Limit = limit, Remaining = 0, Reset = window."""
        bucket = Yii2Bucket(limit=3, window=2, now=T)

        assert [
            (True, 3, 2, 0),  # int(1 x 2 / 3)
            (True, 3, 1, 1),  # int(2 x 2 / 3)
            (True, 3, 0, 2),  # int(3 x 2 / 3)
            (False, 3, 0, 2),
            (False, 3, 0, 2),
        ] == takes(bucket, T, T + 0.3, T + 0.6, T + 0.9, T + 0.99)

    def test_whole_seconds_a_token_comes_when_the_second_changes(self) -> None:
        """time() is whole seconds: nothing within a second, a refill 1 ms later."""
        bucket = Yii2Bucket(limit=2, window=1, now=T + 0.998)

        assert [
            (True, 2, 1, 0),  # int(1 x 1 / 2)
            (True, 2, 0, 1),  # int(2 x 1 / 2)
            (False, 2, 0, 1),
            (True, 2, 1, 0),  # 1000.999 -> 1001.0: a whole second, 2 tokens
        ] == takes(bucket, T + 0.998, T + 0.9985, T + 0.999, T + 1.0)

    def test_refills_are_truncated_and_fractions_lost(self) -> None:
        """3 per 2 s: a second brings int(1 x 3 / 2) = 1 token; the half is lost."""
        hammered = Yii2Bucket(limit=3, window=2, now=T)
        takes(hammered, T, T, T)  # empty at T

        assert [
            (True, 3, 0, 2),  # T + 1: 0 + int(1.5) = 1
            (True, 3, 0, 2),  # T + 2: 0 + int(1.5) = 1 (2 tokens in 2 s, not 3)
            (False, 3, 0, 2),
        ] == takes(hammered, T + 1, T + 2, T + 2.5)

        idle = Yii2Bucket(limit=3, window=2, now=T)
        takes(idle, T, T, T)
        assert (True, 3, 2, 0) == idle.take(T + 2)  # 0 + int(2 x 1.5) = 3

    def test_429s_save_the_timestamp_too(self) -> None:
        """1 per 2 s, asked every second, never refills: each 429 restarts the count."""
        hammered = Yii2Bucket(limit=1, window=2, now=T)

        assert [
            (True, 1, 0, 2),
            (False, 1, 0, 2),  # int(1 x 1 / 2) = 0
            (False, 1, 0, 2),
            (False, 1, 0, 2),
        ] == takes(hammered, T, T + 1, T + 2, T + 3)

        idle = Yii2Bucket(limit=1, window=2, now=T)
        assert [(True, 1, 0, 2), (True, 1, 0, 2)] == takes(idle, T, T + 2)

    def test_allowance_is_capped_at_the_limit(self) -> None:
        """However long the pause, the allowance comes back to *limit*, no more."""
        bucket = Yii2Bucket(limit=5, window=10, now=T)
        bucket.take(T)

        assert [(True, 5, 4, 2), (True, 5, 3, 4)] == takes(bucket, T + 4000, T + 4000)
        assert 3 == bucket.allowance

    @pytest.mark.parametrize(
        ("limit", "window", "at", "expected"),
        [
            (3, 2, T + 0.25, 0.75),  # 1 token at the next second
            (1, 2, T + 0.25, 1.75),  # 1 token every 2 s
            (2, 8, T + 0.5, 3.5),  # 1 token every 4 s
        ],
    )
    def test_seconds_until_token(
        self, limit: int, window: int, at: float, expected: float
    ) -> None:
        """From the saved timestamp; the refill is there at that instant, not before."""
        bucket = Yii2Bucket(limit, window, T)
        assert 0.0 == bucket.seconds_until_token(T)
        while bucket.take(at)[0]:
            pass

        wait = bucket.seconds_until_token(at)

        assert expected == pytest.approx(wait)
        early = Yii2Bucket(limit, window, T)
        while early.take(at)[0]:
            pass
        assert not early.take(at + wait - 0.001)[0]
        assert bucket.take(at + wait)[0]


class TestTokenBucket:
    # rate 0.25/s (one token per 4 s), burst 2; exact in binary floating point.
    TIMES = (T, T, T, T + 1, T + 2.5, T + 4)
    TOKENS_LEFT = (1.0, 0.0, 0.0, 0.25, 0.625, 0.0)
    ALLOWED = (True, True, False, False, False, True)

    def test_full_reset(self) -> None:
        """Limit = burst, Remaining = whole tokens, Reset = int(s until full)."""
        bucket = TokenBucket(0.25, 2, T, "full-reset")

        resets = (4, 8, 8, 7, 5, 8)  # int((2 - tokens) / 0.25)
        assert [
            (allowed, 2, int(left), reset)
            for allowed, left, reset in zip(
                self.ALLOWED, self.TOKENS_LEFT, resets, strict=True
            )
        ] == takes(bucket, *self.TIMES)

    def test_next_token(self) -> None:
        """Reset = whole seconds until the next token, at least 1."""
        bucket = TokenBucket(0.25, 2, T, "next-token")

        resets = (1, 4, 4, 3, 2, 4)  # max(1, ceil((1 - tokens) / 0.25))
        assert [
            (allowed, 2, int(left), reset)
            for allowed, left, reset in zip(
                self.ALLOWED, self.TOKENS_LEFT, resets, strict=True
            )
        ] == takes(bucket, *self.TIMES)

    def test_default_dialect_is_full_reset(self) -> None:
        assert "full-reset" == TokenBucket(1.0, 1, T).dialect

    def test_continuous_not_whole_seconds(self) -> None:
        """Unlike Yii2, a token comes back 1 / rate seconds later, mid-second."""
        bucket = TokenBucket(10.0, 1, T + 0.5)
        assert [True, False, True] == [
            ok for ok, *_ in takes(bucket, T + 0.5, T + 0.55, T + 0.75)
        ]

    def test_burst_caps_the_tokens(self) -> None:
        bucket = TokenBucket(5.0, 3, T)
        assert (True, 3, 2, 0) == bucket.take(T + 1000)

    def test_seconds_until_token_and_full(self) -> None:
        bucket = TokenBucket(0.25, 2, T)
        takes(bucket, T, T)

        assert 4.0 == bucket.seconds_until_token(T)
        assert 3.0 == bucket.seconds_until_token(T + 1)
        assert 7.0 == bucket.seconds_until_full(T + 1)
        assert 0.0 == bucket.seconds_until_token(T + 4)


class TestMakeBucket:
    def test_dialects(self) -> None:
        assert ("yii2", "full-reset", "next-token") == DIALECTS

    @pytest.mark.parametrize(
        ("rate", "window", "limit"),
        [(2.5, 4, 10), (0.25, 8, 2), (0.1, 1, 1), (200.0, 1, 200)],
    )
    def test_yii2_limit_is_rate_times_window(
        self, rate: float, window: int, limit: int
    ) -> None:
        """round(rate x window) per window, at least 1; *burst* does not apply."""
        bucket = make_bucket("yii2", rate, 99, window, T)

        assert isinstance(bucket, Yii2Bucket)
        assert (limit, window, limit, int(T)) == (
            bucket.limit,
            bucket.window,
            bucket.allowance,
            bucket.timestamp,
        )

    @pytest.mark.parametrize(
        ("dialect", "expected"),
        [
            ("full-reset", "full-reset"),
            ("next-token", "next-token"),
            (None, "full-reset"),
        ],
    )
    def test_continuous_dialects(self, dialect: Dialect | None, expected: str) -> None:
        """The others are token buckets of *rate* and *burst*; window ignored."""
        bucket = make_bucket(dialect, 5.0, 7, 60, T)

        assert isinstance(bucket, TokenBucket)
        assert (5.0, 7, 7.0, expected) == (
            bucket.rate,
            bucket.burst,
            bucket.tokens,
            bucket.dialect,
        )
