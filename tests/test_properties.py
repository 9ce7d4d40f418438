"""Properties: whatever goes in, only the documented errors come out.

* Building a `ViberMessage` from any values raises nothing but
  `ValidationError`, and a message that can be built can be sent: its body
  encodes and decodes back to the same message.
* The answer parsers of `_wire` raise nothing but `APIError` and
  `UnexpectedResponseError`, whatever the status, headers and body.
* `parse_callback` raises nothing but `CallbackError`.

The tests at the end of the module pin bugs these properties found (digit
strings `int()` refuses, lone surrogates, ints past Python's digit limit,
bodies nested past the recursion limit).
"""

from __future__ import annotations

import json
import string
from email.utils import format_datetime
from typing import Any

import attrs
import httpx
import pytest
import respx
from hypothesis import event, given, settings
from hypothesis import strategies as st

from decisiontelecom_viber import (
    APIError,
    CallbackError,
    IncomingMessage,
    MessageReceipt,
    MessageType,
    SendOutcome,
    SourceType,
    StatusCallback,
    UnexpectedResponseError,
    ValidationError,
    ViberMessage,
    parse_callback,
)
from decisiontelecom_viber._validation import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    MAX_SMS_GSM7_SEPTETS,
    MAX_SMS_UCS2_UNITS,
)
from decisiontelecom_viber._wire import (
    decode_send_response,
    decode_status_response,
    encode_message,
    error_from_response,
)


PROPERTY = settings(max_examples=400, deadline=None)
NOW = 1_700_000_000.0

FIELDS = tuple(attrs.fields_dict(ViberMessage))
OPTIONAL = tuple(f for f in FIELDS if f not in ViberMessage.REQUIRED_FIELDS)
WIRE_NAMES = tuple(ViberMessage.WIRE_NAMES.values())


# -- strategies ---------------------------------------------------------------

short_text = st.text(max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | short_text
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(short_text, children, max_size=4)
    ),
    max_leaves=12,
)
anything = (
    json_values
    | st.binary(max_size=20)
    | st.builds(object)
    | st.sampled_from([Ellipsis, 1j, b"", (), frozenset(), float("nan")])
    | st.sampled_from(list(MessageType) + list(SourceType))
    | st.decimals(allow_nan=True)
    | st.integers(min_value=-(2**70), max_value=2**70)
)
hosts = st.sampled_from(["example.com", "cdn.example.com", "127.0.0.1", "[::1]", ""])
urls = st.builds(
    lambda scheme, host, path, suffix: f"{scheme}://{host}/{path}{suffix}",
    st.sampled_from(["http", "https", "HTTPS", "ftp", "javascript", ""]),
    hosts,
    st.text(string.ascii_letters + string.digits + "/._-~%", max_size=20),
    st.sampled_from(["", ".jpg", ".JPEG", ".png", ".gif", "?x=1", "#f", " "]),
)
strings = (
    st.text(max_size=30)
    | st.text(min_size=990, max_size=1010)
    | st.sampled_from(["", " ", "\n", "\t\t", "0", "-1", "380501234567"])
    | urls
)
values = anything | strings
field_values = {
    "sender": values | st.text(min_size=1, max_size=22),
    "receiver": values
    | st.integers()
    | st.from_regex(r"\+?[0-9]{1,22}", fullmatch=True),
    "message_type": values
    | st.sampled_from(list(MessageType))
    | st.integers(-5, 400)
    | st.sampled_from([106, 108, 206, 208, 222, 301, 304]),
    "source_type": values | st.sampled_from([0, 1, 2, 3]),
    "validity_period": values | st.integers(0, 30000),
    "text_sms": values | st.text(max_size=200),
}


def field_value(field: str) -> st.SearchStrategy[Any]:
    return field_values.get(field, values)


def non_blank(max_size: int) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=max_size).filter(lambda s: s.strip() != "")


