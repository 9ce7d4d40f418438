"""Value types: the message to send, a status receipt, a bulk-send result.

All are frozen, slotted attrs classes with no I/O. A `ViberMessage` is valid
by construction: every rule is checked when it is built, so an invalid
message fails before any request is made, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from . import _validation as v
from ._enums import MessageStatus, MessageType, SmsStatus, SourceType
from ._errors import ValidationError
from ._outcomes import SendOutcome, send_outcome


__all__ = [
    "MessageReceipt",
    "SendResult",
    "StatusResult",
    "ViberMessage",
]


def _text(field: str, max_chars: int) -> Any:
    def check(_: object, __: object, value: object) -> None:
        v.check_text(field, value, max_chars=max_chars, required=False)

    return check


def _url(field: str) -> Any:
    def check(_: object, __: object, value: object) -> None:
        if value is not None:
            v.check_http_url(field, value)

    return check


def _check_image(_: object, __: object, value: Any) -> None:
    if value is not None:
        v.check_image_url("image_url", value)


def _check_validity(_: object, __: object, value: Any) -> None:
    if value is not None:
        v.check_int_range(
            "validity_period", value, v.MIN_VALIDITY_PERIOD, v.MAX_VALIDITY_PERIOD
        )


def _check_required_text(field: str, max_chars: int) -> Any:
    def check(_: object, __: object, value: object) -> None:
        v.check_text(field, value, max_chars=max_chars)

    return check


def _check_receiver(_: Any, __: Any, value: Any) -> None:
    v.check_phone_number("receiver", value)


_message_type = v.to_int_enum("message_type", MessageType)
_source_type = v.to_int_enum("source_type", SourceType)
_receiver = v.to_phone_number("receiver")


# Named functions, so that attrs' mypy plugin can read the converters' types.
def _to_message_type(value: int) -> MessageType:
    return _message_type(value)


def _to_source_type(value: int) -> SourceType:
    return _source_type(value)


def _to_receiver(value: str | int) -> str:
    return _receiver(value)  # type: ignore[no-any-return]


# Which optional fields each known message type requires (True) or refuses
# (False). Types missing from the table (new codes) get no combination rules:
# the server is the authority on those.
_IMAGE_BUTTON_FIELDS = ("image_url", "button_caption", "button_action")
_TYPE_RULES: dict[MessageType, dict[str, bool]] = {
    MessageType.TEXT: {"text": True, "file_url": False}
    | dict.fromkeys(_IMAGE_BUTTON_FIELDS, False),
    MessageType.TEXT_2WAY: {"text": True, "file_url": False}
    | dict.fromkeys(_IMAGE_BUTTON_FIELDS, False),
    MessageType.TEXT_IMAGE_BUTTON: {"text": True, "file_url": False}
    | dict.fromkeys(_IMAGE_BUTTON_FIELDS, True),
    MessageType.TEXT_IMAGE_BUTTON_2WAY: {"text": True, "file_url": False}
    | dict.fromkeys(_IMAGE_BUTTON_FIELDS, True),
    MessageType.FILE: {"file_url": True} | dict.fromkeys(_IMAGE_BUTTON_FIELDS, False),
    MessageType.TEMPLATE_PRIMARY_DEVICE: {"text": True, "file_url": False}
    | dict.fromkeys(_IMAGE_BUTTON_FIELDS, False),
    MessageType.TEMPLATE_ALL_DEVICES: {"text": True, "file_url": False}
    | dict.fromkeys(_IMAGE_BUTTON_FIELDS, False),
}


@attrs.frozen(kw_only=True)
class ViberMessage:
    """A Viber (or Viber + SMS) message, validated when it is built.

    Field names follow the vendor's Python SDK; `to_payload` gives the wire
    names (``sender`` is sent as ``source_addr``, ``receiver`` as
    ``destination_addr``, ``image_url`` as ``image``). Unset optional fields
    are left out of the request.

    Attributes:
        sender: Sender name assigned by your account manager (at most 20
            characters).
        receiver: Recipient phone number in international format without
            ``+`` (at most 20 characters). An int is accepted and turned
            into a string.
        message_type: A `MessageType` (or its integer code; unknown codes
            are passed through).
        source_type: `SourceType.PROMOTIONAL` or `SourceType.TRANSACTIONAL`.
        text: Message text, at most 1000 characters. Required for text types.
        image_url: http(s) URL of a .jpg/.jpeg/.png image (400x400 px at
            most). Required for image types, refused for text-only types.
        button_caption: Button caption, at most 30 characters. Required for
            image types, refused for text-only types.
        button_action: http(s) URL opened by the button. Required for image
            types, refused for text-only types.
        callback_url: http(s) URL that receives status callbacks (and, for
            2Way types, user replies).
        validity_period: Time to live in seconds, 40 to 21600.
        text_sms: SMS fallback text (Viber + SMS), transactional messages
            only: at most 160 GSM-7 characters or 70 UCS-2 characters.
        file_url: http(s) URL of the file sent by `MessageType.FILE`.

    Raises:
        ValidationError: A field breaks a documented rule; ``.field`` names it.
    """

    sender: str = attrs.field(
        validator=_check_required_text("sender", v.MAX_ADDRESS_CHARS)
    )
    receiver: str = attrs.field(converter=_to_receiver, validator=_check_receiver)
    message_type: MessageType = attrs.field(converter=_to_message_type)
    source_type: SourceType = attrs.field(converter=_to_source_type)
    text: str | None = attrs.field(
        default=None, validator=_text("text", v.MAX_TEXT_CHARS)
    )
    image_url: str | None = attrs.field(default=None, validator=_check_image)
    button_caption: str | None = attrs.field(
        default=None,
        validator=_text("button_caption", v.MAX_BUTTON_CAPTION_CHARS),
    )
    button_action: str | None = attrs.field(
        default=None, validator=_url("button_action")
    )
    callback_url: str | None = attrs.field(default=None, validator=_url("callback_url"))
    validity_period: int | None = attrs.field(default=None, validator=_check_validity)
    text_sms: str | None = attrs.field(
        default=None, validator=_text("text_sms", v.MAX_TEXT_CHARS)
    )
    file_url: str | None = attrs.field(default=None, validator=_url("file_url"))

    # Python field name -> wire name, in the order the API documents them.
    WIRE_NAMES: ClassVar[Mapping[str, str]] = {
        "sender": "source_addr",
        "receiver": "destination_addr",
        "message_type": "message_type",
        "text": "text",
        "image_url": "image",
        "button_caption": "button_caption",
        "button_action": "button_action",
        "source_type": "source_type",
        "callback_url": "callback_url",
        "validity_period": "validity_period",
        "text_sms": "text_sms",
        "file_url": "file_url",
    }
    REQUIRED_FIELDS: ClassVar[tuple[str, ...]] = (
        "sender",
        "receiver",
        "message_type",
        "source_type",
    )

    def __attrs_post_init__(self) -> None:
        rules = _TYPE_RULES.get(self.message_type)
        if rules is not None:
            for field, required in rules.items():
                present = getattr(self, field) is not None
                if required and not present:
                    raise ValidationError(
                        field, f"is required for message type {self._type_label}"
                    )
                if present and not required:
                    raise ValidationError(
                        field, f"is not allowed for message type {self._type_label}"
                    )
        if self.text_sms is not None:
            if self.source_type is not SourceType.TRANSACTIONAL:
                raise ValidationError(
                    "text_sms", "SMS fallback is only allowed on transactional messages"
                )
            length, limit = v.sms_length(self.text_sms)
            if length > limit:
                charset = "GSM-7" if limit == v.MAX_SMS_GSM7_SEPTETS else "UCS-2"
                raise ValidationError(
                    "text_sms",
                    f"must fit one SMS: at most {limit} {charset} characters "
                    f"(got {length})",
                )

    @property
    def _type_label(self) -> str:
        return f"{int(self.message_type)} ({self.message_type.name})"

    @classmethod
    def transactional(
        cls, *, sender: str, receiver: str | int, text: str, **fields: Any
    ) -> ViberMessage:
        """Build a transactional text message (type 106, source type 2).

        Extra keyword arguments (``text_sms``, ``validity_period``,
        ``callback_url``...) are passed through.
        """
        return cls(
            sender=sender,
            receiver=receiver,
            text=text,
            message_type=fields.pop("message_type", MessageType.TEXT),
            source_type=SourceType.TRANSACTIONAL,
            **fields,
        )

    @classmethod
    def promotional(
        cls,
        *,
        sender: str,
        receiver: str | int,
        text: str,
        image_url: str | None = None,
        button_caption: str | None = None,
        button_action: str | None = None,
        **fields: Any,
    ) -> ViberMessage:
        """Build a promotional message (source type 1).

        With an image and a button it is type 108, otherwise type 106, unless
        ``message_type`` says otherwise.
        """
        has_button = image_url is not None or button_caption is not None
        default_type = MessageType.TEXT_IMAGE_BUTTON if has_button else MessageType.TEXT
        return cls(
            sender=sender,
            receiver=receiver,
            text=text,
            image_url=image_url,
            button_caption=button_caption,
            button_action=button_action,
            message_type=fields.pop("message_type", default_type),
            source_type=SourceType.PROMOTIONAL,
            **fields,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Any) -> ViberMessage:
        """Build a message from a mapping of its Python field names.

        Raises:
            ValidationError: A key is unknown, a required key is missing, or a
                value breaks a rule.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                "message",
                "must be a ViberMessage or a mapping of its field names, "
                f"not {type(data).__name__}",
            )
        for key in data:
            if key not in cls.WIRE_NAMES:
                hint = _WIRE_TO_FIELD.get(key) if isinstance(key, str) else None
                suffix = f" (did you mean {hint!r}?)" if hint else ""
                # Not str(key): an int past Python's digit limit refuses it.
                name = key if isinstance(key, str) else f"<{type(key).__name__}>"
                raise ValidationError(name, f"is not a ViberMessage field{suffix}")
        for key in cls.REQUIRED_FIELDS:
            if key not in data:
                raise ValidationError(key, "is required")
        return cls(**data)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ViberMessage:
        """Build a message from a wire payload (the JSON ``send-viber`` takes).

        ``null`` values count as absent. This is the inverse of `to_payload`.
        """
        fields = {
            _WIRE_TO_FIELD.get(key, key): value
            for key, value in payload.items()
            if value is not None
        }
        return cls.from_dict(fields)

    def to_payload(self) -> dict[str, Any]:
        """Return the JSON object ``send-viber`` takes, unset fields left out."""
        payload: dict[str, Any] = {
            "source_addr": self.sender,
            "destination_addr": self.receiver,
            "message_type": int(self.message_type),
        }
        if self.text is not None:
            payload["text"] = self.text
        if self.image_url is not None:
            payload["image"] = self.image_url
        if self.button_caption is not None:
            payload["button_caption"] = self.button_caption
        if self.button_action is not None:
            payload["button_action"] = self.button_action
        payload["source_type"] = int(self.source_type)
        if self.callback_url is not None:
            payload["callback_url"] = self.callback_url
        if self.validity_period is not None:
            payload["validity_period"] = self.validity_period
        if self.text_sms is not None:
            payload["text_sms"] = self.text_sms
        if self.file_url is not None:
            payload["file_url"] = self.file_url
        return payload


