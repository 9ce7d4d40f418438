"""The records of the send-once guard: what Redis holds per dedupe key, and results.

Data only: `SendOnceGuard` (``_guard``) writes and reads them, the errors
(``_errors``) carry them, and the public package re-exports them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from .._models import ViberMessage
from .._outcomes import SendOutcome, send_outcome


__all__ = ["SendOnceResult", "SendRecord", "SendState"]


class SendState(enum.Enum):
    """Where a guarded send stands."""

    PENDING = "pending"
    """Claimed by an attempt that has not finished (or whose worker died)."""
    SENT = "sent"
    """Accepted by the API; ``message_id`` is set."""
    UNKNOWN = "unknown"
    """May or may not have been sent: reconcile before sending again."""


@attrs.frozen
class SendRecord:
    """What Redis holds for one dedupe key.

    Times are unix times of the Redis server's clock.

    Attributes:
        dedupe_key: The key.
        state: The `SendState`.
        message_id: The message ID, once sent.
        claimed_at: When the key was claimed.
        updated_at: When the record last changed.
        lease_until: Until when the claiming attempt counts as in progress.
        reason: Why the outcome is unknown, if it is.
        written_at: When its request was about to be written (the mark);
            None while the claim only waited (nothing was written).
        reconciled: Settled as sent by a signed status callback.
    """

    dedupe_key: str
    state: SendState
    message_id: int | None
    claimed_at: float
    updated_at: float
    lease_until: float
    reason: str | None = None
    written_at: float | None = None
    reconciled: bool = False

    @property
    def on_the_wire(self) -> bool:
        """Whether a request may have been written (the record is in doubt)."""
        return self.written_at is not None

    @classmethod
    def from_stored(cls, dedupe_key: str, data: Mapping[str, Any]) -> SendRecord:
        """Build a record from the JSON object stored in Redis."""
        message_id = data.get("message_id")
        reason = data.get("reason")
        written_at = data.get("written_at")
        if written_at is None and data.get("phase") != "claimed":
            # Records of older versions have no phase: assume written.
            written_at = data.get("claimed_at")
        return cls(
            dedupe_key=dedupe_key,
            state=SendState(data["state"]),
            message_id=int(message_id) if message_id not in (None, "") else None,
            claimed_at=float(data.get("claimed_at") or 0.0),
            updated_at=float(data.get("updated_at") or 0.0),
            lease_until=float(data.get("lease_until") or 0.0),
            reason=str(reason) if reason else None,
            written_at=float(written_at) if written_at else None,
            reconciled=bool(data.get("reconciled")),
        )


@attrs.frozen
class SendOnceResult:
    """The result of one item of `SendOnceGuard.send_messages`.

    Attributes:
        index: Position of the item in the input (0-based).
        dedupe_key: The item's dedupe key (None if the item was malformed).
        message: The validated `ViberMessage`, or the item as given when it
            could not be validated.
        message_id: The message ID when sent (now or earlier), else None.
        error: Why the item was not sent now, else None. A
            `PossibleDuplicateError` (an `OutcomeUnknownError`) means an
            earlier attempt may have sent it.
        replayed: The message ID comes from an earlier send with the same key;
            no request was made.
    """

    index: int
    dedupe_key: str | None
    message: ViberMessage | object
    message_id: int | None = None
    error: Exception | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        """Whether the message is sent (now, or by an earlier attempt)."""
        return self.error is None

    @property
    def outcome(self) -> SendOutcome:
        """Sent, failed, or unknown (the message may have been sent)."""
        return send_outcome(self.error)
