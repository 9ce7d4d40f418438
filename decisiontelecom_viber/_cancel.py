"""Cancellation the SDK starts itself, told apart from the caller's.

The SDK cancels a task for two reasons of its own: a deadline (`timeout_at`)
and closing (`Calls.close`). A cancellation the caller sent must never be
taken for one of those and swallowed. Python 3.11+ counts cancellations
(``Task.cancelling``/``uncancel``): `asyncio.timeout` and `ours` use that.
Python 3.10 does not: there the SDK cancels with a message of its own, never
over a cancellation already pending, and recognises its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator


__all__ = ["cancel_for", "ours", "timeout_at"]

_COUNTS = sys.version_info >= (3, 11)


def _pending(task: asyncio.Task[object]) -> bool:
    """Whether a cancellation of *task* is already on its way (Python 3.10)."""
    waiter = getattr(task, "_fut_waiter", None)
    return bool(getattr(task, "_must_cancel", False)) or (
        waiter is not None and waiter.cancelled()
    )


def cancel_for(task: asyncio.Task[object], reason: str) -> bool:
    """Cancel *task* for *reason* (the SDK's own); False if it cannot be told apart.

    On Python 3.10 a cancellation already pending (the caller's) is left
    alone: the SDK's would overwrite its message.
    """
    if task.done() or (not _COUNTS and _pending(task)):
        return False
    task.cancel(reason)
    return True


def ours(
    task: asyncio.Task[object], error: asyncio.CancelledError, reason: str
) -> bool:
    """Whether *error* is the SDK's own cancellation for *reason* alone.

    When it is, it is consumed (``uncancel``) and the caller may raise
    something else instead; when the caller also cancelled, it is not.
    """
    if _COUNTS:
        task.uncancel()
        return not task.cancelling()
    return error.args[:1] == (reason,)  # pragma: no cover - Python 3.10


if sys.version_info >= (3, 11):
    from asyncio import timeout_at
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def timeout_at(when: float) -> AsyncIterator[None]:
        """`asyncio.timeout_at` for Python 3.10 (no cancellation counting)."""
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always inside a task
        loop = asyncio.get_running_loop()
        fired: list[bool] = []

        def expire() -> None:
            if cancel_for(task, _EXPIRED):
                fired.append(True)

        handle = loop.call_at(when, expire)
        try:
            yield
        except asyncio.CancelledError as error:
            if fired and error.args[:1] == (_EXPIRED,):
                raise asyncio.TimeoutError from None
            raise
        else:
            if fired:  # the body ended in the very turn the deadline fired
                with contextlib.suppress(AttributeError):
                    task._must_cancel = False  # type: ignore[attr-defined]
        finally:
            handle.cancel()

    _EXPIRED = "decisiontelecom_viber: deadline"
