"""Message fields from command-line options and file rows (strings) to typed values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from .._enums import MessageType, SourceType
from .._errors import ValidationError
from .._models import ViberMessage


__all__ = ["convert_row", "message_from_options", "message_options"]

F = TypeVar("F", bound=Callable[..., Any])

# (field, metavar, help) in the order the options are listed.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("sender", "NAME", "Sender name assigned by your account manager."),
    ("receiver", "PHONE", "Recipient phone number, international, without '+'."),
    ("text", "TEXT", "Message text (up to 1000 characters)."),
    (
        "message_type",
        "TYPE",
        "106/text, 108/text_image_button, 206/text_2way, 208/text_image_button_2way, "
        "222/file, 301, 304 or any code; default: 108 with an image, 222 with a "
        "file, else 106.",
    ),
    (
        "source_type",
        "TYPE",
        "transactional (2) or promotional (1); default: promotional with an "
        "image, else transactional.",
    ),
    ("image_url", "URL", "Image (.jpg/.jpeg/.png) for types 108/208."),
    ("button_caption", "TEXT", "Button caption for types 108/208."),
    ("button_action", "URL", "URL the button opens."),
    ("callback_url", "URL", "URL receiving status callbacks and 2Way replies."),
    ("validity_period", "SECONDS", "Time to live, 40 to 21600 seconds."),
    ("text_sms", "TEXT", "SMS fallback text (transactional messages only)."),
    ("file_url", "URL", "File to send with type 222."),
)
_INT_FIELDS = {"validity_period"}


def parse_message_type(value: str) -> int:
    """A message type from a code (``"106"``) or a name (``"text_2way"``)."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        return int(MessageType[text.upper().replace("-", "_")])
    except KeyError:
        names = ", ".join(m.name.lower() for m in MessageType)
        raise ValidationError(
            "message_type", f"must be a type code or one of {names}"
        ) from None


def parse_source_type(value: str) -> int:
    """A source type from a code (``"2"``) or a name (``"transactional"``)."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        return int(SourceType[text.upper()])
    except KeyError:
        raise ValidationError(
            "source_type", "must be transactional, promotional, 1 or 2"
        ) from None


def _int(field: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValidationError(field, "must be a whole number") from None


def convert_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a row of strings (a CSV line, options) into message fields.

    Empty values count as absent; numbers may be given as text; message and
    source types also by name; unset types get the defaults of the command
    line (see `FIELDS`). Unknown keys are kept, for `ViberMessage.from_dict`
    to name them.
    """
    fields: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, str):
            if key == "message_type":
                value = parse_message_type(value)
            elif key == "source_type":
                value = parse_source_type(value)
            elif key in _INT_FIELDS:
                value = _int(key, value)
        fields[key] = value
    if "message_type" not in fields:
        if "image_url" in fields:
            fields["message_type"] = MessageType.TEXT_IMAGE_BUTTON
        elif "file_url" in fields:
            fields["message_type"] = MessageType.FILE
        else:
            fields["message_type"] = MessageType.TEXT
    if "source_type" not in fields:
        promotional = "image_url" in fields or "file_url" in fields
        fields["source_type"] = (
            SourceType.PROMOTIONAL if promotional else SourceType.TRANSACTIONAL
        )
    return fields


def message_from_options(options: Mapping[str, Any]) -> ViberMessage:
    """A validated message from the message options of a command."""
    return ViberMessage.from_dict(convert_row(options))


def message_options(*, required: bool) -> Callable[[F], F]:
    """One option per message field (``--sender``, ``--image-url``...).

    With *required*, ``--sender`` and ``--receiver`` must be given; otherwise
    (``bulk``) every option is a value shared by rows that lack the column.
    """

    def decorate(function: F) -> F:
        for field, metavar, help_text in reversed(FIELDS):
            function = click.option(
                "--" + field.replace("_", "-"),
                field,
                metavar=metavar,
                required=required and field in ("sender", "receiver"),
                help=help_text,
            )(function)
        return function

    return decorate
