"""Time, injected: retries and rate limits wait through a `Clock`.

Tests pass a fake clock whose ``sleep`` advances virtual time and returns at
once, so no test ever waits for real (the idea of trio's ``MockClock``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable


__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """The time source of a client: monotonic time, wall time, and sleep."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards."""

    def time(self) -> float:
        """Unix time in seconds (used to read HTTP-date headers)."""

    async def sleep(self, seconds: float) -> None:
        """Wait *seconds*."""


class SystemClock:
    """The real clock: `time.monotonic`, `time.time` and `asyncio.sleep`."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()

    def time(self) -> float:
        """Return `time.time()`."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait with `asyncio.sleep`."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"
