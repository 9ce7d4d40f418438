"""Chaos: tens of thousands of sends through faults, checked against the server.

Each run pushes thousands of uniquely worded messages through
`AsyncViberClient.send_messages` to the sandbox over loopback HTTP while the
sandbox injects a seeded mix of 429s, 500s, HTML 502s, connections broken
before and after acceptance, truncated answers and latency spikes longer than
the client's read timeout. Then every result is compared with what the
sandbox recorded:

* one result per input, every error one of the SDK's own;
* no message accepted twice (default policy);
* an accepted message is reported sent with the ID the sandbox gave it, or
  unknown, never failed; a failure is a refusal the server really gave;
* no task, socket or memory outlives (or grows with) the run.

The opt-in ``retry_unknown_outcome`` mode is measured too: it may duplicate
a message only where an answer was lost after acceptance, and loses none.

Figures go to the session report (see conftest.py, ``CHAOS_REPORT``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
import tracemalloc
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from decisiontelecom_viber import (
    APIConnectionError,
    APIError,
    AsyncViberClient,
    BulkSummary,
    OutcomeUnknownError,
    RateLimit,
    RetryDetails,
    RetryPolicy,
    SendOutcome,
    SendResult,
    ViberMessage,
)
from decisiontelecom_viber.sandbox import SandboxConfig, SandboxServer

from ..helpers import eventually


pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

FAULTS = (
    "fault_500",
    "fault_502_html",
    "fault_disconnect_before",
    "fault_disconnect_after",
    "fault_truncated_body",
)
# Request outcomes after which the sandbox holds the message.
ACCEPTING = ("accepted", "fault_disconnect_after", "fault_truncated_body")

# The client's name for a refusal -> the sandbox's outcome for it.
REFUSALS = {
    "HTTP 429": "rate_limited",
    "HTTP 500": "fault_500",
    "HTTP 502": "fault_502_html",
}

# What became of one input, as stored by `Tracker` (a byte per input).
SENT, REFUSED, NOT_SENT, UNKNOWN, UNDOCUMENTED = 1, 2, 3, 4, 5
EXPECTED_OUTCOME = {
    SENT: SendOutcome.SENT,
    REFUSED: SendOutcome.FAILED,
    NOT_SENT: SendOutcome.FAILED,
    UNKNOWN: SendOutcome.UNKNOWN,
}


@dataclasses.dataclass(frozen=True)
class ChaosRun:
    """One run: how many sends, the sandbox's faults and the client's settings."""

    name: str
    sends: int
    seed: int
    knobs: Mapping[str, Any]
    read_timeout: float = 2.0
    rate_limit: RateLimit | float | None = None
    concurrency: int = 64
    attempts: int = 5
    retry_unknown_outcome: bool = False

    def config(self) -> SandboxConfig:
        return SandboxConfig(seed=self.seed, **self.knobs)

    def policy(self) -> RetryPolicy:
        # Waits in milliseconds keep the runs short; the retry decisions are
        # the production ones.
        return RetryPolicy(
            attempts=self.attempts,
            wait_initial=0.005,
            wait_max=0.05,
            max_retry_after=0.05,
            retry_unknown_outcome=self.retry_unknown_outcome,
        )

    def client(
        self, access_key: str, base_url: str, observer: Tracker
    ) -> AsyncViberClient:
        return AsyncViberClient(
            access_key,
            base_url=base_url,
            timeout=httpx.Timeout(5.0, read=self.read_timeout),
            retry=self.policy(),
            rate_limit=self.rate_limit,
            on_retry=observer.on_retry,
        )

    def text(self, n: int) -> str:
        return f"chaos {self.name} {n}"

    def messages(self) -> Iterator[ViberMessage]:
        for n in range(self.sends):
            yield ViberMessage.transactional(
                sender="Chaos", receiver=f"38050{n:07d}", text=self.text(n)
            )


# Retry waits are short and every fault type appears in several runs; the
# seeds make each run's fault mix the same from one session to the next (the
# order requests arrive in, and so which one gets which fault, still varies).
RUNS = [
    ChaosRun(
        "server-errors",
        sends=4000,
        seed=101,
        knobs={
            "fault_500": 0.08,
            "fault_502_html": 0.06,
            "latency": 0.002,
            "latency_distribution": "exponential",
        },
    ),
    ChaosRun(
        "broken-connections",
        sends=4000,
        seed=202,
        knobs={
            "fault_disconnect_before": 0.04,
            "fault_disconnect_after": 0.04,
            "fault_truncated_body": 0.04,
            "fault_500": 0.02,
        },
    ),
    ChaosRun(
        "rate-limited-adaptive",
        sends=3000,
        seed=303,
        knobs={
            "rate_limit": 1500.0,
            "burst": 40,
            "retry_after_header": True,
            "fault_500": 0.02,
            "fault_disconnect_after": 0.01,
        },
        rate_limit=RateLimit(),
    ),
    ChaosRun(
        "rate-limited-unpaced",
        sends=3000,
        seed=404,
        knobs={
            "rate_limit": 1500.0,
            "burst": 40,
            "fault_502_html": 0.03,
            "fault_truncated_body": 0.01,
        },
        rate_limit=None,
    ),
    ChaosRun(
        "read-timeouts",
        sends=3000,
        seed=505,
        knobs={
            "latency": 0.005,
            "latency_distribution": "lognormal",
            "latency_spike_probability": 0.03,
            "latency_spike": 0.6,
            "fault_500": 0.03,
        },
        read_timeout=0.25,
    ),
    ChaosRun(
        "everything",
        sends=4000,
        seed=606,
        knobs={
            "rate_limit": 2000.0,
            "burst": 50,
            "fault_500": 0.03,
            "fault_502_html": 0.02,
            "fault_disconnect_before": 0.02,
            "fault_disconnect_after": 0.02,
            "fault_truncated_body": 0.02,
            "latency": 0.003,
            "latency_distribution": "uniform",
            "latency_spike_probability": 0.02,
            "latency_spike": 0.6,
        },
        read_timeout=0.25,
        rate_limit=RateLimit(),
    ),
]

OPT_IN = ChaosRun(
    "opt-in-retry-unknown",
    sends=4000,
    seed=707,
    knobs=RUNS[-1].knobs,
    read_timeout=0.25,
    rate_limit=RateLimit(),
    attempts=8,
    retry_unknown_outcome=True,
)

LONG_RUN = ChaosRun(
    "long-run-memory",
    sends=8000,
    seed=808,
    knobs={
        "rate_limit": 700.0,
        "burst": 40,
        "fault_500": 0.02,
        "fault_502_html": 0.02,
        "fault_disconnect_before": 0.01,
        "fault_disconnect_after": 0.01,
        "fault_truncated_body": 0.01,
        "latency_spike_probability": 0.005,
        "latency_spike": 0.6,
        "record_requests": False,
    },
    read_timeout=0.25,
    rate_limit=RateLimit(),
)


def cause(error: BaseException) -> str:
    """A short name for why an attempt failed, for the figures."""
    if isinstance(error, APIError):
        return f"HTTP {error.http_status}"
    if isinstance(error, OutcomeUnknownError):
        return error.reason.split(":")[0]
    return type(error).__name__


def is_read_timeout(error: BaseException) -> bool:
    return isinstance(error, OutcomeUnknownError) and error.reason == "read timeout"


class Tracker:
    """What the client reported, one byte and one ID per input (no growth)."""

    def __init__(self, size: int) -> None:
        self.codes = bytearray(size)
        self.ids = array("q", [-1]) * size
        self.results = 0
        self.read_timeouts = 0
        self.retries: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []

    def on_retry(self, details: RetryDetails) -> None:
        self.retries[cause(details.error)] += 1
        if is_read_timeout(details.error):
            self.read_timeouts += 1

    def add(self, result: SendResult) -> None:
        index = result.index
        if self.codes[index]:
            self.problem(f"item {index}: a second result")
            return
        self.results += 1
        error = result.error
        if error is None:
            code = SENT
            self.ids[index] = -1 if result.message_id is None else result.message_id
        elif isinstance(error, OutcomeUnknownError):
            code = UNKNOWN
        elif isinstance(error, APIError):
            code = REFUSED
        elif isinstance(error, APIConnectionError):
            code = NOT_SENT
        else:
            code = UNDOCUMENTED
            self.problem(f"item {index}: undocumented error {error!r}")
        self.codes[index] = code
        if error is not None:
            self.failures[cause(error)] += 1
            if is_read_timeout(error):
                self.read_timeouts += 1
        if EXPECTED_OUTCOME.get(code) is not result.outcome:
            self.problem(f"item {index}: outcome {result.outcome} for {error!r}")

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


@dataclasses.dataclass
class ServerView:
    """What the sandbox recorded."""

    ids_by_text: dict[str | None, list[int]]
    stats: Mapping[str, Any]
    # message ID -> outcome of the request that got it accepted (None: the
    # sandbox kept no request records).
    accepted_by: dict[int, str] | None

    @classmethod
    def of(cls, server: SandboxServer) -> ServerView:
        sandbox = server.sandbox
        ids: dict[str | None, list[int]] = collections.defaultdict(list)
        for message in sandbox.messages():
            ids[message.text].append(message.message_id)
        stats = sandbox.stats
        accepted_by = {
            record.message_id: record.outcome
            for record in sandbox.requests()
            if record.message_id is not None and record.outcome in ACCEPTING
        }
        return cls(
            dict(ids),
            {
                "requests": stats.requests,
                "accepted": stats.accepted,
                "duplicates": stats.duplicates,
                "outcomes": dict(stats.outcomes),
                "latency_spikes": stats.latency_spikes,
            },
            accepted_by,
        )

    @classmethod
    def from_json(
        cls, state: Mapping[str, Any], messages: list[dict[str, Any]]
    ) -> ServerView:
        ids: dict[str | None, list[int]] = collections.defaultdict(list)
        for row in sorted(messages, key=lambda row: row["message_id"]):
            ids[row["payload"].get("text")].append(row["message_id"])
        return cls(dict(ids), state["stats"], None)


def compare(
    run: ChaosRun, tracker: Tracker, server: ServerView, summary: BulkSummary
) -> tuple[dict[str, Any], list[str]]:
    """Check every result against the server; return the figures and problems."""
    problems = list(tracker.problems)

    def problem(text: str) -> None:
        if len(problems) < 20:
            problems.append(text)

    texts = {run.text(n) for n in range(run.sends)}
    for text in server.ids_by_text:
        if text not in texts:
            problem(f"the server accepted a message nobody sent: {text!r}")
    counts = collections.Counter(tracker.codes)
    unknown_accepted = lost = misreported = 0
    reported: set[int] = set()
    for index in range(run.sends):
        code = tracker.codes[index]
        ids = server.ids_by_text.get(run.text(index), [])
        if code == 0:
            problem(f"item {index}: no result")
        elif code == SENT:
            reported.add(tracker.ids[index])
            if not ids:
                misreported += 1
                problem(f"item {index}: reported sent, but never accepted")
            elif tracker.ids[index] != ids[-1]:
                # The reporting attempt is the item's last request, so its
                # acceptance is the text's last one.
                misreported += 1
                problem(f"item {index}: reported ID {tracker.ids[index]}, not {ids}")
        elif code in (REFUSED, NOT_SENT, UNDOCUMENTED):
            if ids:
                problem(f"item {index}: reported failed, but accepted as {ids}")
            misreported += bool(ids) or code == UNDOCUMENTED
            lost += code == NOT_SENT
        elif code == UNKNOWN:
            if ids:
                unknown_accepted += 1
            else:
                lost += 1

    ambiguous_by: collections.Counter[str] = collections.Counter()
    if server.accepted_by is not None:
        for message_id, outcome in server.accepted_by.items():
            if message_id not in reported:
                ambiguous_by[outcome] += 1
            elif outcome != "accepted":
                misreported += 1
                problem(f"message {message_id} reported sent after {outcome}")
        # An answer sent in full can only have been lost to a read timeout.
        if ambiguous_by["accepted"] > tracker.read_timeouts:
            problem(
                f"{ambiguous_by['accepted']} answers lost after acceptance, but "
                f"only {tracker.read_timeouts} read timeouts"
            )
        ambiguous = sum(ambiguous_by.values())
    else:
        ambiguous = server.stats["accepted"] - len(reported)
    outcomes = server.stats["outcomes"]
    # Every refusal the client saw (retried or final) was given by the
    # server; the server's refusals the client did not see were answered
    # too late, after a read timeout.
    seen = tracker.retries + tracker.failures
    unseen = 0
    for name in seen:
        if name.startswith("HTTP ") and name not in REFUSALS:
            problem(f"the client saw {name}, which the sandbox never sent")
    for name, outcome in REFUSALS.items():
        if seen[name] > outcomes.get(outcome, 0):
            problem(f"{seen[name]} x {name} seen, {outcomes.get(outcome, 0)} sent")
        unseen += max(outcomes.get(outcome, 0) - seen[name], 0)
    if unseen > tracker.read_timeouts - ambiguous_by["accepted"]:
        problem(f"{unseen} refusals never reached the client, nor timed out")
    duplicates = sum(len(ids) - 1 for ids in server.ids_by_text.values())
    if duplicates != server.stats["duplicates"]:
        problem(f"{duplicates} texts accepted twice, stats say otherwise")

    if summary.total != run.sends or summary.sent != counts[SENT]:
        problem(f"the stream's summary disagrees: {summary}")
    figures: dict[str, Any] = {
        "run": run.name,
        "policy": "retry unknown" if run.retry_unknown_outcome else "default",
        "seed": run.seed,
        "sends": run.sends,
        "requests": server.stats["requests"],
        **{fault: outcomes.get(fault, 0) for fault in FAULTS},
        "latency_spikes": server.stats["latency_spikes"],
        "read_timeouts": tracker.read_timeouts,
        "rate_limited": outcomes.get("rate_limited", 0),
        "accepted": server.stats["accepted"],
        "sent": counts[SENT],
        "failed": counts[REFUSED] + counts[NOT_SENT] + counts[UNDOCUMENTED],
        "unknown": counts[UNKNOWN],
        "unknown_accepted": unknown_accepted,
        "ambiguous": ambiguous,
        "ambiguous_by_cause": dict(ambiguous_by),
        "duplicates": duplicates,
        "lost": lost,
        "misreported": misreported,
        "attempts": summary.attempts,
        "retries": dict(tracker.retries),
        "failures": dict(tracker.failures),
    }
    return figures, problems


def open_sockets() -> int:
    """Sockets this process holds (0 where /proc is not available)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return 0
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