_WIRE_TO_FIELD = {
    wire: field for field, wire in ViberMessage.WIRE_NAMES.items() if wire != field
}


@attrs.frozen
class MessageReceipt:
    """The status of a sent message, as ``receive-viber`` reports it.

    Attributes:
        message_id: The message ID.
        status: Viber delivery status.
        sms_message_id: ID of the SMS fallback (Viber + SMS), if any.
        sms_message_status: Status of the SMS fallback, if any.
    """

    message_id: int
    status: MessageStatus
    sms_message_id: int | None = None
    sms_message_status: SmsStatus | None = None

    @property
    def is_final(self) -> bool:
        """Whether neither the Viber status nor the SMS fallback will change."""
        if not self.status.is_final:
            return False
        return self.sms_message_status is None or self.sms_message_status.is_final


@attrs.frozen
class SendResult:
    """The result of one item of `AsyncViberClient.send_messages`.

    Attributes:
        index: Position of the item in the input (0-based).
        message: The validated `ViberMessage`, or the item as given when it
            could not be validated.
        message_id: The message ID when sent, else None.
        error: Why the item was not sent (a `ValidationError`, an `APIError`,
            an `OutcomeUnknownError`...), else None.
    """

    index: int
    message: ViberMessage | Mapping[str, Any] | object
    message_id: int | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the message was accepted by the API."""
        return self.error is None

    @property
    def outcome(self) -> SendOutcome:
        """Sent, failed, or unknown (the message may have been sent)."""
        return send_outcome(self.error)


@attrs.frozen
class StatusResult:
    """The result of one item of `AsyncViberClient.get_message_statuses`.

    Attributes:
        index: Position of the item in the input (0-based).
        message_id: The message ID looked up (as given).
        receipt: The `MessageReceipt`, or None if the lookup failed.
        error: Why the lookup failed, else None.
    """

    index: int
    message_id: object
    receipt: MessageReceipt | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the lookup succeeded."""
        return self.error is None
