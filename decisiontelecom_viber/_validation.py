"""Field rules for messages, as attrs converters and validators.

The limits come from DecisionTelecom's documentation (see docs/sending.md for
the table). Only rules the documentation states are enforced: the server
stays the authority on everything else. Every failure is a `ValidationError`
naming the field, and no error message ever contains the value itself (phone
numbers and texts must not leak into logs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ._enums import MessageType, SourceType
from ._errors import ValidationError


__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENDED",
    "MAX_ADDRESS_CHARS",
    "MAX_BUTTON_CAPTION_CHARS",
    "MAX_SMS_GSM7_SEPTETS",
    "MAX_SMS_UCS2_UNITS",
    "MAX_TEXT_CHARS",
    "MAX_VALIDITY_PERIOD",
    "MIN_VALIDITY_PERIOD",
    "check_http_url",
    "check_image_url",
    "check_int_range",
    "check_phone_number",
    "check_text",
    "sms_length",
    "to_int_enum",
    "to_phone_number",
]

MAX_ADDRESS_CHARS = 20
# A receiver: an E.164 number without "+" (at most 15 digits).
MIN_PHONE_DIGITS = 7
MAX_PHONE_DIGITS = 15
MAX_TEXT_CHARS = 1000
MAX_BUTTON_CAPTION_CHARS = 30
MIN_VALIDITY_PERIOD = 40
MAX_VALIDITY_PERIOD = 21600
MAX_SMS_GSM7_SEPTETS = 160
MAX_SMS_UCS2_UNITS = 70
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# GSM 03.38 default alphabet (without the escape character) and the extension
# table, whose characters take two septets each.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

_E = TypeVar("_E", MessageType, SourceType)


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_encodable(field: str, value: str) -> None:
    # A lone surrogate (half an emoji cut by slicing, say) has no UTF-8
    # form: no request body could carry it.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(field, "must not contain lone surrogates") from None


def check_text(
    field: str, value: object, *, max_chars: int, required: bool = True
) -> None:
    """Check that *value* is a non-empty string of at most *max_chars*."""
    if value is None:
        if required:
            raise ValidationError(field, "is required")
        return
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {_type_name(value)}")
    _check_encodable(field, value)
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > max_chars:
        raise ValidationError(
            field,
            f"must be at most {max_chars} characters (got {len(value)})",
        )


def check_http_url(field: str, value: object) -> str:
    """Check that *value* is an absolute http(s) URL; return its path."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {_type_name(value)}")
    _check_encodable(field, value)
    if any(ch.isspace() for ch in value):
        raise ValidationError(field, "must be a URL without spaces")
    try:
        parts = urlsplit(value)
        # Accessing .port validates it; a bad port raises ValueError.
        _ = parts.port
    except ValueError:
        raise ValidationError(field, "must be a valid http(s) URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, "must be an absolute http:// or https:// URL")
    return parts.path


def check_image_url(field: str, value: object) -> None:
    """Check an image URL: http(s), path ending in .jpg, .jpeg or .png."""
    path = check_http_url(field, value)
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        raise ValidationError(
            field, "must point to a .jpg, .jpeg or .png image (any case)"
        )


def sms_length(text: str) -> tuple[int, int]:
    """Return (length, limit) of *text* as one SMS.

    GSM-7 texts count septets (extension characters such as ``€`` or ``{``
    take two) against 160; any other text is UCS-2 and counts UTF-16 code
    units (an emoji takes two) against 70.
    """
    septets = 0
    for ch in text:
        if ch in GSM7_BASIC:
            septets += 1
        elif ch in GSM7_EXTENDED:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return units, MAX_SMS_UCS2_UNITS
    return septets, MAX_SMS_GSM7_SEPTETS


def to_int_enum(field: str, enum_cls: type[_E]) -> Callable[[Any], _E]:
    """Build a converter from an integer (or enum member) to *enum_cls*."""

    def convert(value: Any) -> _E:
        if isinstance(value, enum_cls):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(
                field, f"must be an integer code, not {_type_name(value)}"
            )
        try:
            return enum_cls(value)
        except ValueError:
            codes = ", ".join(f"{int(m)} ({m.name})" for m in enum_cls)
            raise ValidationError(field, f"must be one of {codes}") from None

    return convert


def to_phone_number(field: str) -> Callable[[Any], Any]:
    """Build a converter accepting a phone number as str or non-negative int."""

    def convert(value: Any) -> Any:
        # Phone numbers given as numbers (as the API documentation shows them)
        # become strings, which is what every vendor SDK sends.
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ValidationError(field, "must not be negative")
            # Checked before str(): past Python's digit limit str() raises.
            if value >= 10**MAX_ADDRESS_CHARS:
                raise ValidationError(
                    field, f"must be at most {MAX_ADDRESS_CHARS} characters"
                )
            return str(value)
        return value

    return convert


def check_phone_number(field: str, value: object) -> None:
    """Check an international phone number without "+": 7 to 15 ASCII digits.

    E.164 numbers have at most 15 digits; fewer than 7 is no country's
    subscriber number. The message never includes the number (it is
    personal data, and error messages end up in logs).
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {_type_name(value)}")
    if not value:
        raise ValidationError(field, "is required")
    if not (value.isascii() and value.isdigit()):
        what = "a '+'" if value.startswith("+") else "other characters"
        raise ValidationError(
            field,
            f"must be digits only (international format without '+'; it has {what})",
        )
    if not MIN_PHONE_DIGITS <= len(value) <= MAX_PHONE_DIGITS:
        raise ValidationError(
            field,
            f"must have {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits "
            f"(it has {len(value)})",
        )


def check_int_range(field: str, value: object, low: int, high: int) -> None:
    """Check that *value* is an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an integer, not {_type_name(value)}")
    if not low <= value <= high:
        raise ValidationError(field, f"must be between {low} and {high}")
