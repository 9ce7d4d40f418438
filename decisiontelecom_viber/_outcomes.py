"""The one rule: what a failure means for a message, and whether to retry it.

A send is *failed* only when the SDK can show that no byte of its request
left the process (invalid input, a refused or timed-out connect, a deadline,
a limiter refusal or a closed client before writing) or the API itself
refused it (an error body, 400/401/402/403, 429). Everything else — a read
timeout, a broken connection, a gateway's 5xx, an answer the SDK does not
understand, an exception it did not expect — may have reached the API and is
*unknown*. Only what certainly was not processed is retried: 429, the API's
500/502/503, and connect failures.

The HTTP side of the rule (which status becomes which error) is in
`_wire.error_class`; the transport side (which exception proves "never
sent") is in `_transport.never_sent`; this module turns the resulting error
into the verdict. All three are pure and table-tested.
"""

from __future__ import annotations

import enum
from typing import Protocol

from ._errors import (
    APIConnectionError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    ViberError,
)


__all__ = [
    "SendOutcome",
    "Verdict",
    "call_outcome",
    "outcome_label",
    "send_outcome",
    "should_retry",
    "verdict",
]


class Verdict(enum.Enum):
    """What a failed attempt says about its request."""

    RETRY_SAFE = "retry-safe"
    """Certainly not processed, and worth trying again (429, 500/502/503,
    a failed connect)."""
    FAILED = "failed"
    """Certainly not processed, or refused for good: trying again cannot help."""
    UNKNOWN = "unknown"
    """May have been processed."""


class SendOutcome(enum.Enum):
    """What became of one message."""

    SENT = "sent"
    """The API accepted the message; ``message_id`` is set."""
    FAILED = "failed"
    """Definitely not sent: invalid, never written, or refused by the API."""
    UNKNOWN = "unknown"
    """May or may not have been sent (`OutcomeUnknownError`); do not resend blindly."""

    @classmethod
    def of(cls, error: BaseException | None) -> SendOutcome:
        """The outcome of a send that ended with *error* (None: it succeeded)."""
        return send_outcome(error)


def verdict(error: BaseException) -> Verdict:
    """Classify a failed attempt by its exception (the SDK's, or a foreign one).

    An exception the SDK did not raise proves nothing about the request, so
    it is `Verdict.UNKNOWN`.
    """
    if isinstance(error, OutcomeUnknownError):  # before ServerError: 504 is both
        return Verdict.UNKNOWN
    if isinstance(error, (RateLimitError, ServerError, APIConnectionError)):
        return Verdict.RETRY_SAFE
    if isinstance(error, ViberError):
        return Verdict.FAILED
    return Verdict.UNKNOWN


def send_outcome(error: BaseException | None) -> SendOutcome:
    """Sent (no error), failed (provably not sent or refused), or unknown."""
    if error is None:
        return SendOutcome.SENT
    if verdict(error) is Verdict.UNKNOWN:
        return SendOutcome.UNKNOWN
    return SendOutcome.FAILED


class _Settled(Protocol):
    """A result that says how its send ended (`SendResult`, `SendOnceResult`)."""

    @property
    def outcome(self) -> SendOutcome: ...


def outcome_label(result: _Settled) -> str:
    """The bulk summary's label for a send's result: its outcome's value."""
    return result.outcome.value


def call_outcome(
    idempotent: bool, error: BaseException | None, *, in_doubt: bool
) -> str:
    """What a call's metrics and span say came of it.

    A send is ``"sent"``, ``"failed"`` or ``"unknown"`` as `send_outcome`
    says; one interrupted (cancelled, Ctrl-C) is unknown when a request of it
    may have reached the API (*in_doubt*). A status lookup is ``"ok"`` or
    ``"failed"``.
    """
    if idempotent:
        return "ok" if error is None else "failed"
    if error is not None and not isinstance(error, Exception):
        return "unknown" if in_doubt else "failed"
    return send_outcome(error).value


def should_retry(
    error: BaseException, *, idempotent: bool, retry_unknown_outcome: bool
) -> bool:
    """Decide whether a failed attempt may be retried.

    Args:
        error: The exception the attempt raised.
        idempotent: Whether repeating the request is harmless (status lookups).
        retry_unknown_outcome: The policy's opt-in for ambiguous sends.
    """
    if not isinstance(error, ViberError):
        return False  # a bug, or the caller's own exception: never retried
    judged = verdict(error)
    if judged is Verdict.UNKNOWN:
        return idempotent or retry_unknown_outcome
    return judged is Verdict.RETRY_SAFE
