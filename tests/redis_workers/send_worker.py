"""A worker process for the Redis scaling tests.

Sends the messages ``job-{first}`` ... ``job-{last - 1}`` through one
`AsyncViberClient` whose rate limit is a `RedisLimiter`, each with its
dedupe key through `SendOnceGuard.send_messages`, and writes one JSON line
per result on stdout (flushed at once, so a parent can kill it mid-run):

    {"key": ..., "outcome": ..., "message_id": ..., "replayed": ..., "error": ...,
     "at": ...}

(``at``: the unix time the result came) then a last line ``{"done": true,
"first_send": ..., "last_answer": ..., "refusals": [...]}`` (unix times;
``refusals``: when each request that drew a 429 was let go). With
``--barrier N`` the worker waits, before its first send, until N workers are
ready (counted in Redis), so that they all start together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis

from decisiontelecom_viber import (
    AsyncViberClient,
    Feedback,
    RateLimit,
    RetryPolicy,
    ViberError,
    ViberMessage,
)
from decisiontelecom_viber._limits import Priority
from decisiontelecom_viber.redis import RedisLimiter, SendOnceGuard


def message_for(index: int) -> ViberMessage:
    """The message of job *index*: its text names the job (duplicates show)."""
    return ViberMessage.transactional(
        sender="Scale", receiver=f"38050{index:07d}", text=f"job-{index}"
    )


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def wait_for_barrier(redis: Redis, name: str, count: int) -> None:
    """Return once *count* workers have called this (the last one opens the gate)."""
    # (redis-py types its commands for both clients: the asyncio one awaits.)
    if await cast("Awaitable[int]", redis.incr(f"{name}:ready")) == count:
        await cast("Awaitable[int]", redis.rpush(f"{name}:go", *["go"] * count))
    go = redis.blpop([f"{name}:go"], timeout=60)
    if await cast("Awaitable[list[Any] | None]", go) is None:
        raise TimeoutError("the other workers did not get ready")


class _TracedPermit:
    """A permit of `TracedLimiter`: notes the 429s it is released with."""

    def __init__(self, permit: Any, refusals: list[float]) -> None:
        self._permit = permit
        self._refusals = refusals
        self.waited = permit.waited

    def release(self, feedback: Feedback) -> None:
        if feedback.rate_limited:
            self._refusals.append(time.time() - time.monotonic() + feedback.sent_at)
        self._permit.release(feedback)


class TracedLimiter:
    """A `RedisLimiter` that notes when each request that drew a 429 was sent."""

    def __init__(self, limiter: RedisLimiter) -> None:
        self.limiter = limiter
        self.refusals: list[float] = []

    async def acquire(
        self, deadline: float | None = None, priority: Priority = "normal"
    ) -> _TracedPermit:
        permit = await self.limiter.acquire(deadline, priority)
        return _TracedPermit(permit, self.refusals)

    def bind(self, clock: Any) -> None:
        self.limiter.bind(clock)

    @property
    def current_rate(self) -> float | None:
        return self.limiter.current_rate

    @property
    def estimated_limit(self) -> float | None:
        return self.limiter.estimated_limit


async def run(args: argparse.Namespace) -> None:
    redis = Redis.from_url(args.redis_url)
    limiter = RedisLimiter(
        redis,
        RateLimit(rate=args.rate, burst=args.burst),
        key=args.limiter_key,
    )
    traced = TracedLimiter(limiter)
    guard = SendOnceGuard(redis, namespace=args.namespace, lease=args.lease)
    client = AsyncViberClient(
        args.access_key,
        base_url=args.base_url,
        rate_limit=traced,
        retry=RetryPolicy(attempts=10, timeout=60.0),
    )
    pairs = ((f"job-{i}", message_for(i)) for i in range(args.first, args.last))
    try:
        # Warm up (a connection open, the code loaded, the limiter's scripts
        # in Redis): a cold worker's first requests wait for that, then leave
        # together, long after the limiter let them go.
        with contextlib.suppress(ViberError):
            await client.get_message_status(1)
        if args.barrier:
            await wait_for_barrier(redis, f"{args.namespace}:barrier", args.barrier)
        first_send = time.time()
        last_answer = first_send
        async with guard.send_messages(
            client, pairs, concurrency=args.concurrency
        ) as results:
            async for result in results:
                last_answer = time.time()
                emit(
                    {
                        "key": result.dedupe_key,
                        "outcome": result.outcome.value,
                        "message_id": result.message_id,
                        "replayed": result.replayed,
                        "error": type(result.error).__name__ if result.error else None,
                        "at": last_answer,
                    }
                )
        emit(
            {
                "done": True,
                "first_send": first_send,
                "last_answer": last_answer,
                "refusals": traced.refusals,
            }
        )
    finally:
        await client.aclose()
        await limiter.aclose()
        await guard.aclose()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--last", type=int, required=True)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--limiter-key", default="test:limiter")
    parser.add_argument("--namespace", default="test:sent")
    parser.add_argument("--lease", type=float, default=120.0)
    parser.add_argument("--barrier", type=int, default=0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
