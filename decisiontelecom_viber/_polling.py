"""`wait_for_status`: poll a status with growing intervals until it is final."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ._cancel import timeout_at
from ._checks import is_number
from ._clock import Clock
from ._errors import StatusTimeoutError, ValidationError
from ._models import MessageReceipt


__all__ = ["poll_until_final"]

_GROWTH = 1.5


def _is_final(receipt: MessageReceipt) -> bool:
    return receipt.is_final


async def poll_until_final(
    lookup: Callable[[], Awaitable[MessageReceipt]],
    *,
    message_id: int,
    clock: Clock,
    timeout: float,
    poll_initial: float,
    poll_max: float,
    until: Callable[[MessageReceipt], bool] | None,
) -> MessageReceipt:
    """Call *lookup* until *until* (default: final) holds or *timeout* passes.

    Raises:
        ValidationError: A timing argument is not a number > 0.
    """
    for name, value in (
        ("timeout", timeout),
        ("poll_initial", poll_initial),
        ("poll_max", poll_max),
    ):
        given: object = value  # callers may pass anything at run time
        if not is_number(given) or not given > 0:
            raise ValidationError(name, "must be a number > 0")
    done = until if until is not None else _is_final
    deadline = clock.monotonic() + timeout
    interval = poll_initial
    receipt: MessageReceipt | None = None
    loop = asyncio.get_running_loop()
    while True:
        # A lookup is bounded by what is left of *timeout* too (lookups are
        # read-only: cutting one short loses nothing).
        left = deadline - clock.monotonic()
        try:
            async with timeout_at(loop.time() + max(left, 0.0)):
                receipt = await lookup()
        except asyncio.TimeoutError:
            raise StatusTimeoutError(message_id, timeout, receipt) from None
        if done(receipt):
            return receipt
        left = deadline - clock.monotonic()
        if left <= 0:
            raise StatusTimeoutError(message_id, timeout, receipt)
        await clock.sleep(min(interval, left))
        interval = min(interval * _GROWTH, poll_max)
