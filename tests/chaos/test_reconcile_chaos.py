"""Reconciliation at scale: 2,000 sends, 5 % of the answers broken after acceptance.

Through `SendOnceGuard` with its reconciler behind a real `CallbackReceiver`,
and through ``bulk --listen``: the sandbox accepted every message, so every
one gets its status callbacks, and every send left unknown must be settled
as sent with the message ID the API gave it (target: at least 99 % within
the callbacks' delay), none wrongly, none sent twice.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from redis.asyncio import Redis

from decisiontelecom_viber import (
    AsyncViberClient,
    CallbackReceiver,
    RetryPolicy,
    SendOutcome,
)
from decisiontelecom_viber.cli import ExitCode
from decisiontelecom_viber.redis import SendOnceGuard, SendState
from decisiontelecom_viber.sandbox import SandboxConfig, serve_sandbox

from ..helpers import eventually
from ..servers import serve_in_loop, unused_port
from ..test_cli_job import rows_file
from ..test_cli_reconcile import ENV, KEY, SECRET, bulk, results, truth
from ..test_redis_reconcile import message, references


if TYPE_CHECKING:
    from ..redis_server import RedisServer  # noqa: F401


pytestmark = [pytest.mark.chaos, pytest.mark.integration]
pytest_plugins = ["tests.redis_server"]

TOTAL = 2000


@contextlib.contextmanager
def sandbox_process(*options: str) -> Iterator[str]:
    """The sandbox CLI in a process of its own (one process sharing its GIL
    with the client and the receiver delivers callbacks at ~30/s); its URL."""
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [
            *(sys.executable, "-m", "decisiontelecom_viber.sandbox", "--port", "0"),
            *("--access-key", KEY, *options),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("Sandbox serving at "), first
        yield first.removeprefix("Sandbox serving at ").strip()
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def test_the_guard_settles_what_its_callbacks_prove(redis_client: Redis) -> None:
    """2,000 guarded sends, 5 % of the answers dropped after acceptance."""
    guard = SendOnceGuard(redis_client, namespace="chaos:reconcile")
    reconciler = guard.reconciler()
    receiver = CallbackReceiver(on_status=reconciler, secret=SECRET)
    # Only the "sent" callbacks during the test: the sandbox's httpx client
    # spends ~5 ms of CPU per callback, and this machine has 2 cores.
    options = (
        *("--fault-disconnect-after", "0.05", "--sent-after", "0.5"),
        *("--delivered-after", "600"),
    )
    async with serve_in_loop(receiver) as root:
        with sandbox_process(*options, "--seed", "3") as base_url:
            async with AsyncViberClient(
                KEY,
                base_url=base_url,
                callback_url=f"{root}/viber/callbacks",
                callback_secret=SECRET,
                retry=RetryPolicy(attempts=3),
            ) as client:
                stream = guard.send_messages(
                    client, [(f"order-{n}", message(n)) for n in range(TOTAL)]
                )
                async with stream:
                    unknown = [
                        r.dedupe_key
                        async for r in stream
                        if r.outcome is SendOutcome.UNKNOWN
                    ]
            started = time.monotonic()
            with contextlib.suppress(AssertionError):  # (the figures say)
                await eventually(lambda: reconciler.stats.settled >= len(unknown), 30.0)
            took = time.monotonic() - started
            root_url = base_url.removesuffix("/v1/api")
            async with httpx.AsyncClient() as admin:
                listed = (await admin.get(f"{root_url}/__sandbox/messages")).json()
                stats = (await admin.get(f"{root_url}/__sandbox/state")).json()
    ids = references(listed)
    records = [await guard.lookup(key or "") for key in unknown]
    right = sum(
        1
        for key, record in zip(unknown, records, strict=True)
        if record is not None
        and record.state is SendState.SENT
        and record.message_id == ids[key or ""]
    )
    print(  # noqa: T201 - the figures, with -s
        f"\nguard: {TOTAL} sends, {len(unknown)} unknown, {right} settled right "
        f"within {took:.1f} s of the last answer, {reconciler.stats.conflicts} "
        f"conflicts, {stats['stats']['duplicates']} duplicates"
    )

    assert len(unknown) >= TOTAL * 0.01  # the faults happened
    assert right >= 0.99 * len(unknown)
    assert right == reconciler.stats.settled  # 0 wrong resolutions
    assert 0 == reconciler.stats.conflicts
    assert (TOTAL, 0) == (len(listed), stats["stats"]["duplicates"])


def test_bulk_listen_settles_what_its_callbacks_prove(tmp_path: Path) -> None:
    """2,000 rows, 5 % of the answers cut mid-body after acceptance."""
    port = unused_port()
    url = f"http://127.0.0.1:{port}/viber/callbacks"
    config = SandboxConfig(
        access_key=KEY,
        fault_truncated_body=0.05,
        sent_after=0.5,
        delivered_after=600.0,  # (only the "sent" callbacks, as above)
        # Redelivered, as the API does: a keep-alive race on loopback (a
        # connection the receiver closed as the sandbox reused it) must not
        # count as a callback that proves nothing.
        callback_attempts=3,
        seed=5,
    )
    with serve_sandbox(config) as api:
        output = tmp_path / "out.jsonl"
        args = bulk(
            rows_file(tmp_path / "in.jsonl", TOTAL),
            output,
            api,
            *("--callback-url", url, "--callback-secret", SECRET),
            *("--listen", f"127.0.0.1:{port}", "--reconcile-wait", "60"),
        )
        done = subprocess.run(  # noqa: S603
            args, env=ENV, capture_output=True, text=True, timeout=300, check=False
        )
        ids = truth(api)
        stats = api.sandbox.stats
    rows = results(output)
    settled = int(done.stderr.split("callbacks settled ")[1].split()[0])
    wrong = [
        r for r in rows if r["outcome"] == "sent" and r["message_id"] != ids[r["row"]]
    ]
    left = [r for r in rows if r["outcome"] == "unknown"]
    print(  # noqa: T201 - the figures, with -s
        f"\nbulk: {TOTAL} rows, {settled + len(left)} unknown after their answers, "
        f"{settled} settled by callbacks, {len(left)} left, {len(wrong)} wrong, "
        f"{stats.duplicates} duplicates"
    )

    assert ExitCode.OK == done.returncode or left, done.stderr
    assert settled >= TOTAL * 0.01  # the faults happened
    assert settled >= 0.99 * (settled + len(left))
    assert [] == wrong
    assert (TOTAL, 0) == (stats.accepted, stats.duplicates)
