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

from decisiontelecom_viber.sandbox._buckets import answer_headers, make_bucket


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
    """A rate-limited API in (virtual) loop time, behind httpx.MockTransport.

    The bucket is one of the sandbox's (`sandbox._buckets`): Yii2's exact
    algorithm for the ``"yii2"`` dialect, a continuous token bucket otherwise.

    Attributes:
        rate: Tokens per second.
        burst: Bucket size (continuous dialects; Yii2's is rate x window).
        latency: Seconds from request to answer (the bucket is checked midway).
        headers: Send X-Rate-Limit-* headers: True (``"full-reset"``), a
            dialect name, or False.
        window: Yii2's window in seconds.
        epoch: Unix time at loop time 0 (Yii2 counts whole Unix seconds).
        retry_after: Send ``Retry-After`` (whole seconds) with 429s.
        accepted: Requests accepted.
        refused: 429s answered.
    """

    rate: float
    burst: int = 1
    latency: float = 0.001
    headers: bool | str = False
    window: int = 1
    epoch: float = 1_700_000_000.37
    retry_after: bool = False
    dialect_for_algorithm: str | None = None
    accepted: int = 0
    refused: int = 0
    bucket: Any = None

    @property
    def dialect(self) -> str | None:
        if self.headers is True:
            return "full-reset"
        return self.headers or self.dialect_for_algorithm

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        unix = self.epoch + now
        if self.bucket is None:
            self.bucket = make_bucket(
                self.dialect,  # type: ignore[arg-type]
                self.rate,
                self.burst,
                self.window,
                unix,
            )
        verdict = self.bucket.take(unix)
        ok = verdict[0]
        if ok:
            self.accepted += 1
        else:
            self.refused += 1
        extra = answer_headers(
            self.bucket,
            verdict,
            unix,
            rate_limit_headers=bool(self.headers),
            retry_after=self.retry_after,
        )
        return ok, extra

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.latency / 2)
        ok, extra = self.take(asyncio.get_running_loop().time())
        await asyncio.sleep(self.latency / 2)
        body: dict[str, object]
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
    def capacity(self) -> int:
        """The bucket's size: what may go at once."""
        if self.dialect == "yii2":
            return max(1, round(self.rate * self.window))
        return self.burst

    @property
    def ideal_seconds(self) -> float:
        """Physical minimum to get the accepted count through."""
        return max(0.0, (self.accepted - self.capacity) / self.rate)


def ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b)
