"""parse_callback: documented payloads, tolerated oddities, and every way to fail."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decisiontelecom_viber import (
    CallbackError,
    MessageReceipt,
    MessageStatus,
    SmsStatus,
    ViberError,
)
from decisiontelecom_viber._callbacks import (
    IncomingMessage,
    StatusCallback,
    parse_callback,
)


DOCUMENTED_REPLY: dict[str, Any] = {
    "message_token": 44444444444444,
    "phone_number": "972512222222",
    "time": 2121212121,
    "message": {
        "text": "a message to the service",
        "tracking_data": "tracking_id:100035",
    },
}
STATUS: dict[str, Any] = {"message_id": 429, "status": 1}
SMS_STATUS: dict[str, Any] = {
    "message_id": 429,
    "status": 1,
    "sms_message_id": 36478,
    "sms_message_status": 2,
}


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def reply(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(json.dumps(DOCUMENTED_REPLY))
    payload.update(changes)
    return payload


def reply_with(**message_changes: Any) -> dict[str, Any]:
    payload = reply()
    payload["message"].update(message_changes)
    return payload


def status(**changes: Any) -> dict[str, Any]:
    return {**STATUS, **changes}


def rejects(body: Any, **kwargs: Any) -> str:
    with pytest.raises(CallbackError) as info:
        parse_callback(body, **kwargs)
    return info.value.reason


class TestIncomingMessage:
    def test_documented_payload(self) -> None:
        """The example of the 2Way documentation parses into every field."""
        event = parse_callback(encode(DOCUMENTED_REPLY))

        assert (
            IncomingMessage(
                message_token=44444444444444,
                phone_number="972512222222",
                time=datetime(2037, 3, 21, 1, 35, 21, tzinfo=timezone.utc),
                text="a message to the service",
                tracking_data="tracking_id:100035",
                reply_to_message_id=100035,
            )
            == event
        )
        assert DOCUMENTED_REPLY == event.raw
        assert event.reference is None

    def test_time_is_aware_utc(self) -> None:
        """The time carries the UTC time zone."""
        event = parse_callback(encode(DOCUMENTED_REPLY))

        assert isinstance(event, IncomingMessage)
        assert timezone.utc == event.time.tzinfo

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param(0, datetime(1970, 1, 1, tzinfo=timezone.utc), id="epoch"),
            pytest.param(
                1_700_000_000,
                datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc),
                id="seconds",
            ),
            pytest.param(
                1_700_000_000.5,
                datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=timezone.utc),
                id="float-seconds",
            ),
            pytest.param(
                1_700_000_000_123,
                datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=timezone.utc),
                id="milliseconds",
            ),
            pytest.param(
                "1700000000",
                datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc),
                id="string-seconds",
            ),
            pytest.param(
                " 1700000000123 ",
                datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=timezone.utc),
                id="string-milliseconds",
            ),
            pytest.param(
                10**11,
                datetime(5138, 11, 16, 9, 46, 40, tzinfo=timezone.utc),
                id="threshold-is-seconds",
            ),
            pytest.param(
                10**11 + 1,
                datetime(1973, 3, 3, 9, 46, 40, 1000, tzinfo=timezone.utc),
                id="past-threshold-is-milliseconds",
            ),
        ],
    )
    def test_time_units(self, value: Any, expected: datetime) -> None:
        """Seconds, float seconds, milliseconds above 10**11, and digit strings."""
        event = parse_callback(encode(reply(time=value)))

        assert isinstance(event, IncomingMessage)
        assert expected == event.time

    @pytest.mark.parametrize(
        ("tracking_data", "expected"),
        [
            pytest.param("tracking_id:100035", 100035, id="documented"),
            pytest.param("  tracking_id : 42  ", 42, id="spaces"),
            pytest.param("TRACKING_ID:7", 7, id="upper-case"),
            pytest.param("tracking_id:", None, id="no-digits"),
            pytest.param("tracking_id:abc", None, id="not-digits"),
            pytest.param("tracking_id:-5", None, id="negative"),
            pytest.param("tracking_id:1:2", None, id="two-values"),
            pytest.param("order:5", None, id="other-key"),
            pytest.param("100035", None, id="bare-number"),
            pytest.param("tracking_id:\u0661\u0662", None, id="non-ascii-digits"),
            pytest.param("tracking_id:" + "9" * 19, None, id="past-64-bit"),
            pytest.param(f"tracking_id:{2**63 - 1}", 2**63 - 1, id="largest-64-bit"),
            pytest.param("", None, id="empty"),
            pytest.param(None, None, id="null"),
        ],
    )
    def test_reply_to_message_id(
        self, tracking_data: str | None, expected: int | None
    ) -> None:
        """The ID is read from tracking_id:<digits>; anything else gives None."""
        event = parse_callback(encode(reply_with(tracking_data=tracking_data)))

        assert isinstance(event, IncomingMessage)
        assert expected == event.reply_to_message_id
        assert tracking_data == event.tracking_data

    def test_message_object_may_be_absent(self) -> None:
        """Without a message object, text and tracking data are None."""
        payload = reply()
        del payload["message"]

        event = parse_callback(encode(payload))

        assert isinstance(event, IncomingMessage)
        assert (None, None, None) == (
            event.text,
            event.tracking_data,
            event.reply_to_message_id,
        )

    def test_unknown_keys_are_kept(self) -> None:
        """Extra keys at either level are tolerated and kept in raw."""
        payload = reply(sender={"name": "x"}, extra=[1, 2])
        payload["message"]["type"] = "text"

        event = parse_callback(encode(payload))

        assert isinstance(event, IncomingMessage)
        assert payload == event.raw
        assert "a message to the service" == event.text

    @pytest.mark.parametrize(
        ("changes", "attribute", "expected"),
        [
            ({"message_token": "44444444444444"}, "message_token", 44444444444444),
            ({"message_token": 2**63 - 1}, "message_token", 2**63 - 1),
            ({"message_token": 5.0}, "message_token", 5),
            ({"phone_number": 972512222222}, "phone_number", "972512222222"),
            ({"phone_number": " 972512222222 "}, "phone_number", "972512222222"),
        ],
    )
    def test_tolerated_forms(
        self, changes: dict[str, Any], attribute: str, expected: object
    ) -> None:
        """Tokens as digit strings or integral floats, phone numbers as numbers."""
        event = parse_callback(encode(reply(**changes)))

        assert expected == getattr(event, attribute)

    def test_reply_wins_over_status_keys(self) -> None:
        """A payload with message_token is a reply even with message_id and status."""
        event = parse_callback(encode(reply(message_id=1, status=1)))

        assert isinstance(event, IncomingMessage)


class TestStatusCallback:
    def test_status_lookup_shape(self) -> None:
        """message_id and status, as the status endpoint returns them."""
        event = parse_callback(encode(STATUS))

        assert StatusCallback(message_id=429, status=MessageStatus.DELIVERED) == event
        assert STATUS == event.raw

    def test_sms_fallback_fields(self) -> None:
        """The Viber + SMS fields are read too."""
        event = parse_callback(encode(SMS_STATUS))

        assert (
            StatusCallback(
                message_id=429,
                status=MessageStatus.DELIVERED,
                sms_message_id=36478,
                sms_message_status=SmsStatus.DELIVERED,
            )
            == event
        )

    @pytest.mark.parametrize(
        "payload",
        [
            pytest.param({"message_id": "429", "status": "1"}, id="strings"),
            pytest.param({"message_id": " 429 ", "status": 1}, id="padded-string"),
            pytest.param({"message_id": 429.0, "status": 1.0}, id="integral-floats"),
            pytest.param(
                {"message_id": 429, "status": 1, "sms_message_id": None},
                id="sms-null",
            ),
            pytest.param(
                {
                    "message_id": 429,
                    "status": 1,
                    "sms_message_id": "",
                    "sms_message_status": "",
                },
                id="sms-empty-strings",
            ),
            pytest.param(
                {"message_id": 429, "status": 1, "message": "Delivered", "x": {}},
                id="unknown-keys-and-message-string",
            ),
        ],
    )
    def test_tolerated_forms(self, payload: dict[str, Any]) -> None:
        """IDs as strings or integral floats, empty SMS fields, unknown keys."""
        event = parse_callback(encode(payload))

        assert StatusCallback(message_id=429, status=MessageStatus.DELIVERED) == event

    def test_unknown_status_codes_are_kept(self) -> None:
        """A status code the SDK does not know is kept, not refused."""
        event = parse_callback(encode(status(status=42, sms_message_status=99)))

        assert isinstance(event, StatusCallback)
        assert (42, False) == (int(event.status), event.status.is_recognised)
        assert 99 == event.sms_message_status

    @pytest.mark.parametrize(
        ("payload", "expected"),
        [
            ({"status": 0}, False),
            ({"status": 5}, False),
            ({"status": 1}, True),
            ({"status": 6}, True),
            ({"status": 2}, True),
            ({"status": 1, "sms_message_id": 3, "sms_message_status": 1}, False),
            ({"status": 4, "sms_message_id": 3, "sms_message_status": 2}, True),
        ],
    )
    def test_is_final(self, payload: dict[str, Any], expected: bool) -> None:
        """is_final follows MessageReceipt: Viber settled, and any SMS too."""
        event = parse_callback(encode(status(**payload)))

        assert isinstance(event, StatusCallback)
        assert expected == event.is_final

    def test_to_receipt(self) -> None:
        """A status callback converts to the MessageReceipt a lookup returns."""
        event = parse_callback(encode(SMS_STATUS))

        assert isinstance(event, StatusCallback)
        assert (
            MessageReceipt(
                message_id=429,
                status=MessageStatus.DELIVERED,
                sms_message_id=36478,
                sms_message_status=SmsStatus.DELIVERED,
            )
            == event.to_receipt()
        )

    def test_raw_is_not_part_of_equality_or_repr(self) -> None:
        """Events compare by their fields, hash, and keep raw out of repr."""
        one = parse_callback(encode(status(extra="a")))
        two = parse_callback(encode(status(extra="b")))

        assert one == two
        assert hash(one) == hash(two)
        assert "extra" not in repr(one)

    def test_events_are_frozen(self) -> None:
        """Events cannot be changed after parsing."""
        event = parse_callback(encode(STATUS))
        assert isinstance(event, StatusCallback)

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            event.message_id = 1  # type: ignore[misc]


class TestInputForms:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(encode(STATUS), id="bytes"),
            pytest.param(bytearray(encode(STATUS)), id="bytearray"),
            pytest.param(memoryview(encode(STATUS)), id="memoryview"),
            pytest.param(json.dumps(STATUS), id="str"),
            pytest.param(STATUS, id="mapping"),
            pytest.param(b"\xef\xbb\xbf" + encode(STATUS), id="utf8-bom"),
            pytest.param(" \n" + json.dumps(STATUS, indent=2) + "\n", id="whitespace"),
        ],
    )
    def test_body_forms(self, body: Any) -> None:
        """Bytes, text and mappings all parse to the same event."""
        assert StatusCallback(
            message_id=429, status=MessageStatus.DELIVERED
        ) == parse_callback(body)

    def test_non_ascii_text(self) -> None:
        """Reply texts in any script survive, as UTF-8 or as JSON escapes."""
        payload = reply_with(text="Привіт 👋")

        for body in (
            json.dumps(payload).encode(),
            json.dumps(payload, ensure_ascii=False).encode(),
        ):
            event = parse_callback(body)

            assert isinstance(event, IncomingMessage)
            assert "Привіт 👋" == event.text

    def test_size_limit_is_inclusive(self) -> None:
        """A body of exactly max_bytes passes; one byte more fails."""
        body = encode(STATUS)

        assert 429 == parse_callback(body, max_bytes=len(body)).message_id  # type: ignore[union-attr]
        assert f"body is larger than {len(body) - 1} bytes" == rejects(
            body, max_bytes=len(body) - 1
        )

    def test_size_limit_counts_utf8_bytes_of_text(self) -> None:
        """For a str body the limit is in UTF-8 bytes, not characters."""
        body = json.dumps(reply_with(text="ж" * 50), ensure_ascii=False)
        size = len(body.encode())

        assert size > len(body)
        assert "body is larger than" in rejects(body, max_bytes=size - 1)
        assert isinstance(parse_callback(body, max_bytes=size), IncomingMessage)


REJECTED = [
    # Not a JSON object.
    pytest.param(b"", "body is not valid JSON", id="empty"),
    pytest.param(b"not json", "body is not valid JSON", id="not-json"),
    pytest.param(b'{"message_id": 1,', "body is not valid JSON", id="truncated"),
    pytest.param(b"\xff\xfe{}", "body is not valid UTF-8", id="bad-utf8"),
    pytest.param(
        '{"message_id": 1}'.encode("utf-16"), "body is not valid UTF-8", id="utf16"
    ),
    pytest.param(b"[1, 2]", "body must be a JSON object, not array", id="array"),
    pytest.param(b'"text"', "body must be a JSON object, not string", id="string"),
    pytest.param(b"42", "body must be a JSON object, not number", id="number"),
    pytest.param(b"null", "body must be a JSON object, not null", id="null"),
    pytest.param(
        b'{"message_id": NaN, "status": 1}', "NaN is not valid JSON", id="nan"
    ),
    pytest.param(b'{"x": Infinity}', "Infinity is not valid JSON", id="infinity"),
    pytest.param(b'{"x": -Infinity}', "-Infinity is not valid JSON", id="-infinity"),
    pytest.param(b'{"x": 1e400}', "a number is too large", id="float-overflow"),
    pytest.param(
        b'{"message_id": ' + b"1" * 5000 + b', "status": 1}',
        "body is not valid JSON",
        id="int-past-digit-limit",
    ),
    pytest.param(b"{}", "neither a status callback", id="empty-object"),
    pytest.param(b'{"foo": 1}', "neither a status callback", id="unrelated"),
    pytest.param(
        b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}",
        "body is nested deeper than 32 levels",
        id="nested-in-unknown-key",
    ),
    # Status callbacks.
    pytest.param(encode({"message_id": 1}), "status is missing", id="no-status"),
    pytest.param(encode({"status": 1}), "message_id is missing", id="no-message-id"),
    pytest.param(
        encode(status(message_id=None)), "message_id must not be null", id="id-null"
    ),
    pytest.param(
        encode(status(message_id=True)),
        "message_id must be an integer, not boolean",
        id="id-bool",
    ),
    pytest.param(
        encode(status(status=False)),
        "status must be an integer, not boolean",
        id="status-bool",
    ),
    pytest.param(
        encode(status(message_id=[429])),
        "message_id must be an integer, not array",
        id="id-array",
    ),
    pytest.param(
        encode(status(message_id={"id": 429})),
        "message_id must be an integer, not object",
        id="id-object",
    ),
    pytest.param(
        encode(status(message_id="42a")),
        "message_id must be an integer or a string of digits",
        id="id-not-digits",
    ),
    pytest.param(
        encode(status(message_id="")),
        "message_id must be an integer or a string of digits",
        id="id-empty-string",
    ),
    pytest.param(
        encode(status(message_id="\u00b2")),
        "message_id must be an integer or a string of digits",
        id="id-superscript-digit",
    ),
    pytest.param(
        encode(status(message_id=4.5)), "message_id must be an integer", id="id-float"
    ),
    pytest.param(
        encode(status(message_id="\u0661\u0662")),
        "message_id must be an integer or a string of digits",
        id="id-arabic-indic-digits",
    ),
    pytest.param(
        encode(status(message_id="1" * 5000)),
        "message_id must be an integer or a string of digits",
        id="id-string-past-digit-limit",
    ),
    pytest.param(
        encode(status(message_id=-1)),
        "message_id must be a non-negative 64-bit integer",
        id="id-negative",
    ),
    pytest.param(
        encode(status(message_id=2**63)),
        "message_id must be a non-negative 64-bit integer",
        id="id-past-64-bit",
    ),
    pytest.param(
        encode(status(sms_message_id=True)),
        "sms_message_id must be an integer, not boolean",
        id="sms-id-bool",
    ),
    pytest.param(
        encode(status(sms_message_status="delivered")),
        "sms_message_status must be an integer or a string of digits",
        id="sms-status-word",
    ),
    # User replies.
    pytest.param(
        encode({"message": {"text": "hi"}}),
        "message_token is missing",
        id="message-without-token",
    ),
    pytest.param(
        encode(reply(message_token=None)),
        "message_token must not be null",
        id="token-null",
    ),
    pytest.param(
        encode(reply(message_token=True)),
        "message_token must be an integer, not boolean",
        id="token-bool",
    ),
    pytest.param(
        encode({k: v for k, v in DOCUMENTED_REPLY.items() if k != "phone_number"}),
        "phone_number is missing",
        id="no-phone",
    ),
    pytest.param(
        encode(reply(phone_number=["972512222222"])),
        "phone_number must be a string, not array",
        id="phone-array",
    ),
    pytest.param(
        encode(reply(phone_number=None)),
        "phone_number must be a string, not null",
        id="phone-null",
    ),
    pytest.param(
        encode(reply(phone_number=True)),
        "phone_number must be a string, not boolean",
        id="phone-bool",
    ),
    pytest.param(
        encode(reply(phone_number="  ")), "phone_number is empty", id="phone-blank"
    ),
    pytest.param(
        encode({k: v for k, v in DOCUMENTED_REPLY.items() if k != "time"}),
        "time is missing",
        id="no-time",
    ),
    pytest.param(
        encode(reply(time="yesterday")),
        "time must be a number or a string of digits",
        id="time-word",
    ),
    pytest.param(
        encode(reply(time="2023-11-14T22:13:20Z")),
        "time must be a number or a string of digits",
        id="time-iso",
    ),
    pytest.param(
        encode(reply(time=True)), "time must be a number, not boolean", id="time-bool"
    ),
    pytest.param(
        encode(reply(time=None)), "time must be a number, not null", id="time-null"
    ),
    pytest.param(
        encode(reply(time=-1)),
        "time must be a non-negative finite number",
        id="time-negative",
    ),
    pytest.param(encode(reply(time=10**30)), "time is out of range", id="time-huge"),
    pytest.param(
        encode(reply(time=1e300)), "time is out of range", id="time-huge-float"
    ),
    pytest.param(
        encode(reply(message="hello")),
        "message must be an object, not string",
        id="message-string",
    ),
    pytest.param(
        encode(reply(message=["hello"])),
        "message must be an object, not array",
        id="message-array",
    ),
    pytest.param(
        encode(reply_with(text=42)),
        "message.text must be a string, not number",
        id="text-number",
    ),
    pytest.param(
        encode(reply_with(tracking_data={"tracking_id": 1})),
        "message.tracking_data must be a string, not object",
        id="tracking-object",
    ),
]


class TestRejected:
    @pytest.mark.parametrize(("body", "reason"), REJECTED)
    def test_malformed_bodies(self, body: bytes, reason: str) -> None:
        """Each malformed body raises CallbackError whose reason names the problem."""
        actual = rejects(body, max_bytes=1_000_000)

        assert actual.startswith(reason), actual

    def test_error_is_a_value_error_and_a_viber_error(self) -> None:
        """CallbackError fits both `except ValueError` and `except ViberError`."""
        with pytest.raises(CallbackError) as info:
            parse_callback(b"nope")

        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, ViberError)
        assert "invalid callback: body is not valid JSON" == str(info.value)

    def test_default_limit_is_64_kib(self) -> None:
        """Bodies above 64 KiB are refused by default, before parsing."""
        body = encode(status(padding="x" * (64 * 1024)))

        assert "body is larger than 65536 bytes" == rejects(body)

    def test_huge_text_body_is_refused_cheaply(self) -> None:
        """A str far over the limit is refused without parsing it."""
        assert "body is larger than 65536 bytes" == rejects("[" * 10_000_000)

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"[" * 100_000, id="arrays"),
            pytest.param(b'{"a":' * 100_000, id="objects"),
            pytest.param(b"[" * 100_000 + b"]" * 100_000, id="closed-arrays"),
        ],
    )
    def test_deep_nesting_is_refused_without_recursion_error(self, body: bytes) -> None:
        """Deeply nested JSON gives a CallbackError, never a RecursionError."""
        assert "body is nested too deeply" == rejects(body, max_bytes=len(body))

    def test_moderate_nesting_is_refused_by_the_depth_cap(self) -> None:
        """Nesting Python can parse, but far deeper than a callback, is refused."""
        body = b'{"message_id": 1, "status": 1, "x": ' + b"[" * 500 + b"]" * 500 + b"}"

        assert "body is nested deeper than 32 levels" == rejects(body)

    def test_depth_cap_leaves_room_for_unknown_keys(self) -> None:
        """Unknown keys nested a few levels deep are still fine."""
        body = b'{"message_id": 1, "status": 1, "x": ' + b"[" * 30 + b"]" * 30 + b"}"

        assert isinstance(parse_callback(body), StatusCallback)

    def test_cyclic_mapping_is_refused(self) -> None:
        """A self-referencing mapping passed in is refused, not looped over."""
        payload: dict[str, Any] = dict(STATUS)
        payload["self"] = payload

        assert "body is nested deeper than 32 levels" == rejects(payload)

    @pytest.mark.parametrize(
        ("changes", "reason"),
        [
            ({"time": math.nan}, "time must be a non-negative finite number"),
            ({"time": math.inf}, "time must be a non-negative finite number"),
            ({"message_token": math.nan}, "message_token must be an integer"),
            ({"message_token": 2.0**60}, "message_token must be an integer"),
        ],
    )
    def test_mapping_with_non_finite_floats(
        self, changes: dict[str, Any], reason: str
    ) -> None:
        """A decoded mapping with NaN or huge floats is refused too."""
        assert reason == rejects(reply(**changes))

    @pytest.mark.parametrize("body", [None, 42, ["message_id"], object()])
    def test_wrong_argument_type(self, body: Any) -> None:
        """Something that is not bytes, str or a mapping is a CallbackError."""
        assert "body must be bytes, str or a mapping" in rejects(body)

    def test_reasons_never_contain_values(self) -> None:
        """Reasons name fields but never echo the phone number or the text."""
        secret_phone = "380671234567"
        reasons = [
            rejects(encode(reply(phone_number=secret_phone, time="x"))),
            rejects(encode(reply(phone_number=[secret_phone]))),
            rejects(encode(reply_with(text=["top secret"]))),
        ]

        for reason in reasons:
            assert secret_phone not in reason
            assert "top secret" not in reason


# Hypothesis: whatever comes in, only CallbackError goes out.

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
known_keys = st.sampled_from(
    [
        "message_id",
        "status",
        "sms_message_id",
        "sms_message_status",
        "message_token",
        "phone_number",
        "time",
        "message",
        "text",
        "tracking_data",
    ]
)
field_values = (
    json_values
    | st.integers(min_value=0, max_value=2**64).map(str)
    | st.sampled_from(["tracking_id:1", " 7 ", "1e3", "", "1.5", "\u00b2", "-0"])
)
message_objects = st.dictionaries(known_keys, field_values, max_size=3)
payloads = st.dictionaries(known_keys, field_values | message_objects, max_size=8)


def only_callback_errors(body: Any) -> None:
    outcome: object
    try:
        outcome = parse_callback(body)
    except CallbackError as error:
        outcome = error.reason

    if isinstance(outcome, str):
        assert outcome  # a reason, never an empty one
    else:
        assert isinstance(outcome, (StatusCallback, IncomingMessage))


FUZZ = settings(max_examples=300, deadline=None)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_callback_error(body: bytes) -> None:
    """Random bytes either parse or raise CallbackError."""
    only_callback_errors(body)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_callback_error(body: str) -> None:
    """Random text either parses or raises CallbackError."""
    only_callback_errors(body)


@FUZZ
@given(json_values)
def test_arbitrary_json_raises_only_callback_error(value: Any) -> None:
    """Any JSON value, encoded or as a mapping, parses or raises CallbackError."""
    only_callback_errors(json.dumps(value).encode())
    if isinstance(value, dict):
        only_callback_errors(value)


@FUZZ
@given(payloads)
def test_callback_shaped_objects_raise_only_callback_error(
    payload: dict[str, Any],
) -> None:
    """Objects of the known keys with any values parse or raise CallbackError."""
    only_callback_errors(json.dumps(payload).encode())
    only_callback_errors(payload)


@FUZZ
@given(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.booleans(),
)
def test_ids_round_trip_as_numbers_or_strings(
    message_id: int, code: int, as_strings: bool
) -> None:
    """Any 64-bit ID and status, as a number or a digit string, is read back exactly."""
    payload = {
        "message_id": str(message_id) if as_strings else message_id,
        "status": str(code) if as_strings else code,
    }

    event = parse_callback(json.dumps(payload))

    assert isinstance(event, StatusCallback)
    assert (message_id, code) == (event.message_id, int(event.status))
