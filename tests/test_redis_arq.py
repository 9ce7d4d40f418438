"""docs/scaling.md's arq example, run for real: arq workers, Redis, the sandbox."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job


if TYPE_CHECKING:
    from decisiontelecom_viber.sandbox import SandboxServer

    from .redis_server import RedisServer


pytestmark = pytest.mark.integration
pytest_plugins = ["tests.redis_server"]

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "scaling.md"


def example_file(name: str) -> str:
    """The code block that follows ``<!-- file: NAME -->`` in docs/scaling.md."""
    found = re.search(
        rf"<!-- file: {re.escape(name)} -->\n```python\n(.*?)```", DOC.read_text(), re.S
    )
    assert found is not None, f"no {name} example in {DOC}"
    return found.group(1)


def run_workers(count: int, env: dict[str, str], cwd: Path) -> None:
    """Run *count* arq workers in burst mode (they exit once the queue is empty)."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "arq", "viber_tasks.WorkerSettings", "--burst"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert 0 == worker.returncode, out


@pytest.mark.viber_sandbox(rate_limit=200, burst=20)
async def test_the_arq_example_sends_each_confirmation_once(
    tmp_path: Path,
    redis_server: RedisServer,
    viber_sandbox: SandboxServer,
) -> None:
    """Two burst-mode workers drain the queue; a job queued again sends nothing."""
    (tmp_path / "viber_tasks.py").write_text(example_file("viber_tasks.py"))
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_server.url,
        DECISIONTELECOM_BASE_URL=viber_sandbox.base_url,
        DECISIONTELECOM_ACCESS_KEY=viber_sandbox.access_key,
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
    )
    orders = [str(1000 + i) for i in range(40)]
    pool = await create_pool(RedisSettings.from_dsn(redis_server.url))
    try:
        await pool.flushall()
        jobs = [
            await pool.enqueue_job(
                "send_confirmation",
                order,
                f"38050{order:0>7}",
                f"Order {order} is confirmed",
                _job_id=f"confirm:{order}",
            )
            for order in orders
        ]
        run_workers(2, env, tmp_path)
        # The first order again under another job ID, as a redelivery would.
        jobs.append(
            await pool.enqueue_job(
                "send_confirmation",
                orders[0],
                f"38050{orders[0]:0>7}",
                f"Order {orders[0]} is confirmed",
                _job_id="confirm:again",
            )
        )
        run_workers(1, env, tmp_path)
        ids = [
            await Job(job.job_id, pool).result(timeout=5)
            for job in jobs
            if job is not None
        ]
    finally:
        await pool.aclose()
    stats = viber_sandbox.sandbox.stats

    assert 41 == len(ids)
    assert ids[0] == ids[-1]
    assert 40 == len(set(ids))
    assert 40 == stats.accepted
    assert 0 == stats.duplicates
    assert set(ids) == viber_sandbox.sandbox.accepted_ids()
