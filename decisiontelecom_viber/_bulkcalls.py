"""What the client's bulk entry points run: one stream, one call per item.

`AsyncViberClient.send_messages` and `AsyncViberClient.get_message_statuses`
check their arguments and hand over to the functions here, which build the
`ResultStream` and say how one item becomes one result. They live apart
from the client because an item's rules are the stream's, not the client's:
every failure is the item's result (never the stream's end), and a send's
``on_write``/``on_refused`` callbacks become the item's `before_write` hook.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any

from ._bulk import ProgressCallback, ResultStream
from ._clientparts import check_message_id
from ._clock import Clock
from ._context import before_write
from ._errors import ConfigurationError
from ._limits import Priority
from ._models import MessageReceipt, SendResult, StatusResult
from ._options import coerce_message
from ._outcomes import outcome_label
from ._pipeline import Operation, Pipeline
from ._signing import CallbackSigner
from ._telemetry import type_label
from ._wire import encode_message


__all__ = ["send_stream", "status_stream"]


def send_stream(
    messages: Iterable[Any] | AsyncIterable[Any],
    pipeline: Pipeline,
    operation: Operation[int],
    callback: CallbackSigner | None,
    *,
    clock: Clock,
    concurrency: int,
    ordered: bool,
    on_progress: ProgressCallback | None,
    progress_interval: float,
    priority: Priority,
    on_write: Callable[[int], None] | None,
    on_refused: Callable[[int], None] | None,
) -> ResultStream[SendResult]:
    """The stream of `AsyncViberClient.send_messages` (its arguments checked).

    Args:
        messages: The messages to send.
        pipeline: The client's pipeline.
        operation: The send operation.
        callback: Signs each message's callback URL (None: left alone).
        clock: The client's clock.
        concurrency: Requests in flight at most.
        ordered: Yield results in input order.
        on_progress: Called with the summary now and then.
        progress_interval: Seconds between progress calls.
        priority: The requests' lane at the rate limiter (checked).
        on_write: Called with an item's index before its first write.
        on_refused: Called with the index when that write was refused.

    Raises:
        ConfigurationError: *on_write* or *on_refused* is not callable.
    """
    for name, hook in (("on_write", on_write), ("on_refused", on_refused)):
        if hook is not None and not callable(hook):
            raise ConfigurationError(f"{name} must be callable")
    return ResultStream(
        messages,
        functools.partial(
            _send_item,
            pipeline,
            operation,
            callback,
            priority=priority,
            on_write=on_write,
            on_refused=on_refused,
        ),
        concurrency=concurrency,
        ordered=ordered,
        outcome=outcome_label,
        clock=clock,
        on_progress=on_progress,
        progress_interval=progress_interval,
        name="messages",
    )


def status_stream(
    message_ids: Iterable[Any] | AsyncIterable[Any],
    lookup: Callable[..., Awaitable[MessageReceipt]],
    *,
    clock: Clock,
    concurrency: int,
    ordered: bool,
    on_progress: ProgressCallback | None,
    progress_interval: float,
    priority: Priority,
) -> ResultStream[StatusResult]:
    """The stream of `AsyncViberClient.get_message_statuses`.

    Args:
        message_ids: The IDs to look up.
        lookup: The client's ``get_message_status``.
        clock: The client's clock.
        concurrency: Lookups in flight at most.
        ordered: Yield results in input order.
        on_progress: Called with the summary now and then.
        progress_interval: Seconds between progress calls.
        priority: The lookups' lane at the rate limiter (checked).
    """
    return ResultStream(
        message_ids,
        functools.partial(_status_item, lookup, priority=priority),
        concurrency=concurrency,
        ordered=ordered,
        outcome=_status_outcome,
        clock=clock,
        on_progress=on_progress,
        progress_interval=progress_interval,
        name="message_ids",
    )


async def _send_item(
    pipeline: Pipeline,
    operation: Operation[int],
    callback: CallbackSigner | None,
    index: int,
    item: object,
    *,
    priority: Priority,
    on_write: Callable[[int], None] | None = None,
    on_refused: Callable[[int], None] | None = None,
) -> SendResult:
    try:
        message = coerce_message(item)
        if callback is not None:
            message = callback.attach(message)
    except Exception as error:  # noqa: BLE001 - one result per item, always
        return SendResult(index, item, error=error)
    token = (
        None
        if on_write is None
        else before_write.set(_OnWrite(on_write, on_refused, index))
    )
    try:
        message_id = await pipeline.run(
            operation,
            encode_message(message),
            priority,
            message_type=type_label(message.message_type),
        )
    except Exception as error:  # noqa: BLE001 - one result per item, always
        return SendResult(index, message, error=error)
    finally:
        if token is not None:
            before_write.reset(token)
    return SendResult(index, message, message_id=message_id)


async def _status_item(
    lookup: Callable[..., Awaitable[MessageReceipt]],
    index: int,
    item: object,
    *,
    priority: Priority,
) -> StatusResult:
    try:
        receipt = await lookup(check_message_id(item), priority=priority)
    except Exception as error:  # noqa: BLE001 - one result per item, always
        return StatusResult(index, item, error=error)
    return StatusResult(index, item, receipt=receipt)


class _OnWrite:
    """The `before_write` hook of one bulk item: *on_write* once per write.

    Called again after *on_refused* (the attempt was refused for sure, a
    retry waits).
    """

    __slots__ = ("_called", "_index", "_on_refused", "_on_write")

    def __init__(
        self,
        on_write: Callable[[int], None],
        on_refused: Callable[[int], None] | None,
        index: int,
    ) -> None:
        self._on_write = on_write
        self._on_refused = on_refused
        self._index = index
        self._called = False

    def __call__(self) -> None:
        if not self._called:
            self._on_write(self._index)
            self._called = True  # (after: a failed call refuses the retry too)

    def not_written(self) -> None:
        if self._on_refused is not None and self._called:
            self._on_refused(self._index)
            self._called = False


def _status_outcome(result: StatusResult) -> str:
    return "ok" if result.ok else "failed"
