"""Scaling out for real: worker processes sharing one account through Redis.

One sandbox process (200 requests/s, burst 20, per access key) and one
redis-server; the workers are separate Python processes running
``tests/redis_workers/send_worker.py``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import httpx
import pytest
from redis.asyncio import Redis

from decisiontelecom_viber import RateLimit
from decisiontelecom_viber.redis import RedisLimiter, SendOnceGuard, SendState


if TYPE_CHECKING:
    from .redis_server import RedisServer


pytestmark = pytest.mark.integration
pytest_plugins = ["tests.redis_server"]

WORKER = Path(__file__).parent / "redis_workers" / "send_worker.py"
ROOT = Path(__file__).parent.parent
ACCESS_KEY = "scale-out-key"
RATE = 200
BURST = 20


@attrs.frozen
class Sandbox:
    base_url: str
    root_url: str

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.root_url}/__sandbox/state").json()
        return state

    def texts(self) -> collections.Counter[str]:
        rows = httpx.get(f"{self.root_url}/__sandbox/messages").json()
        return collections.Counter(row["payload"]["text"] for row in rows)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    return env


@contextmanager
def run_sandbox(*extra: str) -> Iterator[Sandbox]:
    """The sandbox CLI in its own process, rate-limited per access key."""
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [
            sys.executable,
            "-m",
            "decisiontelecom_viber.sandbox",
            "--port",
            "0",
            "--rate",
            str(RATE),
            "--burst",
            str(BURST),
            "--access-key",
            ACCESS_KEY,
            "--no-record-requests",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        prefix = "Sandbox serving at "
        if not first.startswith(prefix):
            pytest.fail(f"the sandbox did not start: {first!r}")
        base_url = first[len(prefix) :].strip()
        yield Sandbox(base_url, base_url.removesuffix("/v1/api"))
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def start_worker(
    redis: RedisServer, sandbox: Sandbox, first: int, last: int, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - fixed arguments
        [
            sys.executable,
            str(WORKER),
            "--redis-url",
            redis.url,
            "--base-url",
            sandbox.base_url,
            "--access-key",
            ACCESS_KEY,
            "--first",
            str(first),
            "--last",
            str(last),
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def finish(worker: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Wait for a worker; return its JSON lines (failing if it failed)."""
    out, _ = worker.communicate(timeout=90)
    assert 0 == worker.returncode, out[-2000:]
    return [json.loads(line) for line in out.splitlines()]


