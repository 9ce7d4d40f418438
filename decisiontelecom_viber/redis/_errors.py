"""The exceptions of the Redis integration.

```
ViberError
├── RedisUnavailableError       Redis could not be reached; nothing was sent
└── OutcomeUnknownError
    └── PossibleDuplicateError      not sent again: an earlier attempt may have sent it
        ├── SendInProgressError         the earlier attempt may still be sending
        └── SendUnresolvedError         the earlier attempt's outcome is unknown
```

`PossibleDuplicateError` is an `OutcomeUnknownError`: for the caller, a
message guarded this way "may or may not have been sent", exactly as after a
read timeout, and bulk results count it as ``unknown``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import OutcomeUnknownError, ViberError


if TYPE_CHECKING:
    from ._guard import SendRecord


__all__ = [
    "PossibleDuplicateError",
    "RedisUnavailableError",
    "SendInProgressError",
    "SendUnresolvedError",
]


class RedisUnavailableError(ViberError):
    """Redis could not be reached (or refused the command); nothing was sent.

    Raised before any request: by `RedisLimiter` when it fails closed
    (``on_unavailable="raise"``), and always by `SendOnceGuard`, which cannot
    promise a single send without its record.

    Attributes:
        operation: What was being done (``"rate limit"``, ``"claim"``...).
    """

    def __init__(self, operation: str, cause: BaseException) -> None:
        super().__init__(
            f"Redis is unavailable ({operation}): {type(cause).__name__}: {cause}; "
            "nothing was sent"
        )
        self.operation = operation
        self.cause_type = type(cause).__name__


class PossibleDuplicateError(OutcomeUnknownError):
    """Not sent: an earlier attempt with the same dedupe key may have sent it.

    Attributes:
        dedupe_key: The key given to `SendOnceGuard`.
        record: The `SendRecord` Redis holds for it.
    """

    def __init__(self, dedupe_key: str, record: SendRecord, reason: str) -> None:
        # Worded for what the guard did, not for a request.
        super().__init__(
            reason, message=f"dedupe key {dedupe_key!r}: {reason}; not sent again"
        )
        self.dedupe_key = dedupe_key
        self.record = record


class SendInProgressError(PossibleDuplicateError):
    """Another attempt holds the dedupe key and may still be sending.

    Try again later: once that attempt ends, the key holds its message ID
    (or is free again if it failed). If its worker died, the record becomes
    unresolved when its lease runs out (`SendUnresolvedError`).
    """

    def __init__(self, dedupe_key: str, record: SendRecord) -> None:
        super().__init__(
            dedupe_key,
            record,
            "another attempt is sending this message "
            f"(lease until {record.lease_until:.3f})",
        )


class SendUnresolvedError(PossibleDuplicateError):
    """An earlier attempt's outcome is unknown: reconcile before sending again.

    The earlier send timed out or lost its answer, or its worker stopped
    mid-send (its lease ran out). Check whether the recipient got the
    message, then call `SendOnceGuard.resolve` with the message ID, or
    `SendOnceGuard.forget` to allow a new send.
    """

    def __init__(self, dedupe_key: str, record: SendRecord) -> None:
        reason = record.reason or "the earlier attempt's outcome is unknown"
        super().__init__(dedupe_key, record, reason)