async def run_against(
    run: ChaosRun, access_key: str, base_url: str, tracker: Tracker
) -> BulkSummary:
    """Send every message of *run*; return the stream's summary."""
    async with (
        run.client(access_key, base_url, tracker) as client,
        client.send_messages(run.messages(), concurrency=run.concurrency) as stream,
    ):
        async for result in stream:
            tracker.add(result)
    return stream.summary


def report(
    chaos_report: list[dict[str, Any]], figures: dict[str, Any], started: float
) -> None:
    figures["seconds"] = round(time.perf_counter() - started, 1)
    chaos_report.append(figures)
    shown = {k: v for k, v in figures.items() if v not in (0, {}, None)}
    print(f"\nchaos run {figures['run']}: {shown}")  # noqa: T201


def assert_sound(figures: dict[str, Any], problems: list[str]) -> None:
    """The checks every run passes, whatever the policy."""
    assert [] == problems
    assert 0 == figures["misreported"]
    assert figures["sends"] == figures["sent"] + figures["failed"] + figures["unknown"]


@pytest.mark.parametrize("run", RUNS, ids=[run.name for run in RUNS])
async def test_results_agree_with_the_server(
    run: ChaosRun, chaos_server: SandboxServer, chaos_report: list[dict[str, Any]]
) -> None:
    """Default policy: every report is true, and nothing is accepted twice."""
    chaos_server.sandbox.reset(run.config())
    tasks = asyncio.all_tasks()
    sockets = open_sockets()
    tracker = Tracker(run.sends)
    started = time.perf_counter()

    summary = await run_against(
        run, chaos_server.access_key, chaos_server.base_url, tracker
    )

    figures, problems = compare(run, tracker, ServerView.of(chaos_server), summary)
    report(chaos_report, figures, started)
    assert_sound(figures, problems)
    assert 0 == figures["duplicates"]
    assert 0 == chaos_server.sandbox.stats.duplicates
    assert run.sends == tracker.results
    await eventually(lambda: asyncio.all_tasks() <= tasks)
    await eventually(lambda: open_sockets() <= sockets)


