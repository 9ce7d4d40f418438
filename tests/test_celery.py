"""docs/scaling.md's Celery recipe, run for real: a prefork worker, Redis, the sandbox.

``celery -A celery_tasks worker --pool=prefork --concurrency=2`` runs
docs/examples/celery_tasks.py unchanged, with the test's Redis as broker,
result backend, rate limiter and send-once store, against the sandbox (in
this process, over loopback). The test queues confirmations, kills one pool
process with SIGKILL while its request is on the wire, lets the worker
replace it, and checks at the sandbox that no message went out twice and
that every order was either sent once or reported.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery
from redis.asyncio import Redis

from decisiontelecom_viber.redis import SendOnceGuard, SendState


if TYPE_CHECKING:
    from decisiontelecom_viber.sandbox import SandboxServer

    from .redis_server import RedisServer


pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
pytest_plugins = ["tests.redis_server"]

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "docs" / "examples"
TASK = "celery_tasks.send_confirmation"
ORDERS = 80
# The guard's lease in the worker (the recipe's VIBER_SEND_LEASE): short, so
# that the killed attempt's key is decided within the test.
LEASE = 8.0
FINAL = {"SUCCESS", "FAILURE"}
HOSTNAME = f"celery-test@{socket.gethostname()}"


def children(pid: int) -> set[int]:
    """PIDs of the live children of *pid* (the worker's pool processes)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # (exited meanwhile)
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


@contextlib.contextmanager
def celery_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A prefork worker in its own process group, killed whole afterwards."""
    with log.open("wb") as out:
        worker = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_tasks",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                f"--hostname={HOSTNAME}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=EXAMPLES,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield worker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


def wait_until_ready(worker: subprocess.Popen[bytes], log: Path) -> set[int]:
    """Wait for the worker's "ready" line and its two pool processes."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            pytest.fail(f"the worker exited:\n{log.read_text()[-3000:]}")
        pool = children(worker.pid)
        if " ready." in log.read_text() and len(pool) == 2:
            return pool
        time.sleep(0.1)
    pytest.fail(f"the worker did not start:\n{log.read_text()[-3000:]}")


def stop(worker: subprocess.Popen[bytes]) -> int:
    """Warm shutdown (SIGTERM): pool processes close their clients, then exit."""
    worker.send_signal(signal.SIGTERM)
    return worker.wait(30)


async def kill_one_mid_send(
    app: Celery, guard: SendOnceGuard, order_of: dict[str, str], pool: set[int]
) -> tuple[str, int]:
    """SIGKILL a pool process whose task's key is marked "writing"; its order, PID."""
    # (One destination: the answer comes as soon as the worker replies.)
    inspect = app.control.inspect([HOSTNAME], timeout=2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        replies = await asyncio.to_thread(inspect.active)
        for tasks in (replies or {}).values():
            for task in tasks:
                if task["worker_pid"] not in pool or task["id"] not in order_of:
                    continue
                order = order_of[task["id"]]
                record = await guard.lookup(f"confirmation:{order}")
                if (
                    record is not None
                    and record.on_the_wire
                    and record.state is SendState.PENDING
                ):
                    os.kill(task["worker_pid"], signal.SIGKILL)
                    return order, task["worker_pid"]
    pytest.fail("no pool process was caught with a request on the wire")


async def task_states(redis: Redis, ids: list[str]) -> list[dict[str, Any] | None]:
    """What the result backend holds for each task (None: nothing yet)."""
    raw = await redis.mget([f"celery-task-meta-{task_id}" for task_id in ids])
    return [json.loads(value) if value is not None else None for value in raw]


@pytest.mark.viber_sandbox(rate_limit=200, burst=20, latency=0.25)
async def test_a_killed_pool_process_sends_nothing_twice(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Redis,
    viber_sandbox: SandboxServer,
) -> None:
    """SIGKILL mid-send: redelivered; each order sent once or reported, none twice."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_server.url,
        CELERY_BROKER_URL=redis_server.url,
        CELERY_RESULT_BACKEND=redis_server.url,
        DECISIONTELECOM_BASE_URL=viber_sandbox.base_url,
        DECISIONTELECOM_ACCESS_KEY=viber_sandbox.access_key,
        VIBER_SEND_LEASE=str(LEASE),
        PYTHONPATH=os.pathsep.join([str(EXAMPLES), str(ROOT)]),
    )
    sandbox = viber_sandbox.sandbox
    guard = SendOnceGuard(redis_client, namespace="viber:sent")  # the recipe's
    orders = [str(5000 + n) for n in range(ORDERS)]
    texts = {order: f"Order {order} is confirmed" for order in orders}
    log = tmp_path / "worker.log"
    app = Celery("test-client", broker=redis_server.url)
    try:
        with celery_worker(env, log) as worker:
            first_pool = await asyncio.to_thread(wait_until_ready, worker, log)
            ids = {
                order: app.send_task(
                    TASK, args=[order, f"38050{order:0>7}", texts[order]]
                ).id
                for order in orders
            }
            order_of = {task_id: order for order, task_id in ids.items()}

            # Kill a pool process while its request is on the wire (its key
            # marked "writing"), once half of the orders are sent.
            deadline = time.monotonic() + 60
            while sandbox.stats.accepted < ORDERS // 2:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.05)
            killed, pid = await kill_one_mid_send(app, guard, order_of, first_pool)
            sent_at_kill = sandbox.stats.accepted
            states_at_kill = await task_states(redis_client, list(ids.values()))
            done_at_kill = sum(1 for s in states_at_kill if s and s["status"] in FINAL)
            # What the killed attempt left (nothing changes it any more).
            left = await guard.lookup(f"confirmation:{killed}")

            deadline = time.monotonic() + 90
            while True:
                states = await task_states(redis_client, list(ids.values()))
                if all(s is not None and s["status"] in FINAL for s in states):
                    break
                assert time.monotonic() < deadline, (
                    collections.Counter(s and s["status"] for s in states),
                    log.read_text()[-3000:],
                )
                await asyncio.sleep(0.2)
            second_pool = children(worker.pid)
            code = await asyncio.to_thread(stop, worker)
    finally:
        app.close()
    output = log.read_text()

    final: dict[str, dict[str, Any]] = {}
    for order, state in zip(ids, states, strict=True):
        assert state is not None  # the loop above ends once every task is final
        final[order] = state
    succeeded = {o: s["result"] for o, s in final.items() if s["status"] == "SUCCESS"}
    reported = {
        o: s["result"]["exc_type"] for o, s in final.items() if s["status"] == "FAILURE"
    }
    accepted = sandbox.messages()
    per_text = collections.Counter(message.text for message in accepted)
    id_of_text = {message.text: message.message_id for message in accepted}
    print(  # noqa: T201 - the figures, with -s
        f"\ncelery: {ORDERS} orders, pool process {pid} killed "
        f"mid-send of order {killed} after {sent_at_kill} accepted "
        f"({done_at_kill} tasks done); {len(succeeded)} sent once, "
        f"{len(reported)} reported {sorted(reported.values())} "
        f"({output.count('SendInProgressError(')} in-progress retries), "
        f"{sandbox.stats.accepted} accepted, {sandbox.stats.duplicates} duplicates"
    )

    # The kill came mid-run, and the master replaced the process.
    assert 0 < done_at_kill < sent_at_kill + 2
    assert ORDERS // 2 <= sent_at_kill < ORDERS - 10
    assert pid not in second_pool
    assert 2 == len(second_pool)
    assert second_pool - first_pool
    assert "signal 9 (SIGKILL)" in output
    # No message went out twice.
    assert 0 == sandbox.stats.duplicates
    assert set(per_text) <= set(texts.values())
    assert {1} == set(per_text.values())
    # Every order was sent once, with the ID its task returned, or reported.
    assert ORDERS == len(succeeded) + len(reported)
    for order, message_id in succeeded.items():
        assert id_of_text[texts[order]] == message_id
    assert len(set(succeeded.values())) == len(succeeded)
    # Only the killed process's order may be in doubt.
    assert set(reported) <= {killed}
    assert left is not None
    assert left.on_the_wire
    if SendState.PENDING == left.state:  # (always, bar a race with its answer)
        # Killed with its request written: redelivered, the task found the
        # key unresolved (or in progress, retried until its lease ran out)
        # and sent nothing; the API may have it, once.
        assert {killed: "SendUnresolvedError"} == reported
        assert per_text[texts[killed]] <= 1
        record = await guard.lookup(f"confirmation:{killed}")
        assert record is not None
        assert record.on_the_wire
        assert SendState.UNKNOWN == record.state  # (now: its lease ran out)
    # Every other order went out, the ones after the kill too.
    assert ORDERS - len(reported) == len(succeeded)
    # The pool processes closed their clients on the warm shutdown.
    assert 0 == code, output[-3000:]
    assert "was not closed" not in output
