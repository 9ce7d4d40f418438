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

`REDIS_ERRORS` are what redis-py raises when Redis cannot serve a call; the
Redis boundary (``_scripts``) is the one place that catches them.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from .._errors import OutcomeUnknownError, ViberError
from ._records import SendRecord


__all__ = [
    "REDIS_ERRORS",
    "PossibleDuplicateError",
    "RedisUnavailableError",
    "SendInProgressError",
    "SendUnresolvedError",
    "redis_cause",
    "unavailable_again",
]

#: Errors that mean "Redis cannot serve us now": unreachable, timing out,
#: loading, read-only after a failover, out of memory... Only the Redis
#: boundary (``_scripts``) catches them, and turns them into
#: `RedisUnavailableError`.
REDIS_ERRORS = (RedisError, OSError)


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


def redis_cause(error: RedisUnavailableError) -> BaseException:
    """The error redis-py raised behind *error*, for logs that name it."""
    return error.__cause__ if error.__cause__ is not None else error


def unavailable_again(error: RedisUnavailableError) -> RedisUnavailableError:
    """A fresh copy of *error* (same operation and cause) for another waiter.

    One exception per waiter: each is raised in its own task, and a shared
    instance would collect every task's traceback.
    """
    cause = redis_cause(error)
    copy = RedisUnavailableError(error.operation, cause)
    copy.__cause__ = cause
    return copy


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
