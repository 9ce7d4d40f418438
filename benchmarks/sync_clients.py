"""The sync client beside the async one, in one process, one JSON list of rows.

    python benchmarks/sync_clients.py MODE --url URL --key KEY -n N

MODE is ``sequential`` (N single sends one after another: the per-call cost
of the sync client over the async one), ``bulk`` (``send_messages`` of N at
64 in flight, each client after a warm-up) or ``threads`` (8 threads sharing
one `ViberClient` with ``RateLimit(rate=100)``, N sends in all, against a
100/s server; no async row). The async client is measured first, against
the same server, as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from decisiontelecom_viber import (
    AsyncViberClient,
    RateLimit,
    ViberClient,
    ViberError,
    ViberMessage,
)


def messages(start: int, count: int) -> Iterator[ViberMessage]:
    for n in range(start, start + count):
        yield ViberMessage.transactional(
            sender="Bench", receiver=str(380_000_000_000 + n), text=f"code {n:06d}"
        )


def row(
    client: str, n: int, elapsed: float, cpu: float, **extra: Any
) -> dict[str, Any]:
    return {
        "client": client,
        "n": n,
        "elapsed": elapsed,
        "cpu": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def sequential(url: str, key: str, n: int) -> list[dict[str, Any]]:
    async def async_run() -> dict[str, Any]:
        async with AsyncViberClient(key, base_url=url) as client:
            for message in messages(10**6, 200):  # (warm-up)
                await client.send_message(message)
            start, cpu = time.perf_counter(), time.process_time()
            for message in messages(0, n):
                await client.send_message(message)
            return row(
                "sdk",
                n,
                time.perf_counter() - start,
                time.process_time() - cpu,
                accepted=n,
                rate_limited=client.metrics.rate_limited,
            )

    rows = [asyncio.run(async_run())]
    with ViberClient(key, base_url=url) as client:
        for message in messages(2 * 10**6, 200):
            client.send_message(message)
        start, cpu = time.perf_counter(), time.process_time()
        for message in messages(n, n):
            client.send_message(message)
        rows.append(
            row(
                "sdk-sync",
                n,
                time.perf_counter() - start,
                time.process_time() - cpu,
                accepted=n,
                rate_limited=client.metrics.rate_limited,
            )
        )
    return rows


def bulk(url: str, key: str, n: int) -> list[dict[str, Any]]:
    async def async_run() -> dict[str, Any]:
        async with AsyncViberClient(key, base_url=url) as client:
            async for _ in client.send_messages(messages(10**6, 1000), concurrency=64):
                pass
            start, cpu = time.perf_counter(), time.process_time()
            accepted = 0
            async for result in client.send_messages(messages(0, n), concurrency=64):
                accepted += result.ok
            return row(
                "sdk",
                n,
                time.perf_counter() - start,
                time.process_time() - cpu,
                accepted=accepted,
                rate_limited=client.metrics.rate_limited,
            )

    rows = [asyncio.run(async_run())]
    with ViberClient(key, base_url=url) as client:
        for _ in client.send_messages(messages(2 * 10**6, 1000), concurrency=64):
            pass
        start, cpu = time.perf_counter(), time.process_time()
        accepted = sum(
            result.ok for result in client.send_messages(messages(n, n), concurrency=64)
        )
        rows.append(
            row(
                "sdk-sync",
                n,
                time.perf_counter() - start,
                time.process_time() - cpu,
                accepted=accepted,
                rate_limited=client.metrics.rate_limited,
            )
        )
    return rows


def threads(url: str, key: str, n: int) -> list[dict[str, Any]]:
    workers = 8
    outcomes: dict[str, int] = {"accepted": 0, "failed": 0, "raised": 0}
    lock = threading.Lock()
    with ViberClient(key, base_url=url, rate_limit=RateLimit(rate=100)) as client:

        def work(worker: int) -> None:
            for message in messages(worker * n, n // workers):
                try:
                    client.send_message(message)
                    outcome = "accepted"
                except ViberError:
                    outcome = "failed"
                except BaseException:
                    outcome = "raised"
                with lock:
                    outcomes[outcome] += 1

        pool = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        start, cpu = time.perf_counter(), time.process_time()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - start
        return [
            row(
                "sdk-sync, 8 threads",
                n // workers * workers,
                elapsed,
                time.process_time() - cpu,
                rate_limited=client.metrics.rate_limited,
                **outcomes,
            )
        ]


MODES = {"sequential": sequential, "bulk": bulk, "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("-n", type=int, required=True)
    args = parser.parse_args()
    json.dump(MODES[args.mode](args.url, args.key, args.n), sys.stdout)
    print()


if __name__ == "__main__":
    main()