async def test_opt_in_retries_duplicate_only_ambiguous_sends(
    chaos_server: SandboxServer, chaos_report: list[dict[str, Any]]
) -> None:
    """retry_unknown_outcome: duplicates <= ambiguous failures, and none lost."""
    run = OPT_IN
    chaos_server.sandbox.reset(run.config())
    tasks = asyncio.all_tasks()
    sockets = open_sockets()
    tracker = Tracker(run.sends)
    started = time.perf_counter()

    summary = await run_against(
        run, chaos_server.access_key, chaos_server.base_url, tracker
    )

    figures, problems = compare(run, tracker, ServerView.of(chaos_server), summary)
    report(chaos_report, figures, started)
    assert_sound(figures, problems)
    assert figures["duplicates"] <= figures["ambiguous"]
    assert 0 == figures["lost"]
    # The opt-in mode did retry ambiguous sends (and so had the chance to
    # duplicate): the comparison above is not vacuous.
    assert figures["ambiguous"] > 0
    await eventually(lambda: asyncio.all_tasks() <= tasks)
    await eventually(lambda: open_sockets() <= sockets)


def knob_flags(config: SandboxConfig, knobs: Mapping[str, Any]) -> list[str]:
    """Command-line flags of ``python -m decisiontelecom_viber.sandbox``."""
    flags = ["--seed", str(config.seed)]
    for name, value in knobs.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


