"""Request validation as the documentation describes it, lenient as the API is.

The vendor SDKs send ``null`` or ``""`` for unset optional fields, ``0`` for
an unset ``validity_period``, ``destination_addr`` as a string (the docs show
a number) and, in Java, ``message_type`` and ``source_type`` as numeric
strings. The real API evidently accepts all of that, so the sandbox does too.
A refused request names the wire field, as the API does:
``Invalid Parameter: <field>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import ValidationError
from .._validation import check_http_url, check_image_url, sms_length


__all__ = ["SandboxValidationError", "normalise_send", "parse_message_id"]

KNOWN_TYPES = frozenset({106, 108, 206, 208, 222, 225, 301, 304})
TEXT_TYPES = frozenset({106, 108, 206, 208, 225, 301, 304})
IMAGE_TYPES = frozenset({108, 208})
OPTIONAL_FIELDS = (
    "text",
    "image",
    "button_caption",
    "button_action",
    "callback_url",
    "validity_period",
    "text_sms",
    "file_url",
)


class SandboxValidationError(Exception):
    """A request field the sandbox refuses; ``field`` is its wire name."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _string(payload: Mapping[str, Any], field: str, max_chars: int) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise SandboxValidationError(field)
    return value


def _url(payload: Mapping[str, Any], field: str, *, image: bool = False) -> None:
    try:
        (check_image_url if image else check_http_url)(field, payload.get(field))
    except ValidationError:
        raise SandboxValidationError(field) from None


def normalise_send(body: Any) -> dict[str, Any]:
    """Validate a ``send-viber`` body; return it with unset fields removed.

    Raises:
        SandboxValidationError: A field is missing or invalid.
    """
    if not isinstance(body, Mapping):
        raise SandboxValidationError("source_addr")
    payload = {
        key: value
        for key, value in body.items()
        if not (key in OPTIONAL_FIELDS and value in (None, "", 0))
    }
    _string(payload, "source_addr", 20)
    receiver = payload.get("destination_addr")
    if isinstance(receiver, int) and not isinstance(receiver, bool):
        receiver = str(receiver)
    if not isinstance(receiver, str) or not receiver.isdigit() or len(receiver) > 20:
        raise SandboxValidationError("destination_addr")
    payload["destination_addr"] = receiver
    message_type = _int(payload.get("message_type"))
    if message_type not in KNOWN_TYPES:
        raise SandboxValidationError("message_type")
    payload["message_type"] = message_type
    source_type = _int(payload.get("source_type"))
    if source_type not in (1, 2):
        raise SandboxValidationError("source_type")
    payload["source_type"] = source_type
    if message_type in TEXT_TYPES or "text" in payload:
        _string(payload, "text", 1000)
    if message_type in IMAGE_TYPES:
        _url(payload, "image", image=True)
        _string(payload, "button_caption", 30)
        _url(payload, "button_action")
    if message_type == 222:
        _url(payload, "file_url")
    if "callback_url" in payload:
        _url(payload, "callback_url")
    if "validity_period" in payload:
        ttl = _int(payload["validity_period"])
        if ttl is None or not 40 <= ttl <= 21600:
            raise SandboxValidationError("validity_period")
        payload["validity_period"] = ttl
    if "text_sms" in payload:
        text_sms = payload["text_sms"]
        if source_type != 2 or not isinstance(text_sms, str):
            raise SandboxValidationError("text_sms")
        length, limit = sms_length(text_sms)
        if length > limit:
            raise SandboxValidationError("text_sms")
    return payload


def parse_message_id(body: Any) -> int:
    """The ``message_id`` of a ``receive-viber`` body.

    Raises:
        SandboxValidationError: It is missing or not an integer.
    """
    message_id = _int(body.get("message_id")) if isinstance(body, Mapping) else None
    if message_id is None:
        raise SandboxValidationError("message_id")
    return message_id
