"""Callbacks from DecisionTelecom: status changes and 2Way user replies.

Pure parsing, no I/O and no web framework: `parse_callback` turns a request
body into a `StatusCallback` or an `IncomingMessage`, and raises only
`CallbackError` for anything it cannot use, so a receiver can answer 400
instead of crashing. `CallbackReceiver` (in `_receiver`) serves it over ASGI.

What is known of the shapes (docs/api-facts §5):

* A 2Way reply (message types 206/208) is documented::

      {"message_token": 44444444444444, "phone_number": "972512222222",
       "time": 2121212121,
       "message": {"text": "...", "tracking_data": "tracking_id:100035"}}

* The status callback is not documented. It is taken to carry what the
  status lookup returns: ``message_id`` and ``status``, plus
  ``sms_message_id`` and ``sms_message_status`` for Viber + SMS.

Parsing is tolerant where the API is vague (unknown keys, IDs as numeric
strings, unknown status codes) and strict where a value cannot be used
(a list where a phone number belongs, a boolean where an ID belongs).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn, TypeAlias

import attrs

from ._enums import MessageStatus, SmsStatus
from ._errors import CallbackError
from ._models import MessageReceipt


__all__ = [
    "DEFAULT_MAX_CALLBACK_BYTES",
    "CallbackEvent",
    "IncomingMessage",
    "StatusCallback",
    "parse_callback",
]

DEFAULT_MAX_CALLBACK_BYTES = 64 * 1024

# The documented payload is two levels deep; anything far deeper is not a
# callback, and capping the depth here means nothing downstream (the
# receiver's fingerprint, a user's json.dumps) can hit the recursion limit.
_MAX_DEPTH = 32
# IDs are 64-bit on the wire (Go, C# and Java SDKs use int64).
_MAX_ID = 2**63 - 1
# Integral floats are exact only up to 2**53.
_MAX_EXACT_FLOAT = 2**53
# ASCII digits only: str.isdigit() also accepts "²", which int() refuses,
# and a 19-digit cap keeps int() far from Python's digit limit.
_ID_STRING = re.compile(r"[0-9]{1,19}")
_TIME_STRING = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,9})?")
_TRACKING = re.compile(r"\s*tracking_id\s*:\s*([0-9]{1,19})\s*", re.IGNORECASE)
# Above this, a time cannot be Unix seconds (10**11 s is the year 5138) but
# is a plausible Unix time in milliseconds (10**11 ms is March 1973).
_MILLISECONDS_THRESHOLD = 10**11
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@attrs.frozen(kw_only=True)
class StatusCallback:
    """A status change of a sent message, POSTed to its ``callback_url``.

    The shape is not documented by DecisionTelecom; it is taken to match
    the status lookup (``receive-viber``).

    Attributes:
        message_id: The ID `AsyncViberClient.send_message` returned.
        status: Viber delivery status (unknown codes are kept, never fail).
        sms_message_id: ID of the SMS fallback (Viber + SMS), if any.
        sms_message_status: Status of the SMS fallback, if any.
        raw: The payload as received, unknown keys included (not part of
            equality, hashing or the repr).
        reference: The ``ref`` query parameter of the callback URL (see
            `signed_callback_url`), set by `CallbackReceiver`; None when
            parsed by `parse_callback` alone.
        authenticated: Whether the URL's token was checked and matched (a
            `CallbackReceiver` with a secret): only then is *reference*
            evidence.
    """

    message_id: int
    status: MessageStatus
    sms_message_id: int | None = None
    sms_message_status: SmsStatus | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    reference: str | None = None
    authenticated: bool = False

    @property
    def is_final(self) -> bool:
        """Whether neither the Viber status nor the SMS fallback will change."""
        return self.to_receipt().is_final

    def to_receipt(self) -> MessageReceipt:
        """Return the same status as a `MessageReceipt` (what a lookup returns)."""
        return MessageReceipt(
            message_id=self.message_id,
            status=self.status,
            sms_message_id=self.sms_message_id,
            sms_message_status=self.sms_message_status,
        )


@attrs.frozen(kw_only=True)
class IncomingMessage:
    """A user's reply to a 2Way message (types 206 and 208).

    Attributes:
        message_token: Token of the user's reply (64-bit).
        phone_number: The user's phone number, international format without
            ``+``, as sent.
        time: When the user replied, as an aware UTC datetime. The API does
            not document the unit of ``time``: it is read as Unix seconds,
            except that a value above 10**11 (the year 5138 in seconds) is
            read as Unix milliseconds.
        text: The reply text, if any.
        tracking_data: ``message.tracking_data`` as sent, normally
            ``"tracking_id:<message_id>"``.
        reply_to_message_id: The ID of the message the user answers, parsed
            from *tracking_data*; None when that is absent or not of the
            form ``tracking_id:<digits>``.
        raw: The payload as received, unknown keys included (not part of
            equality, hashing or the repr).
        reference: The ``ref`` query parameter of the callback URL (see
            `signed_callback_url`), set by `CallbackReceiver`; None when
            parsed by `parse_callback` alone.
        authenticated: Whether the URL's token was checked and matched (a
            `CallbackReceiver` with a secret): only then is *reference*
            evidence.
    """

    message_token: int
    phone_number: str
    time: datetime
    text: str | None = None
    tracking_data: str | None = None
    reply_to_message_id: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    reference: str | None = None
    authenticated: bool = False


CallbackEvent: TypeAlias = StatusCallback | IncomingMessage
"""What `parse_callback` returns: a `StatusCallback` or an `IncomingMessage`."""


def parse_callback(
    body: bytes | str | Mapping[str, Any],
    *,
    max_bytes: int = DEFAULT_MAX_CALLBACK_BYTES,
) -> CallbackEvent:
    """Parse a callback body into a `StatusCallback` or an `IncomingMessage`.

    A payload with ``message_token`` or a ``message`` object is a user
    reply; one with ``message_id`` and ``status`` is a status change.
    Unknown keys are kept in ``raw``; IDs may be numbers or strings of
    digits; a UTF-8 byte order mark is ignored.

    Args:
        body: The request body (UTF-8 JSON), or a mapping already decoded.
        max_bytes: Largest body accepted, in bytes (default 64 KiB). Not
            applied to a mapping.

    Returns:
        The event.

    Raises:
        CallbackError: The body is too large, not UTF-8, not a JSON object,
            holds NaN or Infinity, is nested too deeply, or lacks a field or
            has one of the wrong type; ``.reason`` names the field. No other
            exception escapes.
    """
    payload = _decode(body, max_bytes)
    _check_depth(payload)
    message = payload.get("message")
    if "message_token" in payload or isinstance(message, Mapping):
        return _incoming(payload)
    if "message_id" in payload and "status" in payload:
        return _status(payload)
    if "message_id" in payload or "status" in payload:
        missing = "status" if "message_id" in payload else "message_id"
        raise CallbackError(f"{missing} is missing")
    raise CallbackError(
        "neither a status callback (message_id, status) nor a user message "
        "(message_token, message)"
    )


def _fail(reason: str) -> NoReturn:
    raise CallbackError(reason)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _reject_constant(name: str) -> NoReturn:
    _fail(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # "1e400" overflows to inf without complaint
        _fail("a number is too large")
    return value


def _decode(body: object, max_bytes: int) -> dict[str, Any]:
    if isinstance(body, Mapping):
        return dict(body)
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        if len(raw) > max_bytes:
            _fail(f"body is larger than {max_bytes} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            _fail("body is not valid UTF-8")
    elif isinstance(body, str):
        # Each character is at least one byte, so the cheap test comes first.
        if len(body) > max_bytes or (
            len(body.encode("utf-8", "surrogatepass")) > max_bytes
        ):
            _fail(f"body is larger than {max_bytes} bytes")
        text = body
    else:
        _fail(f"body must be bytes, str or a mapping, not {type(body).__name__}")
    try:
        payload = json.loads(
            text.removeprefix("\ufeff"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except CallbackError:
        raise
    except RecursionError:
        _fail("body is nested too deeply")
    except ValueError:  # JSONDecodeError, and ints past Python's digit limit
        _fail("body is not valid JSON")
    if not isinstance(payload, dict):
        _fail(f"body must be a JSON object, not {_json_type(payload)}")
    return payload


def _check_depth(payload: Mapping[str, Any]) -> None:
    # Iterative, so that the check itself cannot overflow the stack (and a
    # cyclic mapping passed in by a caller ends here too).
    stack: list[tuple[object, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > _MAX_DEPTH:
            _fail(f"body is nested deeper than {_MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def _int_value(field: str, value: object) -> int:
    """Return *value* as a 64-bit non-negative int, or fail naming *field*."""
    if isinstance(value, bool):
        _fail(f"{field} must be an integer, not boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer() or abs(value) > _MAX_EXACT_FLOAT:
            _fail(f"{field} must be an integer")
        number = int(value)
    elif isinstance(value, str):
        if not _ID_STRING.fullmatch(value.strip()):
            _fail(f"{field} must be an integer or a string of digits")
        number = int(value)
    else:
        _fail(f"{field} must be an integer, not {_json_type(value)}")
    if not 0 <= number <= _MAX_ID:
        _fail(f"{field} must be a non-negative 64-bit integer")
    return number


def _required_int(payload: Mapping[str, Any], field: str) -> int:
    if field not in payload:
        _fail(f"{field} is missing")
    if payload[field] is None:
        _fail(f"{field} must not be null")
    return _int_value(field, payload[field])


def _optional_int(payload: Mapping[str, Any], field: str) -> int | None:
    value = payload.get(field)
    # null, "" and absence all mean "no SMS fallback": which one the API
    # sends before a fallback happens is not documented.
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _int_value(field, value)


def _optional_str(payload: Mapping[str, Any], field: str, name: str) -> str | None:
    value = payload.get(field)
    if value is None or isinstance(value, str):
        return value
    _fail(f"{name} must be a string, not {_json_type(value)}")


def _status(payload: dict[str, Any]) -> StatusCallback:
    sms_status = _optional_int(payload, "sms_message_status")
    return StatusCallback(
        message_id=_required_int(payload, "message_id"),
        status=MessageStatus(_required_int(payload, "status")),
        sms_message_id=_optional_int(payload, "sms_message_id"),
        sms_message_status=None if sms_status is None else SmsStatus(sms_status),
        raw=payload,
    )


def _phone_number(payload: Mapping[str, Any]) -> str:
    if "phone_number" not in payload:
        _fail("phone_number is missing")
    value = payload["phone_number"]
    # The docs send a string; a number is what the send examples use for
    # destination_addr, so it is accepted too.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if not isinstance(value, str):
        _fail(f"phone_number must be a string, not {_json_type(value)}")
    if not value.strip():
        _fail("phone_number is empty")
    return value.strip()


def _time(payload: Mapping[str, Any]) -> datetime:
    if "time" not in payload:
        _fail("time is missing")
    value = payload["time"]
    if isinstance(value, str):
        if not _TIME_STRING.fullmatch(value.strip()):
            _fail("time must be a number or a string of digits")
        value = float(value) if "." in value else int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(f"time must be a number, not {_json_type(value)}")
    # math.isfinite() would overflow on a huge int; only floats can be NaN.
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        _fail("time must be a non-negative finite number")
    try:
        if value > _MILLISECONDS_THRESHOLD:
            return _EPOCH + timedelta(milliseconds=value)
        return _EPOCH + timedelta(seconds=value)
    except OverflowError:
        _fail("time is out of range")


def _reply_to_message_id(tracking_data: str | None) -> int | None:
    """Return the message ID in ``"tracking_id:<digits>"``, else None."""
    if tracking_data is None:
        return None
    match = _TRACKING.fullmatch(tracking_data)
    if match is None:
        return None
    number = int(match.group(1))
    return number if number <= _MAX_ID else None


def _incoming(payload: dict[str, Any]) -> IncomingMessage:
    message_token = _required_int(payload, "message_token")
    phone_number = _phone_number(payload)
    time = _time(payload)
    message = payload.get("message")
    if message is None:
        message = {}
    elif not isinstance(message, Mapping):
        _fail(f"message must be an object, not {_json_type(message)}")
    tracking_data = _optional_str(message, "tracking_data", "message.tracking_data")
    return IncomingMessage(
        message_token=message_token,
        phone_number=phone_number,
        time=time,
        text=_optional_str(message, "text", "message.text"),
        tracking_data=tracking_data,
        reply_to_message_id=_reply_to_message_id(tracking_data),
        raw=payload,
    )
