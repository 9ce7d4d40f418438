"""Virtual time for deterministic limiter tests: an event loop whose clock jumps.

`VirtualTimeLoop.time()` only moves when every task is waiting: then it
jumps to the next timer. Seconds of simulated traffic run in milliseconds,
and the same run gives the same result every time.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

import attrs
import httpx


T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose time advances to the next timer instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0
        real_select = self._selector.select  # type: ignore[attr-defined]

        def select(timeout: float | None = None) -> Any:
            if timeout is not None and timeout > 0:
                self._virtual_now += timeout
            return real_select(0)

        self._selector.select = select  # type: ignore[attr-defined]

    def time(self) -> float:
        return self._virtual_now


def run_virtual(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run *coroutine* to completion in virtual time."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class LoopClock:
    """A `Clock` on the running loop's time (virtual under `run_virtual`)."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def time(self) -> float:
        return 1_700_000_000.0 + self.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@attrs.define
class BucketServer:
    """A Yii2-like token-bucket API in (virtual) loop time, behind httpx.MockTransport.

    Attributes:
        rate: Tokens per second.
        burst: Bucket size.
        latency: Seconds from request to answer (the bucket is checked midway).
        headers: Send X-Rate-Limit-Limit/Remaining/Reset.
        accepted: Requests accepted.
        refused: 429s answered.
    """

    rate: float
    burst: int
    latency: float = 0.001
    headers: bool = False
    tokens: float = -1.0
    last: float = 0.0
    accepted: int = 0
    refused: int = 0

    def take(self, now: float) -> tuple[bool, float]:
        if self.tokens < 0:
            self.tokens, self.last = float(self.burst), now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.accepted += 1
            return True, self.tokens
        self.refused += 1
        return False, self.tokens

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.latency / 2)
        ok, tokens = self.take(asyncio.get_running_loop().time())
        await asyncio.sleep(self.latency / 2)
        extra = {}
        if self.headers:
            extra = {
                "X-Rate-Limit-Limit": str(self.burst),
                "X-Rate-Limit-Remaining": str(int(tokens)),
                "X-Rate-Limit-Reset": str(int((self.burst - tokens) / self.rate)),
            }
        if ok:
            body = {"message_id": self.accepted}
            return httpx.Response(200, content=json.dumps(body).encode(), headers=extra)
        body = {
            "name": "Too Many Requests",
            "message": "Rate limit exceeded",
            "code": 0,
            "status": 429,
        }
        return httpx.Response(429, content=json.dumps(body).encode(), headers=extra)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def ideal_seconds(self) -> float:
        """Physical minimum to get the accepted count through."""
        return max(0.0, (self.accepted - self.burst) / self.rate)


def ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b)
