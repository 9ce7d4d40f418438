"""Request validation as the documentation describes it, lenient as the API is.

The sandbox's own rules, written from the API's documentation (the spec in
``shared/spec/api-facts.md``), never the SDK's validators: a validation bug
of the SDK must show up against the sandbox, not be copied into it.

The vendor SDKs send ``null`` or ``""`` for unset optional fields, ``0`` for
an unset ``validity_period``, ``destination_addr`` as a string (the docs show
a number) and, in Java, ``message_type`` and ``source_type`` as numeric
strings. The real API evidently accepts all of that, so the sandbox does too.
Where the documentation is silent or vague, it accepts and says so in the
request's ``notes`` (``/__sandbox/requests``) rather than invent a refusal.
A refused request names the wire field, as the API does:
``Invalid Parameter: <field>``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any


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
    if isinstance(value, str):
        digits = value.strip()
        # ASCII digits only ("²" is a digit to str.isdigit, not to int), and
        # not past int()'s limit on digit strings.
        if digits.isascii() and digits.isdigit() and len(digits) <= 20:
            return int(digits)
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _string(payload: Mapping[str, Any], field: str, max_chars: int) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise SandboxValidationError(field)
    return value


def _url(payload: Mapping[str, Any], field: str) -> str:
    """An absolute http(s) URL: the documentation says "a valid URL"."""
    value = payload.get(field)
    if not isinstance(value, str) or value != value.strip() or not value.isprintable():
        raise SandboxValidationError(field)
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad or out-of-range port
    except ValueError:
        raise SandboxValidationError(field) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SandboxValidationError(field)
    return parts.path


# GSM 03.38: the basic alphabet (one septet each) and its extension table
# (an escape and a septet: two each).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def _sms_fits(text: str) -> bool:
    """One SMS, as documented: 160 GSM-7 septets, else 70 UTF-16 units (UCS-2)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        return sum(2 if c in _GSM_EXTENDED else 1 for c in text) <= 160
    return len(text.encode("utf-16-le")) // 2 <= 70


def normalise_send(body: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Validate a ``send-viber`` body: it with unset fields removed, and notes.

    Raises:
        SandboxValidationError: A field is missing or invalid.
    """
    notes: list[str] = []
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
    if (
        not isinstance(receiver, str)
        or not (receiver.isascii() and receiver.isdigit())
        or len(receiver) > 20
    ):
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
        image = _url(payload, "image").lower()
        if not image.endswith((".jpg", ".jpeg", ".png")):
            notes.append(
                "image: the API takes jpg or png images (the sandbox cannot "
                "see this one's type from its URL)"
            )
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
        if not isinstance(text_sms, str) or not _sms_fits(text_sms):
            raise SandboxValidationError("text_sms")
        if source_type != 2:
            notes.append(
                "text_sms: the SMS fallback applies to transactional messages "
                "only (no fallback for this promotional one)"
            )
    return payload, tuple(notes)


def parse_message_id(body: Any) -> int:
    """The ``message_id`` of a ``receive-viber`` body.

    Raises:
        SandboxValidationError: It is missing or not an integer.
    """
    message_id = _int(body.get("message_id")) if isinstance(body, Mapping) else None
    if message_id is None:
        raise SandboxValidationError("message_id")
    return message_id