def http_url(suffix: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    return st.builds(
        lambda scheme, host, path, end: f"{scheme}://{host}/{path}{end}",
        st.sampled_from(["http", "https"]),
        st.sampled_from(["example.com", "cdn.example.com", "10.0.0.1"]),
        st.text(string.ascii_letters + string.digits + "/._-~", max_size=20),
        st.just("") if suffix is None else suffix,
    )


# At most 160 septets (an extension character takes two), or 70 UTF-16 units
# (an astral character takes two).
gsm7_sms = st.text(
    sorted(GSM7_BASIC | GSM7_EXTENDED), min_size=1, max_size=MAX_SMS_GSM7_SEPTETS // 2
).filter(lambda s: s.strip() != "")
ucs2_sms = non_blank(MAX_SMS_UCS2_UNITS // 2)


@st.composite
def valid_messages(draw: st.DrawFn) -> ViberMessage:
    """Messages valid by construction, every type and optional field drawn."""
    message_type = draw(st.sampled_from(list(MessageType)))
    source_type = draw(st.sampled_from(list(SourceType)))
    fields: dict[str, Any] = {
        "sender": draw(non_blank(20)),
        "receiver": draw(
            st.from_regex(r"[0-9]{7,15}", fullmatch=True)
            | st.integers(10**6, 10**15 - 1)
        ),
        "message_type": draw(st.sampled_from([message_type, int(message_type)])),
        "source_type": draw(st.sampled_from([source_type, int(source_type)])),
    }
    if message_type is MessageType.FILE:
        fields["file_url"] = draw(http_url())
        if draw(st.booleans()):
            fields["text"] = draw(non_blank(1000))
    else:
        fields["text"] = draw(non_blank(1000))
    if message_type.has_image_and_button:
        fields["image_url"] = draw(http_url(st.sampled_from([".jpg", ".jpeg", ".PNG"])))
        fields["button_caption"] = draw(non_blank(30))
        fields["button_action"] = draw(http_url())
    if draw(st.booleans()):
        fields["callback_url"] = draw(http_url())
    if draw(st.booleans()):
        fields["validity_period"] = draw(st.integers(40, 21600))
    if source_type is SourceType.TRANSACTIONAL and draw(st.booleans()):
        fields["text_sms"] = draw(gsm7_sms | ucs2_sms)
    return ViberMessage(**fields)


@st.composite
def any_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message's fields, any number of them replaced by anything.

    Optional fields may be dropped instead; with every field replaced this is
    the messiest input, with none a valid message.
    """
    message = draw(valid_messages())
    kwargs = {
        name: value
        for name, value in attrs.asdict(message, recurse=False).items()
        if value is not None
    }
    for field in draw(st.lists(st.sampled_from(FIELDS), unique=True)):
        if field in OPTIONAL and draw(st.booleans()):
            kwargs.pop(field, None)
        else:
            kwargs[field] = draw(field_value(field))
    return kwargs


any_keys = (
    st.sampled_from(FIELDS + WIRE_NAMES)
    | short_text
    | st.integers(-(2**70), 2**70)
    | st.none()
    | st.tuples(st.integers())
)
any_mappings = (
    st.dictionaries(any_keys, values, max_size=14)
    | any_kwargs()
    | st.builds(lambda kw, k, v: {**kw, k: v}, any_kwargs(), any_keys, values)
)


# -- building messages --------------------------------------------------------


def build_or_refuse(build: Any, *args: Any) -> ViberMessage | None:
    outcome: object
    try:
        outcome = build(*args)
    except ValidationError as error:
        outcome = error
    event(f"message: {type(outcome).__name__}")
    if isinstance(outcome, ValidationError):
        assert isinstance(outcome.field, str)
        assert outcome.reason
        return None
    assert isinstance(outcome, ViberMessage)
    return outcome


def assert_sendable(message: ViberMessage) -> None:
    """A message that could be built encodes, and decodes back to itself."""
    body = encode_message(message)

    assert message == ViberMessage.from_payload(json.loads(body))


@PROPERTY
@given(any_kwargs())
def test_building_from_any_values_raises_only_validation_error(
    kwargs: dict[str, Any],
) -> None:
    """ViberMessage(**kwargs) with any value for every field: built or refused."""
    message = build_or_refuse(lambda: ViberMessage(**kwargs))

    if message is not None:
        assert_sendable(message)


@PROPERTY
@given(st.one_of(any_mappings, anything))
def test_from_dict_of_anything_raises_only_validation_error(data: Any) -> None:
    """from_dict with any mapping (any keys, any values) or any non-mapping."""
    message = build_or_refuse(ViberMessage.from_dict, data)

    if message is not None:
        assert_sendable(message)


@PROPERTY
@given(any_kwargs(), st.sampled_from(["sender", "text", "button_caption", "text_sms"]))
def test_validation_errors_never_quote_the_value(
    kwargs: dict[str, Any], field: str
) -> None:
    """A refused text field is named, never quoted (texts stay out of logs)."""
    kwargs[field] = "QZXJ" + str(kwargs.get(field, ""))[:1000]

    shown = ""
    try:
        ViberMessage(**kwargs)
    except ValidationError as error:
        shown = f"{error} {error!r} {error.field} {error.reason}"

    assert "QZXJ" not in shown


@PROPERTY
@given(valid_messages())
def test_payload_round_trips(message: ViberMessage) -> None:
    """from_payload(to_payload(m)) == m, also through JSON."""
    payload = message.to_payload()

    assert message == ViberMessage.from_payload(payload)
    assert payload == json.loads(json.dumps(payload))
    assert payload == json.loads(encode_message(message))
    assert message == ViberMessage.from_payload(json.loads(encode_message(message)))
    assert message == ViberMessage.from_dict(attrs.asdict(message, recurse=False))


# -- parsing answers ----------------------------------------------------------

statuses = (
    st.just(200)
    | st.integers(200, 299)
    | st.integers(100, 599)
    | st.sampled_from([200, 201, 204, 400, 401, 402, 403, 429, 500, 502, 503, 504])
    | st.integers()
)
header_values = (
    st.text(string.printable.strip() + " ", max_size=30)
    | st.integers(-(10**12), 10**12).map(str)
    | st.floats(allow_nan=True).map(str)
    | st.datetimes().map(lambda d: format_datetime(d, usegmt=False))
    | st.sampled_from(["", "0", "-1", "1e400", "nan", "inf", "9" * 40, "1.5"])
)
header_names = st.sampled_from(
    [
        "retry-after",
        "Retry-After",
        "x-rate-limit-reset",
        "x-rate-limit-remaining",
        "x-rate-limit-limit",
        "content-type",
    ]
) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
headers = st.lists(st.tuples(header_names, header_values), max_size=5).map(
    httpx.Headers
)
numbers = (
    st.integers()
    | st.integers(0, 2**64).map(str)
    | st.sampled_from(["", " 7 ", "1e3", "1.5", "-0", "0x1f", "٣", "12abc"])
    | json_values
)
ids = st.integers(0, 2**63 - 1) | st.integers(0, 2**64).map(str)
successes = st.fixed_dictionaries(
    {"message_id": ids},
    optional={
        "status": st.integers(0, 30) | numbers,
        "sms_message_id": ids | numbers,
        "sms_message_status": st.integers(0, 10) | numbers,
        "extra": json_values,
    },
)
answer_objects = successes | st.fixed_dictionaries(
    {},
    optional={
        "message_id": numbers,
        "status": numbers,
        "sms_message_id": numbers,
        "sms_message_status": numbers,
        "name": json_values | st.sampled_from(["Invalid Parameter: text", ""]),
        "message": json_values,
        "code": numbers,
        "extra": json_values,
    },
)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


bodies = (
    successes.map(json_bytes)
    | st.binary(max_size=100)
    | json_values.map(json_bytes)
    | answer_objects.map(json_bytes)
    # The documentation's own example has a trailing comma.
    | answer_objects.map(lambda o: json_bytes(o)[:-1] + b",}" if o else b"{}")
    | answer_objects.map(lambda o: json_bytes(o)[: len(json_bytes(o)) // 2])
    | st.sampled_from([b"", b" ", b"<html>502 Bad Gateway</html>", b"null", b"[]"])
)


def carries_message_id(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if payload is None and body.rstrip().endswith(b",}"):
        return b"message_id" in body  # the forgiven trailing comma
    return isinstance(payload, dict) and "message_id" in payload


def documented(
    http_status: int, decode: Any, expected: type, body: bytes, hdrs: Any
) -> object:
    """Run *decode*; check it returned *expected* (2xx) or raised a documented error."""
    outcome: object
    try:
        outcome = decode(http_status, hdrs, body, now=NOW)
    except (APIError, UnexpectedResponseError) as error:
        outcome = error
    event(f"answer: {type(outcome).__name__}")
    if isinstance(outcome, APIError):
        assert http_status == outcome.http_status
    elif isinstance(outcome, UnexpectedResponseError):
        # A 2xx, a status the SDK does not know, or an error status around
        # a message ID: never a meaningful status with a plain body.
        if not carries_message_id(body):
            assert http_status not in (400, 401, 402, 403, 429)
            assert http_status < 500
        assert http_status == outcome.http_status
    else:
        assert 200 <= http_status < 300
        assert isinstance(outcome, expected)
    return outcome


@PROPERTY
@given(statuses, headers, bodies)
def test_send_answers_raise_only_documented_errors(
    http_status: int, hdrs: httpx.Headers, body: bytes
) -> None:
    """decode_send_response: a message ID (2xx only) or APIError/unexpected."""
    outcome = documented(http_status, decode_send_response, int, body, hdrs)

    if isinstance(outcome, int):
        assert not isinstance(outcome, bool)


@PROPERTY
@given(statuses, headers, bodies)
def test_status_answers_raise_only_documented_errors(
    http_status: int, hdrs: httpx.Headers, body: bytes
) -> None:
    """decode_status_response: a receipt (2xx only) or APIError/unexpected."""
    documented(http_status, decode_status_response, MessageReceipt, body, hdrs)


@PROPERTY
@given(statuses, headers, bodies)
def test_error_from_response_never_raises(
    http_status: int, hdrs: httpx.Headers, body: bytes
) -> None:
    """error_from_response returns an APIError, an unexpected answer, or None."""
    error = error_from_response(http_status, hdrs, body, now=NOW)

    if error is None:
        assert 200 <= http_status < 300
    else:
        assert isinstance(error, (APIError, UnexpectedResponseError))
        assert http_status == error.http_status
        retry_after = getattr(error, "retry_after", None)
        assert retry_after is None or retry_after >= 0


# -- parsing callbacks --------------------------------------------------------

status_callbacks = st.fixed_dictionaries(
    {"message_id": ids, "status": st.integers(0, 30) | ids},
    optional={
        "sms_message_id": ids | numbers,
        "sms_message_status": st.integers(0, 10) | numbers,
        "extra": json_values,
    },
)
replies = st.fixed_dictionaries(
    {
        "message_token": ids,
        "phone_number": st.from_regex(r"[0-9]{6,15}", fullmatch=True) | numbers,
        "time": st.integers(0, 2**45) | st.floats(0, 1e13) | numbers,
    },
    optional={
        "message": st.fixed_dictionaries(
            {},
            optional={
                "text": short_text | json_values,
                "tracking_data": ids.map(lambda n: f"tracking_id:{n}") | json_values,
            },
        )
    },
)
callback_objects = (
    status_callbacks
    | replies
    | st.fixed_dictionaries(
        {},
        optional={
            "message_id": numbers,
            "status": numbers,
            "sms_message_id": numbers,
            "sms_message_status": numbers,
            "message_token": numbers,
            "phone_number": numbers | short_text,
            "time": numbers,
            "message": json_values
            | st.fixed_dictionaries(
                {}, optional={"text": json_values, "tracking_data": json_values}
            ),
        },
    )
)


def parsed_or_refused(body: Any) -> StatusCallback | IncomingMessage | None:
    outcome: object
    try:
        outcome = parse_callback(body)
    except CallbackError as error:
        outcome = error
    event(f"callback: {type(outcome).__name__}")
    if isinstance(outcome, CallbackError):
        assert outcome.reason
        return None
    assert isinstance(outcome, (StatusCallback, IncomingMessage))
    return outcome


@PROPERTY
@given(st.binary(max_size=200))
def test_callbacks_of_any_bytes_raise_only_callback_error(body: bytes) -> None:
    """Random bytes either parse or raise CallbackError."""
    parsed_or_refused(body)
    parsed_or_refused(b"\xef\xbb\xbf" + body)


@PROPERTY
@given(json_values | callback_objects)
def test_callbacks_of_any_json_raise_only_callback_error(value: Any) -> None:
    """Any JSON value (bytes, text or mapping) parses or raises CallbackError;
    what parses once parses the same from its raw payload."""
    event = parsed_or_refused(json_bytes(value))
    assert event == parsed_or_refused(json.dumps(value))
    if isinstance(value, dict):
        # A mapping skips JSON, so NaN and Infinity are not refused there.
        as_mapping = parsed_or_refused(value)
        assert event is None or event == as_mapping
    if event is not None:
        assert event == parse_callback(event.raw)


# -- regressions: bugs the properties found ----------------------------------
BASE: dict[str, Any] = {
    "sender": "Acme",
    "receiver": "380501234567",
    "message_type": MessageType.TEXT,
    "source_type": SourceType.TRANSACTIONAL,
    "text": "hello",
}


def test_huge_receiver_number_is_a_validation_error() -> None:
    """A receiver int past Python's int-to-str digit limit is refused as such."""
    with pytest.raises(ValidationError):
        ViberMessage(**{**BASE, "receiver": 10**5000})


def test_huge_unknown_key_is_a_validation_error() -> None:
    """from_dict names an unknown key it cannot print without crashing."""
    with pytest.raises(ValidationError):
        ViberMessage.from_dict({**BASE, 10**5000: 1})


def test_lone_surrogate_in_text_sms_is_a_validation_error() -> None:
    """The SMS length check meets a lone surrogate: refused, not crashed."""
    with pytest.raises(ValidationError):
        ViberMessage(**{**BASE, "text_sms": "code \ud83d"})


@pytest.mark.parametrize("field", ["text", "sender", "callback_url"])
def test_a_message_that_can_be_built_can_be_encoded(field: str) -> None:
    """A lone surrogate (half an emoji cut by slicing) is refused when built."""
    value = {"callback_url": "https://example.com/cb/\udc00"}.get(field, "hi \ud83d")
    try:
        message = ViberMessage(**{**BASE, field: value})
    except ValidationError:
        return

    encode_message(message)


@pytest.mark.parametrize(
    ("http_status", "payload", "decode", "expected"),
    [
        (200, {"message_id": "\u00b2"}, decode_send_response, UnexpectedResponseError),
        (
            200,
            {"message_id": 1, "status": "\u2460"},
            decode_status_response,
            UnexpectedResponseError,
        ),
        (
            400,
            {"name": "x", "message": "y", "code": "\u00b2", "status": 400},
            decode_send_response,
            APIError,
        ),
    ],
    ids=["superscript-id", "circled-status", "superscript-code"],
)
def test_unicode_digit_ids_are_unexpected_answers(
    http_status: int, payload: dict[str, Any], decode: Any, expected: type
) -> None:
    """An ID that only looks numeric is an unexpected answer, not a crash.

    A crash matters: in send_messages the ValueError becomes a *failed*
    result for a message the API may have accepted.
    """
    with pytest.raises((expected, UnexpectedResponseError)):
        decode(http_status, httpx.Headers(), json_bytes(payload), now=NOW)


def test_ids_past_the_digit_limit_are_unexpected_answers() -> None:
    """A 5000-digit ID is refused by int() (Python's digit limit): unexpected."""
    body = json_bytes({"message_id": "9" * 5000})

    with pytest.raises(UnexpectedResponseError):
        decode_send_response(200, httpx.Headers(), body, now=NOW)


async def test_a_garbled_success_is_reported_unknown_not_failed(
    api: respx.MockRouter, make_client: Any
) -> None:
    """End to end: the API answered 2xx, so the message may have been sent.

    A parser crash here once turned it into a definitive failure, which
    invites a resend: a paid duplicate.
    """
    api.post("/send-viber").mock(
        return_value=httpx.Response(200, json={"message_id": "\u00b2"})
    )
    message = ViberMessage(**BASE)

    async with make_client().send_messages([message]) as results:
        [result] = [result async for result in results]

    assert SendOutcome.UNKNOWN is result.outcome


@pytest.mark.parametrize("http_status", [200, 500])
def test_deeply_nested_answers_are_unexpected(http_status: int) -> None:
    """A body nested past the recursion limit is garbage, not a crash."""
    body = b"[" * 100_000 + b"]" * 100_000

    with pytest.raises((APIError, UnexpectedResponseError)):
        decode_send_response(http_status, httpx.Headers(), body, now=NOW)
