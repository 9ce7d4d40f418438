"""ViberMessage rules at and just past each boundary; receipts; results; enums."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from decisiontelecom_viber import (
    MessageReceipt,
    MessageStatus,
    MessageType,
    OutcomeUnknownError,
    RateLimitError,
    SendOutcome,
    SendResult,
    SmsStatus,
    SourceType,
    ValidationError,
    ViberMessage,
)


IMAGE = "https://cdn.example.com/promo.jpg"
ACTION = "https://example.com/offer"


def text_message(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "sender": "Acme",
        "receiver": "380501234567",
        "message_type": MessageType.TEXT,
        "source_type": SourceType.TRANSACTIONAL,
        "text": "hello",
    }
    fields.update(overrides)
    return fields


def image_message(**overrides: Any) -> dict[str, Any]:
    fields = text_message(
        message_type=MessageType.TEXT_IMAGE_BUTTON,
        source_type=SourceType.PROMOTIONAL,
        image_url=IMAGE,
        button_caption="Buy",
        button_action=ACTION,
    )
    fields.update(overrides)
    return fields


def build(fields: dict[str, Any]) -> ViberMessage:
    return ViberMessage(**fields)


def fails_on(field: str, fields: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        build(fields)
    assert field == info.value.field
    return info.value


class TestBoundaries:
    def test_sender_up_to_20_characters(self) -> None:
        """sender: 20 characters pass, 21 fail."""
        assert 20 == len(build(text_message(sender="A" * 20)).sender)
        fails_on("sender", text_message(sender="A" * 21))

    @pytest.mark.parametrize("receiver", ["3805012", "380501234567", "1" * 15])
    def test_receiver_is_7_to_15_digits(self, receiver: str) -> None:
        assert receiver == build(text_message(receiver=receiver)).receiver

    @pytest.mark.parametrize(
        ("receiver", "why"),
        [
            ("+380501234567", "without '+'"),
            ("call me", "digits only"),
            ("380 50 123 45 67", "digits only"),
            ("\u0663\u0668\u0660\u0665\u0660\u0661\u0662\u0663", "digits only"),
            ("38050", "7 to 15 digits (it has 5)"),
            ("380501", "7 to 15 digits"),
            ("1" * 16, "7 to 15 digits"),
            ("3" * 25, "7 to 15 digits (it has 25)"),
            (10**15, "7 to 15 digits"),
            (38050, "7 to 15 digits"),
        ],
    )
    def test_receiver_is_an_international_number(
        self, receiver: str | int, why: str
    ) -> None:
        """The docs' "international format without +": E.164, digits only.
        The error names the field and why, never the number."""
        error = fails_on("receiver", text_message(receiver=receiver))
        assert why in str(error)
        assert str(receiver) not in str(error)

    @pytest.mark.parametrize("field", ["sender", "receiver"])
    @pytest.mark.parametrize("empty", ["", "   "])
    def test_addresses_must_not_be_empty(self, field: str, empty: str) -> None:
        """Empty or blank addresses are refused."""
        fails_on(field, text_message(**{field: empty}))

    def test_receiver_may_be_an_int(self) -> None:
        """An int phone number becomes a string (what every vendor SDK sends)."""
        assert "380501234567" == build(text_message(receiver=380501234567)).receiver

    def test_text_up_to_1000_characters(self) -> None:
        """text: 1000 characters pass, 1001 fail, empty fails."""
        assert 1000 == len(build(text_message(text="a" * 1000)).text or "")
        error = fails_on("text", text_message(text="a" * 1001))
        assert "1001" in str(error)
        fails_on("text", text_message(text=""))

    def test_text_is_required_for_text_types(self) -> None:
        """A text message without text is refused."""
        fails_on("text", text_message(text=None))

    def test_button_caption_up_to_30_characters(self) -> None:
        """button_caption: 30 characters pass, 31 fail."""
        assert isinstance(build(image_message(button_caption="b" * 30)), ViberMessage)
        fails_on("button_caption", image_message(button_caption="b" * 31))

    @pytest.mark.parametrize("period", [40, 21600])
    def test_validity_period_inside_the_range(self, period: int) -> None:
        """40 and 21600 seconds are the documented limits."""
        assert period == build(text_message(validity_period=period)).validity_period

    @pytest.mark.parametrize("period", [39, 21601, 0, -1, True, 60.0, "60"])
    def test_validity_period_outside_the_range(self, period: object) -> None:
        """39, 21601 and non-integers are refused."""
        fails_on("validity_period", text_message(validity_period=period))

    @pytest.mark.parametrize(
        "url",
        [
            "https://cdn.example.com/a.jpg",
            "http://cdn.example.com/a.JPEG",
            "https://cdn.example.com/path/a.Png",
            "https://cdn.example.com/a.png?v=2",
        ],
    )
    def test_image_urls_accepted(self, url: str) -> None:
        """http(s) URLs of .jpg/.jpeg/.png files pass, in any case."""
        assert url == build(image_message(image_url=url)).image_url

    @pytest.mark.parametrize(
        "url",
        [
            "https://cdn.example.com/a.gif",
            "https://cdn.example.com/a.jpg.exe",
            "ftp://cdn.example.com/a.jpg",
            "cdn.example.com/a.jpg",
            "https:///a.jpg",
            "https://cdn.example.com/a b.jpg",
            "https://cdn.example.com:99999/a.jpg",
        ],
    )
    def test_image_urls_refused(self, url: str) -> None:
        """Other extensions, schemes and malformed URLs are refused."""
        fails_on("image_url", image_message(image_url=url))

    @pytest.mark.parametrize("field", ["button_action", "callback_url"])
    @pytest.mark.parametrize("url", ["example.com", "mailto:a@b.c", "https://", 42])
    def test_urls_must_be_http(self, field: str, url: object) -> None:
        """button_action and callback_url must be absolute http(s) URLs."""
        fields = image_message() if field == "button_action" else text_message()
        fails_on(field, {**fields, field: url})

    def test_callback_url_accepted(self) -> None:
        """A valid callback URL is kept."""
        url = "https://hooks.example.com/viber?x=1"
        assert url == build(text_message(callback_url=url)).callback_url


class TestTypeRules:
    @pytest.mark.parametrize(
        "message_type",
        [MessageType.TEXT_IMAGE_BUTTON, MessageType.TEXT_IMAGE_BUTTON_2WAY],
    )
    @pytest.mark.parametrize(
        "missing", ["image_url", "button_caption", "button_action"]
    )
    def test_image_types_need_image_caption_and_action(
        self, message_type: MessageType, missing: str
    ) -> None:
        """108 and 208 require all three of image, caption and action."""
        error = fails_on(
            missing, image_message(message_type=message_type, **{missing: None})
        )
        assert "required" in error.reason

    @pytest.mark.parametrize("message_type", [MessageType.TEXT, MessageType.TEXT_2WAY])
    @pytest.mark.parametrize(
        ("extra", "value"),
        [("image_url", IMAGE), ("button_caption", "Buy"), ("button_action", ACTION)],
    )
    def test_text_types_refuse_image_and_button(
        self, message_type: MessageType, extra: str, value: str
    ) -> None:
        """106 and 206 refuse image, caption and action."""
        error = fails_on(
            extra, text_message(message_type=message_type, **{extra: value})
        )
        assert "not allowed" in error.reason

    def test_file_type_needs_file_url_and_no_text(self) -> None:
        """222 sends a file: file_url is required, text is optional."""
        message = build(
            text_message(
                message_type=222, text=None, file_url="https://example.com/a.pdf"
            )
        )
        assert MessageType.FILE == message.message_type
        fails_on("file_url", text_message(message_type=222))

    def test_unknown_types_pass_through(self) -> None:
        """A type code the SDK does not know is sent unchanged, without type rules."""
        message = build(text_message(message_type=225, image_url=IMAGE))

        assert 225 == message.message_type
        assert 225 == message.to_payload()["message_type"]

    @pytest.mark.parametrize("bad", ["106", 106.0, None, True])
    def test_message_type_must_be_an_int(self, bad: object) -> None:
        """message_type is an integer code (or a MessageType)."""
        fails_on("message_type", text_message(message_type=bad))

    @pytest.mark.parametrize("bad", [0, 3, "1", None])
    def test_source_type_is_1_or_2(self, bad: object) -> None:
        """source_type is a closed set."""
        fails_on("source_type", text_message(source_type=bad))


class TestSmsFallback:
    def test_gsm7_up_to_160_characters(self) -> None:
        """Plain GSM-7 text: 160 characters pass, 161 fail."""
        assert isinstance(build(text_message(text_sms="a" * 160)), ViberMessage)
        error = fails_on("text_sms", text_message(text_sms="a" * 161))
        assert "GSM-7" in str(error)

    def test_gsm7_extension_characters_count_twice(self) -> None:
        """'€' takes two septets: 80 of them fill one SMS, 81 do not."""
        assert isinstance(build(text_message(text_sms="€" * 80)), ViberMessage)
        fails_on("text_sms", text_message(text_sms="€" * 81))

    def test_ucs2_up_to_70_characters(self) -> None:
        """Any non-GSM character makes it UCS-2: 70 pass, 71 fail."""
        assert isinstance(build(text_message(text_sms="ї" * 70)), ViberMessage)
        error = fails_on("text_sms", text_message(text_sms="ї" * 71))
        assert "UCS-2" in str(error)

    def test_emoji_takes_two_ucs2_units(self) -> None:
        """An emoji is a surrogate pair: 35 fit, 36 do not."""
        assert isinstance(build(text_message(text_sms="🙂" * 35)), ViberMessage)
        fails_on("text_sms", text_message(text_sms="🙂" * 36))

    def test_only_transactional_messages_fall_back(self) -> None:
        """text_sms on a promotional message is refused."""
        error = fails_on(
            "text_sms", text_message(source_type=SourceType.PROMOTIONAL, text_sms="hi")
        )
        assert "transactional" in error.reason


class TestMapping:
    def test_from_dict_builds_the_same_message(self) -> None:
        """from_dict with field names equals the constructor."""
        assert build(text_message()) == ViberMessage.from_dict(text_message())

    def test_unknown_key_is_named_with_a_hint(self) -> None:
        """A wire name is not a field name; the error says which one was meant."""
        with pytest.raises(ValidationError) as info:
            ViberMessage.from_dict({**text_message(), "source_addr": "x"})

        assert "source_addr" == info.value.field
        assert "sender" in info.value.reason

    @pytest.mark.parametrize(
        "missing", ["sender", "receiver", "message_type", "source_type"]
    )
    def test_missing_required_key(self, missing: str) -> None:
        """A missing required field is named."""
        fields = text_message()
        del fields[missing]

        with pytest.raises(ValidationError) as info:
            ViberMessage.from_dict(fields)

        assert missing == info.value.field

    @pytest.mark.parametrize("not_a_mapping", [None, "text", 42, ["a"]])
    def test_non_mappings_are_refused(self, not_a_mapping: object) -> None:
        """Only mappings can be turned into messages."""
        with pytest.raises(ValidationError):
            ViberMessage.from_dict(not_a_mapping)

    def test_payload_uses_wire_names_and_omits_unset_fields(self) -> None:
        """Unset optional fields are left out of the JSON."""
        payload = build(
            image_message(callback_url="https://h.example.com/cb")
        ).to_payload()

        assert {
            "source_addr": "Acme",
            "destination_addr": "380501234567",
            "message_type": 108,
            "text": "hello",
            "image": IMAGE,
            "button_caption": "Buy",
            "button_action": ACTION,
            "source_type": 1,
            "callback_url": "https://h.example.com/cb",
        } == payload
        assert all(type(value) in (str, int) for value in payload.values())

    def test_payload_round_trip(self) -> None:
        """from_payload inverts to_payload."""
        message = build(image_message(validity_period=3600))

        assert message == ViberMessage.from_payload(message.to_payload())

    def test_messages_are_frozen(self) -> None:
        """Messages cannot be changed after validation; evolve re-validates."""
        message = build(text_message())

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            message.text = "changed"  # type: ignore[misc]
        with pytest.raises(ValidationError):
            attrs.evolve(message, text="x" * 1001)

    def test_errors_never_contain_the_value(self) -> None:
        """Validation messages name the field, never echo phone numbers or text."""
        secret_text = "private text " * 100
        error = fails_on("text", text_message(text=secret_text))
        assert "private" not in str(error)
        error = fails_on("receiver", text_message(receiver="380501234567890123456"))
        assert "380501234567890123456" not in str(error)

    def test_helpers(self) -> None:
        """transactional() and promotional() pick the usual type codes."""
        otp = ViberMessage.transactional(
            sender="A", receiver="380501234567", text="t", text_sms="t"
        )
        promo = ViberMessage.promotional(
            sender="A",
            receiver="380501234567",
            text="t",
            image_url=IMAGE,
            button_caption="Go",
            button_action=ACTION,
        )

        assert (MessageType.TEXT, SourceType.TRANSACTIONAL) == (
            otp.message_type,
            otp.source_type,
        )
        assert (MessageType.TEXT_IMAGE_BUTTON, SourceType.PROMOTIONAL) == (
            promo.message_type,
            promo.source_type,
        )


class TestEnums:
    def test_int_enums(self) -> None:
        """Codes convert both ways."""
        assert MessageType.TEXT == MessageType(106)
        assert MessageStatus.SEEN == MessageStatus(6)
        # (An IntEnum member equals its code; mypy's literal types do not see it.)
        assert 20 == MessageStatus.UNKNOWN  # type: ignore[comparison-overlap]
        assert SourceType.PROMOTIONAL == SourceType(1)

    @pytest.mark.parametrize("enum_cls", [MessageType, MessageStatus, SmsStatus])
    def test_unknown_codes_never_raise(self, enum_cls: type[MessageStatus]) -> None:
        """Open enums turn unknown integers into named pseudo-members."""
        member = enum_cls(987)

        assert 987 == member
        assert "UNRECOGNISED_987" == member.name
        assert not member.is_recognised
        assert isinstance(member, enum_cls)

    @pytest.mark.parametrize(
        ("status", "final"),
        [
            (MessageStatus.SENT, False),
            (MessageStatus.PENDING, False),
            (MessageStatus.UNKNOWN, False),
            (MessageStatus.DELIVERED, True),
            (MessageStatus.SEEN, True),
            (MessageStatus.ERROR, True),
            (MessageStatus.REJECTED, True),
            (MessageStatus.UNDELIVERED, True),
            (MessageStatus(99), False),
        ],
    )
    def test_final_statuses(self, status: MessageStatus, final: bool) -> None:
        """Final statuses settle the delivery question; others may change."""
        assert final == status.is_final

    def test_receipt_waits_for_the_sms_fallback(self) -> None:
        """A receipt is final only once its SMS fallback is final too."""
        assert not MessageReceipt(
            1, MessageStatus.UNDELIVERED, 5, SmsStatus.ENROUTE
        ).is_final
        assert MessageReceipt(
            1, MessageStatus.UNDELIVERED, 5, SmsStatus.DELIVERED
        ).is_final
        assert MessageReceipt(1, MessageStatus.DELIVERED).is_final


class TestSendResult:
    def test_outcomes(self) -> None:
        """ok, failed and unknown are told apart."""
        message = build(text_message())
        sent = SendResult(0, message, message_id=1)
        failed = SendResult(1, message, error=RateLimitError("x", "y", http_status=429))
        unknown = SendResult(2, message, error=OutcomeUnknownError("read timeout"))

        assert (True, SendOutcome.SENT) == (sent.ok, sent.outcome)
        assert (False, SendOutcome.FAILED) == (failed.ok, failed.outcome)
        assert (False, SendOutcome.UNKNOWN) == (unknown.ok, unknown.outcome)