@contextlib.contextmanager
def sandbox_process(run: ChaosRun) -> Iterator[str]:
    """The sandbox in a process of its own; yields its base URL."""
    command = [
        sys.executable,
        "-m",
        "decisiontelecom_viber.sandbox",
        "--port",
        "0",
        *knob_flags(run.config(), run.knobs),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603 - our own module
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("Sandbox serving at "):
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def rss_bytes() -> int:
    """Resident set size of this process (0 where /proc is not available)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


async def test_long_run_keeps_memory_tasks_and_sockets_flat(
    chaos_report: list[dict[str, Any]],
) -> None:
    """A long faulty run: the client's memory does not grow in its second half.

    The sandbox runs in a process of its own here, so that what it records
    (every accepted message) does not count as the client's memory.
    """
    run = LONG_RUN
    tracker = Tracker(run.sends)
    # Sample the client's traced memory every 5 % of the run, second half.
    step = run.sends // 20
    traced: list[int] = []
    rss: list[int] = []
    with sandbox_process(run) as base_url:
        tasks = asyncio.all_tasks()
        sockets = open_sockets()
        started = time.perf_counter()
        tracemalloc.start()
        try:
            async with (
                run.client("sandbox-access-key", base_url, tracker) as client,
                client.send_messages(
                    run.messages(), concurrency=run.concurrency
                ) as stream,
            ):
                async for result in stream:
                    tracker.add(result)
                    done = tracker.results
                    if done % step == 0 and done >= run.sends // 2:
                        traced.append(tracemalloc.get_traced_memory()[0])
                        rss.append(rss_bytes())
        finally:
            tracemalloc.stop()
        summary = stream.summary
        await eventually(lambda: asyncio.all_tasks() <= tasks)
        await eventually(lambda: open_sockets() <= sockets)
        root = base_url.removesuffix("/v1/api")
        async with httpx.AsyncClient(base_url=root) as admin:
            state = (await admin.get("/__sandbox/state")).json()
            messages = (await admin.get("/__sandbox/messages")).json()

    figures, problems = compare(
        run, tracker, ServerView.from_json(state, messages), summary
    )
    growth = traced[-1] - traced[0]
    figures["notes"] = (
        f"traced memory {traced[0] / 2**20:.1f} -> {traced[-1] / 2**20:.1f} MiB "
        f"over the second half ({growth / 2**10:+.0f} KiB); RSS "
        f"{rss[0] / 2**20:.1f} -> {rss[-1] / 2**20:.1f} MiB"
    )
    figures["traced_growth_kib"] = round(growth / 2**10)
    figures["rss_growth_kib"] = round((rss[-1] - rss[0]) / 2**10)
    report(chaos_report, figures, started)
    assert_sound(figures, problems)
    assert 0 == figures["duplicates"]
    assert len(traced) >= 10
    assert growth < 2 * 2**20