def finish_all(workers: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait for workers, reading their pipes at once (full pipes would stall them)."""
    with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
        outputs = list(pool.map(finish, workers))
    return [line for lines in outputs for line in lines]


async def test_four_workers_share_one_account_limit(
    redis_server: RedisServer,
    redis_client: Redis,
) -> None:
    """4 processes share a 200/s limit at full speed, sending each message once."""
    total, workers = 2000, 4
    share = total // workers
    limit = ("--rate", str(RATE), "--burst", str(BURST), "--barrier", str(workers))
    with run_sandbox() as sandbox:
        processes = [
            start_worker(redis_server, sandbox, i * share, (i + 1) * share, *limit)
            for i in range(workers)
        ]
        lines = finish_all(processes)
        state = sandbox.state()["stats"]
        texts = sandbox.texts()
    results = [line for line in lines if "key" in line]
    ends = [line for line in lines if line.get("done")]
    wall = max(end["last_answer"] for end in ends) - min(
        end["first_send"] for end in ends
    )
    # The bucket starts full: BURST requests are free, the rest come at RATE.
    achieved = (state["accepted"] - BURST) / wall
    rejected = state["rate_limited"] / total
    print(  # noqa: T201 - the figures, with -s
        f"\n4 workers: {state['accepted']} accepted in {wall:.2f} s, "
        f"{achieved:.1f}/s ({achieved / RATE:.1%} of {RATE}/s after the burst), "
        f"{state['rate_limited']} 429s ({rejected:.2%}), "
        f"{state['duplicates']} duplicates"
    )

    assert total == len(results)
    assert {"sent"} == {result["outcome"] for result in results}
    assert total == len({result["message_id"] for result in results})
    assert total == state["accepted"]
    assert 0 == state["duplicates"]
    assert {f"job-{i}" for i in range(total)} == set(texts)
    assert {1} == set(texts.values())
    assert achieved >= 0.95 * RATE
    assert rejected <= 0.02
    shared = await cast(
        "Awaitable[dict[bytes, bytes]]", redis_client.hgetall("test:limiter")
    )
    assert b"rate" in shared


async def test_a_killed_workers_jobs_are_not_sent_twice(
    redis_server: RedisServer,
    redis_client: Redis,
) -> None:
    """After SIGKILL, a retry replays finished keys and reports in-flight ones."""
    total = 800
    limit = ("--rate", str(RATE), "--burst", str(BURST))
    guard = SendOnceGuard(redis_client, namespace="test:sent")
    with run_sandbox("--latency", "0.05") as sandbox:
        first = start_worker(redis_server, sandbox, 0, total, *limit)
        assert first.stdout is not None
        done_by_first: dict[str, int] = {}
        while len(done_by_first) < total // 4:
            line = json.loads(first.stdout.readline())
            assert "sent" == line["outcome"]
            done_by_first[line["key"]] = line["message_id"]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        first.stdout.close()
        # Answers the killed worker read but had no time to print are
        # recorded as sent: count them with the ones it printed.
        records = {f"job-{i}": await guard.lookup(f"job-{i}") for i in range(total)}
        recorded = {
            key: record.message_id
            for key, record in records.items()
            if record is not None and record.state is SendState.SENT
        }
        pending = {
            key
            for key, record in records.items()
            if record is not None and record.state is SendState.PENDING
        }
        retry = finish(start_worker(redis_server, sandbox, 0, total, *limit))
        state = sandbox.state()["stats"]
        texts = sandbox.texts()
    results = {line["key"]: line for line in retry if "key" in line}
    in_flight_sent = {key for key in pending if texts[key] == 1}
    print(  # noqa: T201 - the figures, with -s
        f"\ncrash: killed after {len(done_by_first)} printed results; "
        f"{len(recorded)} recorded as sent, {len(pending)} in flight at the kill "
        f"({len(in_flight_sent)} of them reached the API); the retry replayed "
        f"{sum(r['replayed'] for r in results.values())}, sent "
        f"{sum(r['outcome'] == 'sent' and not r['replayed'] for r in results.values())}"
        f", reported {sum(r['outcome'] == 'unknown' for r in results.values())} "
        f"as in progress; {state['duplicates']} duplicates"
    )

    assert total == len(results)
    assert pending, "no send was in flight at the kill"
    assert done_by_first.items() <= recorded.items()
    for key, message_id in recorded.items():
        assert {"outcome": "sent", "message_id": message_id, "replayed": True} == {
            name: results[key][name] for name in ("outcome", "message_id", "replayed")
        }
    for key in pending:
        assert ("unknown", "SendInProgressError") == (
            results[key]["outcome"],
            results[key]["error"],
        )
    fresh = set(results) - set(recorded) - pending
    assert {("sent", False)} == {
        (results[key]["outcome"], results[key]["replayed"]) for key in fresh
    }
    assert 0 == state["duplicates"]
    assert {1} == set(texts.values())
    assert set(recorded) | fresh | in_flight_sent == set(texts)
    assert len(texts) == state["accepted"]


async def test_after_a_kill_only_requests_on_the_wire_are_in_doubt(
    redis_server: RedisServer,
    redis_client: Redis,
) -> None:
    """Keys waiting for the limiter at the kill are free again; written ones not.

    (20/s, 32 at once: before the two phases, all 32 claimed keys stayed in
    doubt although the server had received only the ones on the wire.)
    """
    total = 300
    lease = 1.0
    options = ("--rate", "20", "--concurrency", "32", "--lease", str(lease))
    guard = SendOnceGuard(redis_client, namespace="test:sent")
    with run_sandbox() as sandbox:
        first = start_worker(redis_server, sandbox, 0, total, *options)
        assert first.stdout is not None
        printed = 0
        while printed < 60:
            line = json.loads(first.stdout.readline())
            assert "sent" == line["outcome"]
            printed += 1
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        first.stdout.close()
        received = set(sandbox.texts())
        records = {f"job-{i}": await guard.lookup(f"job-{i}") for i in range(total)}
        recorded = {
            key
            for key, record in records.items()
            if record is not None and record.state is SendState.SENT
        }
        claimed = {
            key
            for key, record in records.items()
            if record is not None
            and record.state is SendState.PENDING
            and not record.on_the_wire
        }
        in_doubt = {
            key
            for key, record in records.items()
            if record is not None
            and record.state is not SendState.SENT
            and record.on_the_wire
        }
        await asyncio.sleep(lease + 0.2)  # (Redis's clock): the leases run out
        retry = finish(start_worker(redis_server, sandbox, 0, total, *options))
        texts = sandbox.texts()
    results = {line["key"]: line for line in retry if "key" in line}
    unrecorded = received - recorded
    print(  # noqa: T201 - the figures, with -s
        f"\nkill at 20/s, 32 at once: {len(recorded)} recorded as sent, "
        f"{len(claimed)} claimed and waiting, {len(in_doubt)} on the wire "
        f"({len(unrecorded)} received by the server but not recorded)"
    )

    assert claimed, "nothing was waiting for the limiter at the kill"
    assert len(in_doubt) <= len(unrecorded) + 2
    assert unrecorded <= in_doubt  # whatever may have been sent is in doubt
    for key in claimed:  # free again: sent by the retry, once
        assert ("sent", False) == (results[key]["outcome"], results[key]["replayed"])
    for key in in_doubt:
        assert ("unknown", "SendUnresolvedError") == (
            results[key]["outcome"],
            results[key]["error"],
        )
    assert {1} == set(texts.values())
    assert total == len(results)


async def test_four_workers_discover_an_unknown_limit(
    redis_server: RedisServer,
) -> None:
    """With no configured rate, 4 processes find the shared limit and keep to it.

    At most 2 % of the messages draw a 429 (2 to 6 % did, up to 8 %, before
    the ramp waited for answers, the first 429 held the rate and answers were
    counted by when they came), and the limit is used at 95 % or more.
    """
    total, workers = 1600, 4
    share = total // workers
    with run_sandbox() as sandbox:
        processes = [
            start_worker(
                redis_server,
                sandbox,
                i * share,
                (i + 1) * share,
                "--barrier",
                str(workers),
                "--namespace",
                "test:unknown",
                "--limiter-key",
                "test:unknown-limiter",
            )
            for i in range(workers)
        ]
        lines = finish_all(processes)
        state = sandbox.state()["stats"]
    ends = [line for line in lines if line.get("done")]
    wall = max(end["last_answer"] for end in ends) - min(
        end["first_send"] for end in ends
    )
    achieved = (state["accepted"] - BURST) / wall
    rejected = state["rate_limited"] / total
    start = min(end["first_send"] for end in ends)
    early = sum(t - start < 1 for end in ends for t in end["refusals"])
    print(  # noqa: T201 - the figures, with -s
        f"\nunknown limit: {state['accepted']} accepted in {wall:.2f} s, "
        f"{achieved:.1f}/s ({achieved / RATE:.1%}), "
        f"{state['rate_limited']} 429s ({rejected:.2%}; {early} in the first second)"
    )

    assert total == state["accepted"]
    assert 0 == state["duplicates"]
    # The targets (>= 95 % of the limit, <= 2 % 429s) are what this run
    # measures on a quiet machine (the figures print with -s; docs/scaling.md):
    # asserted with room, as CI shares its cores.
    assert achieved >= 0.90 * RATE
    assert rejected <= 0.05


async def test_high_priority_calls_go_before_other_processes_campaigns(
    redis_server: RedisServer,
    redis_client: Redis,
) -> None:
    """Two processes send campaigns at 20/s; 3 high-priority callers here cut in.

    They get the next free slots: none the campaigns had not reserved yet (one
    horizon ahead) goes before them. (Normal ones race them for each slot.)
    """
    rate, horizon, per_worker = 20, 0.02, 20
    key = "test:priority-limiter"
    options: tuple[str, ...] = ("--rate", str(rate), "--burst", "1", "--barrier", "2")
    options += ("--namespace", "test:priority", "--limiter-key", key)
    with run_sandbox() as sandbox:
        processes = [
            start_worker(
                redis_server, sandbox, i * per_worker, (i + 1) * per_worker, *options
            )
            for i in range(2)
        ]
        watched = processes[0].stdout
        assert watched is not None
        early = [json.loads(watched.readline()) for _ in range(5)]
        limiter = RedisLimiter(
            redis_client, RateLimit(rate=rate, burst=1), key=key, horizon=horizon
        )
        asked = time.time()
        await asyncio.gather(*(limiter.acquire(priority="high") for _ in range(3)))
        granted = time.time()
        await limiter.aclose()
        lines = early + finish_all(processes)
    answers = [line["at"] for line in lines if "key" in line]

    # (An answer comes a few ms after its slot: 40 ms for that and the timers.)
    cut_in = [at for at in answers if asked + horizon + 0.04 < at < granted]
    print(  # noqa: T201 - the figures, with -s
        f"\npriority: served in {granted - asked:.3f} s, "
        f"{len(cut_in)} campaign requests in between"
    )
    assert 2 * per_worker == len(answers)
    assert [] == cut_in
    assert granted - asked < 3.5 / rate + horizon
