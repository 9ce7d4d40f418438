"""Integer codes of the API as open enums.

The server may send codes this SDK has never heard of (new message types,
new statuses). ``MessageType``, ``MessageStatus`` and ``SmsStatus`` therefore
never raise for an unknown integer: ``MessageStatus(42)`` is a member named
``UNRECOGNISED_42`` whose value is 42, which compares equal to 42 and is
never final. ``SourceType`` is closed: the API documents exactly two.
"""

from __future__ import annotations

import enum
from typing import Any


__all__ = ["MessageStatus", "MessageType", "SmsStatus", "SourceType"]


class _OpenIntEnum(enum.IntEnum):
    """An ``IntEnum`` that turns unknown integers into pseudo-members."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            member = int.__new__(cls, value)
            member._name_ = f"UNRECOGNISED_{value}"
            member._value_ = value
            return member
        return None

    @property
    def is_recognised(self) -> bool:
        """Whether this code is one the SDK knows by name."""
        return self._name_ in type(self).__members__


class MessageType(_OpenIntEnum):
    """Viber message type codes (``message_type`` on the wire).

    The four classic types are documented on every DecisionTelecom page and
    known to every vendor SDK. ``FILE`` and the two template types appear only
    in the newest documentation examples; their field rules are enforced as
    those examples show them. Any other code is passed through unchanged.
    """

    TEXT = 106
    """Text only. Convenient for transactional messages."""
    TEXT_IMAGE_BUTTON = 108
    """Text, image and button. Convenient for promotional messages."""
    TEXT_2WAY = 206
    """Text only; the user can reply (2Way)."""
    TEXT_IMAGE_BUTTON_2WAY = 208
    """Text, image and button; the user can reply (2Way)."""
    FILE = 222
    """A file (for example a PDF) given by ``file_url``."""
    TEMPLATE_PRIMARY_DEVICE = 301
    """Transactional template text, delivered to the primary device only."""
    TEMPLATE_ALL_DEVICES = 304
    """Transactional template text, delivered to all devices."""

    @property
    def has_image_and_button(self) -> bool:
        """Whether the type needs an image, a button caption and an action."""
        return self in _IMAGE_BUTTON_TYPES

    @property
    def is_two_way(self) -> bool:
        """Whether users can reply to messages of this type."""
        return self in _TWO_WAY_TYPES


_IMAGE_BUTTON_TYPES = frozenset(
    {MessageType.TEXT_IMAGE_BUTTON, MessageType.TEXT_IMAGE_BUTTON_2WAY}
)
_TWO_WAY_TYPES = frozenset({MessageType.TEXT_2WAY, MessageType.TEXT_IMAGE_BUTTON_2WAY})


class SourceType(enum.IntEnum):
    """How the message is sent (``source_type`` on the wire)."""

    PROMOTIONAL = 1
    """Promotional: text, picture and button allowed."""
    TRANSACTIONAL = 2
    """Transactional: text; the only kind that may fall back to SMS."""


class MessageStatus(_OpenIntEnum):
    """Status of a Viber message, as ``receive-viber`` and callbacks report it."""

    SENT = 0
    DELIVERED = 1
    ERROR = 2
    REJECTED = 3
    UNDELIVERED = 4
    PENDING = 5
    SEEN = 6
    UNKNOWN = 20
    """The API's own "unknown" status (code 20); it may still change."""

    @property
    def is_final(self) -> bool:
        """Whether the delivery outcome is settled.

        ``DELIVERED`` counts as final even though it may still become
        ``SEEN``: the delivery question is answered. ``SENT``, ``PENDING``,
        ``UNKNOWN`` and unrecognised codes are transient.
        """
        return self in _FINAL_MESSAGE_STATUSES


_FINAL_MESSAGE_STATUSES = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.SEEN,
        MessageStatus.ERROR,
        MessageStatus.REJECTED,
        MessageStatus.UNDELIVERED,
    }
)


class SmsStatus(_OpenIntEnum):
    """Status of the SMS fallback of a Viber + SMS message.

    ``DELIVERED``, ``EXPIRED``, ``UNDELIVERABLE`` and ``ACCEPTED`` are the codes
    the vendor SDKs know. The others follow the SMPP ``message_state``
    numbering, which the known codes match; the API does not document them.
    """

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8

    @property
    def is_final(self) -> bool:
        """Whether the SMS can no longer change status."""
        return self in _FINAL_SMS_STATUSES


_FINAL_SMS_STATUSES = frozenset(
    {
        SmsStatus.DELIVERED,
        SmsStatus.EXPIRED,
        SmsStatus.DELETED,
        SmsStatus.UNDELIVERABLE,
        SmsStatus.REJECTED,
    }
)
