"""The sync client beside the async one, in one process, one JSON list of rows.

    python benchmarks/sync_clients.py MODE --url URL --key KEY -n N

MODE is ``sequential`` (N single sends one after another: the per-call cost
of the sync client over the async one), ``bulk`` (``send_messages`` of N at
64 in flight, from a generator) or ``threads`` (8 threads sharing one
`ViberClient` with ``RateLimit(rate=100)``, N sends in all, against a 100/s
server; no async row). The async client, the baseline, is measured in the
same process against the same server, in rounds alternating with the sync
one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
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


ROUNDS = 5


def interleaved(
    url: str,
    key: str,
    n: int,
    async_part: Callable[[AsyncViberClient, int, int], Awaitable[int]],
    sync_part: Callable[[ViberClient, int, int], int],
) -> list[dict[str, Any]]:
    """Both clients, in alternating rounds (this machine's speed drifts by
    tens of percent over a minute): each row sums its rounds; medians of the
    per-round figures go in ``round_medians``."""
    loop = asyncio.new_event_loop()
    aclient = AsyncViberClient(key, base_url=url)
    totals = {"sdk": [0.0, 0.0, 0], "sdk-sync": [0.0, 0.0, 0]}
    per_round: dict[str, list[float]] = {"sdk": [], "sdk-sync": []}
    size = n // ROUNDS
    with ViberClient(key, base_url=url) as client:
        loop.run_until_complete(async_part(aclient, 10**7, 500))  # (warm-ups)
        sync_part(client, 2 * 10**7, 500)
        for number in range(ROUNDS):
            for name in ("sdk", "sdk-sync"):
                start_at = (number * 2 + (name == "sdk-sync")) * size
                start, cpu = time.perf_counter(), time.process_time()
                if name == "sdk":
                    accepted = loop.run_until_complete(
                        async_part(aclient, start_at, size)
                    )
                else:
                    accepted = sync_part(client, start_at, size)
                elapsed = time.perf_counter() - start
                totals[name][0] += elapsed
                totals[name][1] += time.process_time() - cpu
                totals[name][2] += accepted
                per_round[name].append(elapsed / size)
    loop.run_until_complete(aclient.aclose())
    loop.close()
    return [
        row(
            name,
            size * ROUNDS,
            elapsed,
            cpu,
            accepted=accepted,
            rate_limited=0,
            round_median=statistics.median(per_round[name]),
        )
        for name, (elapsed, cpu, accepted) in totals.items()
    ]


def sequential(url: str, key: str, n: int) -> list[dict[str, Any]]:
    async def async_part(client: AsyncViberClient, start: int, count: int) -> int:
        for message in messages(start, count):
            await client.send_message(message)
        return count

    def sync_part(client: ViberClient, start: int, count: int) -> int:
        for message in messages(start, count):
            client.send_message(message)
        return count

    return interleaved(url, key, n, async_part, sync_part)


def bulk(url: str, key: str, n: int) -> list[dict[str, Any]]:
    async def async_part(client: AsyncViberClient, start: int, count: int) -> int:
        accepted = 0
        stream = client.send_messages(messages(start, count), concurrency=64)
        async for result in stream:
            accepted += result.ok
        return accepted

    def sync_part(client: ViberClient, start: int, count: int) -> int:
        stream = client.send_messages(messages(start, count), concurrency=64)
        return sum(result.ok for result in stream)

    return interleaved(url, key, n, async_part, sync_part)


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
