"""The sandbox's rate limits over real HTTP: algorithms, header dialects, Retry-After.

With the real clock (the ``viber_sandbox`` fixture, configured by its marker)
the parameters are chosen so that the headers do not depend on timing: Yii2
at 2 per 8 s gets no token back within a test, and a token bucket at 0.3/s
has no whole number of seconds to land on. With a fake wall clock (a sandbox
of our own, served on loopback) Yii2's whole seconds and truncated refills are
checked to the second.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from decisiontelecom_viber.cli import main as cli_main
from decisiontelecom_viber.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxServer,
    serve_sandbox,
)
from decisiontelecom_viber.sandbox._cli import build_parser, config_from_args


pytestmark = pytest.mark.integration

KEY = "sandbox-access-key"
AUTH = {"Authorization": "Basic " + base64.b64encode(KEY.encode()).decode()}
VALID = {
    "source_addr": "Acme",
    "destination_addr": "380501234567",
    "message_type": 106,
    "text": "hello",
    "source_type": 2,
}
HEADERS = ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset")
T = 1_700_000_000.0  # a whole second of Unix time


def send(base_url: str) -> httpx.Response:
    return httpx.post(f"{base_url}/send-viber", json=VALID, headers=AUTH)


def verdict(response: httpx.Response) -> tuple[int, str, str, str]:
    """(status, Limit, Remaining, Reset) of an answer."""
    limit, remaining, reset = (response.headers[name] for name in HEADERS)
    return response.status_code, limit, remaining, reset


# -- configuration ------------------------------------------------------------


class TestConfig:
    @pytest.mark.parametrize(
        ("given", "stored", "dialect"),
        [
            (False, False, None),
            (True, "yii2", "yii2"),
            ("yii2", "yii2", "yii2"),
            ("full-reset", "full-reset", "full-reset"),
            ("next-token", "next-token", "next-token"),
        ],
    )
    def test_headers_values(self, given: Any, stored: Any, dialect: str | None) -> None:
        config = SandboxConfig(rate_limit_headers=given)

        assert (stored, dialect) == (
            config.rate_limit_headers,
            config.rate_limit_dialect,
        )
        assert stored == config.replace(burst=3).rate_limit_headers

    @pytest.mark.parametrize(
        ("headers", "algorithm", "dialect"),
        [
            (False, None, None),  # today's token bucket, without headers
            (False, "token-bucket", None),
            (False, "yii2", "yii2"),  # Yii2's algorithm, without headers
            ("yii2", "yii2", "yii2"),
            ("full-reset", "token-bucket", "full-reset"),
        ],
    )
    def test_algorithm(self, headers: Any, algorithm: Any, dialect: Any) -> None:
        config = SandboxConfig(
            rate_limit_headers=headers, rate_limit_algorithm=algorithm
        )
        assert dialect == config.rate_limit_dialect

    @pytest.mark.parametrize(
        ("knobs", "message"),
        [
            (
                {"rate_limit_headers": "yii"},
                "rate_limit_headers must be False, True (= 'yii2') or one of"
                " 'yii2', 'full-reset', 'next-token'; got 'yii'",
            ),
            ({"rate_limit_headers": 1}, "rate_limit_headers must be"),
            ({"rate_limit_window": 0}, "rate_limit_window must be a whole number"),
            ({"rate_limit_window": 1.5}, "rate_limit_window must be a whole number"),
            ({"rate_limit_window": True}, "rate_limit_window must be a whole number"),
            ({"rate_limit_window": -1}, "rate_limit_window must not be negative"),
            (
                {"rate_limit_algorithm": "leaky"},
                "rate_limit_algorithm must be None or one of 'token-bucket',"
                " 'yii2'; got 'leaky'",
            ),
            (
                {"rate_limit_headers": "next-token", "rate_limit_algorithm": "yii2"},
                "rate_limit_algorithm 'yii2' contradicts rate_limit_headers",
            ),
            (
                {"rate_limit_headers": True, "rate_limit_algorithm": "token-bucket"},
                "rate_limit_algorithm 'token-bucket' contradicts",
            ),
        ],
    )
    def test_validation(self, knobs: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=r"^SandboxConfig\.") as caught:
            SandboxConfig(**knobs)
        assert message in str(caught.value)

    def test_defaults(self) -> None:
        config = SandboxConfig()
        assert (False, 1, None) == (
            config.rate_limit_headers,
            config.rate_limit_window,
            config.rate_limit_algorithm,
        )


# -- each dialect over HTTP, real clock ----------------------------------------


class TestDialects:
    @pytest.mark.viber_sandbox(
        rate_limit=0.25,
        rate_limit_window=8,
        rate_limit_headers="yii2",
        retry_after_header=True,
        burst=10,
    )
    def test_yii2(self, viber_sandbox: SandboxServer) -> None:
        """2 per 8 s, whatever the burst; Reset = window on the 429."""
        responses = [send(viber_sandbox.base_url) for _ in range(3)]

        assert [
            (200, "2", "1", "4"),  # int((2 - 2 + 1) x 8 / 2)
            (200, "2", "0", "8"),  # int((2 - 1 + 1) x 8 / 2)
            (429, "2", "0", "8"),
        ] == [verdict(r) for r in responses]
        # The next whole second brings int(2 / 8) = 0 tokens; 4 seconds bring 1.
        assert "4" == responses[2].headers["retry-after"]
        assert "retry-after" not in responses[1].headers
        assert 0 == responses[2].json()["code"]

    @pytest.mark.viber_sandbox(
        rate_limit=0.5, rate_limit_window=10, burst=3, rate_limit_headers=True
    )
    def test_true_is_yii2(self, viber_sandbox: SandboxServer) -> None:
        """True (the old boolean) now speaks Yii2: Limit = rate x window, not burst."""
        responses = [send(viber_sandbox.base_url) for _ in range(4)]

        assert [("5", "4"), ("5", "3"), ("5", "2"), ("5", "1")] == [
            verdict(r)[1:3] for r in responses
        ]
        assert "yii2" == viber_sandbox.sandbox.config.rate_limit_headers

    @pytest.mark.viber_sandbox(
        rate_limit=0.3,
        burst=2,
        rate_limit_headers="full-reset",
        retry_after_header=True,
    )
    def test_full_reset(self, viber_sandbox: SandboxServer) -> None:
        """Limit = burst; Reset = whole seconds until the bucket is full."""
        responses = [send(viber_sandbox.base_url) for _ in range(3)]

        assert [
            (200, "2", "1", "3"),  # int(1 / 0.3)
            (200, "2", "0", "6"),  # int(just under 2 / 0.3)
            (429, "2", "0", "6"),
        ] == [verdict(r) for r in responses]
        assert "4" == responses[2].headers["retry-after"]  # ceil(just under 3.3)

    @pytest.mark.viber_sandbox(
        rate_limit=0.3,
        burst=2,
        rate_limit_headers="next-token",
        retry_after_header=True,
    )
    def test_next_token(self, viber_sandbox: SandboxServer) -> None:
        """Reset = whole seconds until the next token, at least 1."""
        responses = [send(viber_sandbox.base_url) for _ in range(3)]

        assert [
            (200, "2", "1", "1"),  # a token is there: at least 1
            (200, "2", "0", "4"),  # ceil(just under 1 / 0.3)
            (429, "2", "0", "4"),
        ] == [verdict(r) for r in responses]
        assert "4" == responses[2].headers["retry-after"]

    @pytest.mark.viber_sandbox(rate_limit=0.3, burst=2, retry_after_header=True)
    def test_headers_off_is_the_token_bucket(
        self, viber_sandbox: SandboxServer
    ) -> None:
        """No headers: the token bucket of rate and burst, as before."""
        responses = [send(viber_sandbox.base_url) for _ in range(3)]

        assert [200, 200, 429] == [r.status_code for r in responses]
        assert not any(name in r.headers for r in responses for name in HEADERS)
        assert "4" == responses[2].headers["retry-after"]

    @pytest.mark.viber_sandbox(
        rate_limit=0.25, rate_limit_window=8, rate_limit_algorithm="yii2", burst=5
    )
    def test_yii2_algorithm_without_headers(self, viber_sandbox: SandboxServer) -> None:
        """rate_limit_algorithm="yii2": 2 per 8 s although burst is 5; no headers."""
        responses = [send(viber_sandbox.base_url) for _ in range(4)]

        assert [200, 200, 429, 429] == [r.status_code for r in responses]
        assert not any(name in r.headers for r in responses for name in HEADERS)
        assert "retry-after" not in responses[2].headers

    def test_admin_config_takes_the_json_boolean(
        self, viber_sandbox: SandboxServer
    ) -> None:
        """Over /__sandbox/config, true is yii2 and a wrong dialect is a 400."""
        url = f"{viber_sandbox.root_url}/__sandbox/config"
        changed = httpx.post(url, json={"rate_limit": 5, "rate_limit_headers": True})
        wrong = httpx.post(url, json={"rate_limit_headers": "yii3"})

        assert "yii2" == changed.json()["config"]["rate_limit_headers"]
        assert (200, "5", "4") == verdict(send(viber_sandbox.base_url))[:3]
        assert 400 == wrong.status_code
        assert "rate_limit_headers" in wrong.json()["error"]


# -- Yii2 to the second, fake wall clock ---------------------------------------


class WallClock:
    """Unix time that only moves when told to (read from the server's thread)."""

    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def faked() -> Iterator[tuple[SandboxServer, WallClock]]:
    clock = WallClock()
    with serve_sandbox(sandbox=Sandbox(wall_clock=clock)) as server:
        yield server, clock


@pytest.fixture
def fake_clock(
    faked: tuple[SandboxServer, WallClock],
) -> Iterator[tuple[SandboxServer, WallClock]]:
    server, clock = faked
    clock.now = T
    yield server, clock
    server.sandbox.reset(SandboxConfig())


def test_sustained_rate_of_a_token_bucket(
    fake_clock: tuple[SandboxServer, WallClock],
) -> None:
    """40/s, burst 4, a request every 5 ms for a second: 4 + 40 accepted.

    (On the server's own clock, which only moves when told to: exact
    whatever the machine's load.)
    """
    server, clock = fake_clock
    server.sandbox.reset(SandboxConfig(rate_limit=40, burst=4))

    statuses = []
    for step in range(200):
        clock.now = T + step * 0.005
        statuses.append(send(server.base_url).status_code)

    assert 200 * [True] == [status in (200, 429) for status in statuses]
    # The burst, then one every 25 ms (the last request is at 0.995 s).
    assert [200] * 4 + [429] == statuses[:5]
    assert 4 + 39 <= statuses.count(200) <= 4 + 40


class TestYii2WallClock:
    def test_whole_seconds_truncated_refills_reset_and_cap(
        self, fake_clock: tuple[SandboxServer, WallClock]
    ) -> None:
        """3 per 2 s: a second brings int(1 x 3 / 2) = 1 token; the half is lost."""
        server, clock = fake_clock
        server.sandbox.reset(
            SandboxConfig(
                rate_limit=1.5,
                rate_limit_window=2,
                rate_limit_headers="yii2",
                retry_after_header=True,
            )
        )

        def at(offset: float) -> tuple[int, str, str, str]:
            clock.now = T + offset
            return verdict(send(server.base_url))

        assert [(200, "3", "2", "0"), (200, "3", "1", "1"), (200, "3", "0", "2")] == [
            at(0.5),
            at(0.6),
            at(0.7),
        ]
        clock.now = T + 0.8
        limited = send(server.base_url)
        assert (429, "3", "0", "2") == verdict(limited)  # Reset = the window
        # The next whole second brings a token: 0.2 s away, in whole seconds.
        assert "1" == limited.headers["retry-after"]
        assert (429, "3", "0", "2") == at(0.999)  # still second T
        assert (200, "3", "0", "2") == at(1.0)  # T + 1: 0 + int(1.5) = 1
        assert (200, "3", "0", "2") == at(2.0)  # T + 2: 1 again, not 2
        assert (429, "3", "0", "2") == at(2.5)
        assert (200, "3", "2", "0") == at(4.5)  # 2 idle seconds: int(3) = 3
        assert (200, "3", "2", "0") == at(10_000)  # capped at the limit
        assert 3 == server.sandbox.stats.rate_limited

    def test_each_request_restarts_the_count(
        self, fake_clock: tuple[SandboxServer, WallClock]
    ) -> None:
        """1 per 2 s asked every second never refills: a 429 saves the time too."""
        server, clock = fake_clock
        server.sandbox.reset(
            SandboxConfig(
                rate_limit=0.5,
                rate_limit_window=2,
                rate_limit_headers="yii2",
                retry_after_header=True,
            )
        )
        statuses = []
        for second in range(5):
            clock.now = T + second
            statuses.append(send(server.base_url).status_code)
        clock.now = T + 6
        rested = send(server.base_url)

        assert [200, 429, 429, 429, 429] == statuses
        assert (200, "1", "0", "2") == verdict(rested)

    def test_retry_after_is_whole_seconds_until_a_token(
        self, fake_clock: tuple[SandboxServer, WallClock]
    ) -> None:
        """Token bucket: Retry-After = ceil(s to a token), Reset = int(s to full)."""
        server, clock = fake_clock
        server.sandbox.reset(
            SandboxConfig(
                rate_limit=0.25,
                burst=1,
                rate_limit_headers="full-reset",
                retry_after_header=True,
            )
        )
        first = send(server.base_url)
        now = send(server.base_url)
        clock.now = T + 2.5
        later = send(server.base_url)

        assert (200, "1", "0", "4") == verdict(first)
        assert ((429, "1", "0", "4"), "4") == (verdict(now), now.headers["retry-after"])
        # 0.625 token: 1.5 s to the next one (and to full).
        assert ((429, "1", "0", "1"), "2") == (
            verdict(later),
            later.headers["retry-after"],
        )


# -- command line --------------------------------------------------------------


class TestCommandLine:
    @pytest.mark.parametrize(
        ("argv", "headers", "window", "algorithm"),
        [
            ([], False, 1, None),
            (["--rate-limit-headers"], "yii2", 1, None),  # the old boolean flag
            (["--rate-limit-headers", "--rate", "5"], "yii2", 1, None),
            (["--rate-limit-headers", "full-reset"], "full-reset", 1, None),
            (["--rate-limit-headers", "next-token"], "next-token", 1, None),
            (
                ["--rate-limit-headers", "yii2", "--no-rate-limit-headers"],
                False,
                1,
                None,
            ),
            (
                ["--rate-limit-headers", "yii2", "--rate-limit-window", "60"],
                "yii2",
                60,
                None,
            ),
            (["--rate-limit-algorithm", "yii2"], False, 1, "yii2"),
        ],
    )
    def test_flags(
        self, argv: list[str], headers: Any, window: int, algorithm: Any
    ) -> None:
        config = config_from_args(build_parser().parse_args(argv))

        assert (headers, window, algorithm) == (
            config.rate_limit_headers,
            config.rate_limit_window,
            config.rate_limit_algorithm,
        )

    @pytest.mark.parametrize(
        "argv",
        [
            ["--rate-limit-headers", "yii3"],
            ["--rate-limit-algorithm", "leaky"],
            ["--rate-limit-window", "half"],
        ],
    )
    def test_bad_flags_are_usage_errors(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(argv)

        assert 2 == caught.value.code
        assert argv[0] in capsys.readouterr().err

    def test_window_below_one_is_refused(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as caught:
            cli_main(["sandbox", "--rate-limit-window", "0"])

        assert 2 == caught.value.code
        assert "rate_limit_window must be a whole number" in capsys.readouterr().err

    def test_help_lists_the_dialects_and_the_window(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as caught:
            cli_main(["sandbox", "--help"])

        out = " ".join(capsys.readouterr().out.split())
        assert 0 == caught.value.code
        for expected in (
            "--rate-limit-headers [{yii2,full-reset,next-token}]",
            "--no-rate-limit-headers",
            "--rate-limit-window RATE_LIMIT_WINDOW",
            "--rate-limit-algorithm {token-bucket,yii2}",
            "The bare flag means yii2.",
        ):
            assert expected in out
