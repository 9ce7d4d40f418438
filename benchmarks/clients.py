"""One client run, in its own process, printing one JSON line of measurements.

    python benchmarks/clients.py CLIENT --url URL --key KEY -n N -c CONCURRENCY
        [--warmup W] [--generator] [--rate R --burst B] [--singles K]

CLIENT is ``sdk`` (AsyncViberClient.send_messages, no configuration unless
``--rate``/``--burst`` give a `RateLimit`; ``--singles K`` also sends K single
`send_message` calls, one every ``--singles-every`` seconds, while the campaign runs — or alone
with ``-n 0`` — and reports their latency percentiles),
``httpx`` (httpx's default transport, ``client.post``), ``httpx-aiohttp``
(the leanest httpx path: httpx over aiohttp, each request built once and sent
with ``client.send``, no validation, no retries) or ``aiohttp`` (raw
aiohttp, the practical ceiling of a Python client).

Time and CPU are measured after imports and an optional warm-up (steady
state); peak RSS is the process's high-water mark. Baselines do not retry:
a 429 is a lost message for them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any


SENDER = "Bench"


def payload(n: int) -> dict[str, Any]:
    return {
        "source_addr": SENDER,
        "destination_addr": str(380_000_000_000 + n),
        "message_type": 106,
        "text": f"Your code is {n:06d}",
        "source_type": 2,
    }


def body(n: int) -> bytes:
    return json.dumps(payload(n), separators=(",", ":")).encode()


def headers(key: str) -> dict[str, str]:
    token = base64.b64encode(key.encode()).decode()
    return {
        "Authorization": f"Basic {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }


class Counts:
    def __init__(self) -> None:
        self.accepted = 0
        self.rate_limited = 0
        self.failed = 0

    def answer(self, status: int, raw: bytes) -> None:
        if status == 200 and b"message_id" in raw:
            self.accepted += 1
        elif status == 429 or b'"code":0' in raw:
            self.rate_limited += 1
        else:
            self.failed += 1


async def workers(concurrency: int, jobs: Iterator[int], handle: Any) -> None:
    async def work() -> None:
        for n in jobs:
            await handle(n)

    await asyncio.gather(*(work() for _ in range(concurrency)))


# Seconds between samples of the limiter's rate (benchmarks/charts.py).
SAMPLE_EVERY = 0.05


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def singles(
    client: Any, count: int, every: float, latencies: list[float]
) -> None:
    """One single send every *every* seconds (an OTP from a request handler)."""
    from decisiontelecom_viber import ViberMessage

    async def one(n: int) -> None:
        message = ViberMessage.transactional(
            sender=SENDER, receiver=str(390_000_000_000 + n), text=f"OTP {n:06d}"
        )
        start = time.perf_counter()
        await client.send_message(message)
        latencies.append(time.perf_counter() - start)

    tasks = []
    for n in range(count):
        tasks.append(asyncio.create_task(one(n)))
        await asyncio.sleep(every)
    await asyncio.gather(*tasks)


async def run_sdk(args: argparse.Namespace, counts: Counts) -> dict[str, Any]:
    from decisiontelecom_viber import AsyncViberClient, RateLimit, ViberMessage

    def messages(start: int, count: int) -> Iterator[ViberMessage]:
        for n in range(start, start + count):
            yield ViberMessage.transactional(
                sender=SENDER,
                receiver=str(380_000_000_000 + n),
                text=f"Your code is {n:06d}",
            )

    rate_limit = RateLimit()
    if args.rate is not None:
        rate_limit = RateLimit(rate=args.rate, burst=args.burst)
    latencies: list[float] = []
    async with AsyncViberClient(
        args.key, base_url=args.url, rate_limit=rate_limit
    ) as client:
        if args.warmup:
            async for _ in client.send_messages(
                messages(10**6, args.warmup), concurrency=args.concurrency
            ):
                pass
        before = client.metrics.rate_limited
        start = time.perf_counter()
        cpu = time.process_time()
        stream = client.send_messages(messages(0, args.n), concurrency=args.concurrency)

        async def campaign() -> float:
            async for result in stream:
                if result.ok:
                    counts.accepted += 1
                else:
                    counts.failed += 1
            return time.perf_counter() - start

        running = asyncio.create_task(campaign())
        series: list[list[float | None]] = []

        async def sample() -> None:
            # The limiter's rate, messages sent and 429s over time (charts).
            while True:
                series.append(
                    [
                        time.perf_counter() - start,
                        client.current_rate,
                        counts.accepted,
                        client.metrics.rate_limited - before,
                    ]
                )
                await asyncio.sleep(SAMPLE_EVERY)

        sampler = asyncio.create_task(sample())
        if args.singles:
            # Once the campaign has filled the limiter's queue.
            await asyncio.sleep(0.5 if args.n else 0)
            await singles(client, args.singles, args.singles_every, latencies)
        elapsed = await running
        cpu = time.process_time() - cpu
        sampler.cancel()
        counts.rate_limited = client.metrics.rate_limited - before
        return {
            "elapsed": elapsed,
            "cpu": cpu,
            "current_rate": client.current_rate,
            "estimated_limit": client.metrics.estimated_limit,
            "attempts": stream.summary.attempts,
            "singles_p50": percentile(latencies, 0.5),
            "singles_p99": percentile(latencies, 0.99),
            "singles": latencies,
            "series": series,
        }


async def run_httpx(args: argparse.Namespace, counts: Counts) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    url = f"{args.url}/send-viber"
    hdrs = headers(args.key)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(n: int) -> None:
            response = await client.post(url, content=body(n), headers=hdrs)
            counts.answer(response.status_code, response.content)

        if args.warmup:
            await workers(
                args.concurrency, iter(range(10**6, 10**6 + args.warmup)), one
            )
            counts.__init__()  # type: ignore[misc]
        start, cpu = time.perf_counter(), time.process_time()
        await workers(args.concurrency, iter(range(args.n)), one)
        return {
            "elapsed": time.perf_counter() - start,
            "cpu": time.process_time() - cpu,
        }


async def run_httpx_aiohttp(args: argparse.Namespace, counts: Counts) -> dict[str, Any]:
    import httpx
    from httpx_aiohttp import HttpxAiohttpClient

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    url = f"{args.url}/send-viber"
    hdrs = headers(args.key)
    async with HttpxAiohttpClient(limits=limits, timeout=30) as client:

        def build(numbers: range) -> Iterator[httpx.Request]:
            return (
                client.build_request("POST", url, content=body(n), headers=hdrs)
                for n in numbers
            )

        async def one(request: httpx.Request) -> None:
            response = await client.send(request)
            counts.answer(response.status_code, response.content)

        if args.warmup:
            await workers(
                args.concurrency, build(range(10**6, 10**6 + args.warmup)), one
            )
            counts.__init__()  # type: ignore[misc]
        # Built once, before the clock starts (the strictest baseline), unless
        # the workload streams from a generator.
        requests: Iterator[httpx.Request] = build(range(args.n))
        if not args.generator:
            requests = iter(list(requests))
        start, cpu = time.perf_counter(), time.process_time()
        await workers(args.concurrency, requests, one)
        return {
            "elapsed": time.perf_counter() - start,
            "cpu": time.process_time() - cpu,
        }


async def run_aiohttp(args: argparse.Namespace, counts: Counts) -> dict[str, Any]:
    import aiohttp

    url = f"{args.url}/send-viber"
    hdrs = headers(args.key)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> None:
            async with session.post(url, data=body(n), headers=hdrs) as response:
                counts.answer(response.status, await response.read())

        if args.warmup:
            await workers(
                args.concurrency, iter(range(10**6, 10**6 + args.warmup)), one
            )
            counts.__init__()  # type: ignore[misc]
        start, cpu = time.perf_counter(), time.process_time()
        await workers(args.concurrency, iter(range(args.n)), one)
        return {
            "elapsed": time.perf_counter() - start,
            "cpu": time.process_time() - cpu,
        }


RUNNERS = {
    "sdk": run_sdk,
    "httpx": run_httpx,
    "httpx-aiohttp": run_httpx_aiohttp,
    "aiohttp": run_aiohttp,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(RUNNERS))
    parser.add_argument("--url", required=True, help="API base URL (.../v1/api)")
    parser.add_argument("--key", required=True)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--generator", action="store_true")
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument("--singles", type=int, default=0)
    parser.add_argument("--singles-every", type=float, default=0.1)
    args = parser.parse_args()
    counts = Counts()
    measured = asyncio.run(RUNNERS[args.client](args, counts))
    measured.update(
        client=args.client,
        n=args.n,
        accepted=counts.accepted,
        rate_limited=counts.rate_limited,
        failed=counts.failed,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    json.dump(measured, sys.stdout)
    print()


if __name__ == "__main__":
    main()
