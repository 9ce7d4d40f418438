"""Answers turned into values or errors: tables of documented and odd bodies."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from decisiontelecom_viber import (
    AmbiguousServerError,
    APIError,
    AuthenticationError,
    GatewayTimeoutError,
    InsufficientBalanceError,
    InvalidParameterError,
    MessageStatus,
    RateLimitError,
    ServerError,
    SmsStatus,
    UnexpectedResponseError,
)
from decisiontelecom_viber._wire import (
    decode_send_response,
    decode_status_response,
    error_from_response,
    retry_after_from_headers,
)

from .helpers import DOCUMENTED_ERRORS


NOW = 1_700_000_000.0
NO_HEADERS = httpx.Headers()


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


ERROR_CLASSES: dict[str, type[APIError]] = {
    "rate_limit": RateLimitError,
    "invalid_parameter": InvalidParameterError,
    "server_error": ServerError,
    "balance": InsufficientBalanceError,
}


class TestDocumentedErrors:
    @pytest.mark.parametrize("kind", sorted(DOCUMENTED_ERRORS))
    @pytest.mark.parametrize(
        "with_http_200", [True, False], ids=["http-200", "own-status"]
    )
    def test_each_error_with_either_http_status(
        self, kind: str, with_http_200: bool
    ) -> None:
        """Documented errors are recognised from the body, whatever the HTTP status."""
        payload = DOCUMENTED_ERRORS[kind]
        http_status = 200 if with_http_200 else int(payload["status"])

        with pytest.raises(ERROR_CLASSES[kind]) as info:
            decode_send_response(http_status, NO_HEADERS, body(payload), now=NOW)

        error = info.value
        assert (
            payload["name"],
            payload["message"],
            payload["code"],
            payload["status"],
        ) == (
            error.name,
            error.message,
            error.code,
            error.status,
        )
        assert http_status == error.http_status

    def test_errors_from_status_lookups_too(self) -> None:
        """receive-viber answers carry the same errors."""
        with pytest.raises(RateLimitError):
            decode_status_response(
                200, NO_HEADERS, body(DOCUMENTED_ERRORS["rate_limit"]), now=NOW
            )

    def test_stray_space_in_the_message_is_kept(self) -> None:
        """One README shows ' Rate limit exceeded': the code still decides."""
        payload = {**DOCUMENTED_ERRORS["rate_limit"], "message": " Rate limit exceeded"}

        error = error_from_response(429, NO_HEADERS, body(payload), now=NOW)

        assert isinstance(error, RateLimitError)

    def test_yii2_unauthorized_body(self) -> None:
        """Yii2's 401 body has code 0 like a rate limit; its status says 401."""
        payload = {
            "name": "Unauthorized",
            "message": "Your request was made with invalid credentials.",
            "code": 0,
            "status": 401,
        }

        assert isinstance(
            error_from_response(401, NO_HEADERS, body(payload), now=NOW),
            AuthenticationError,
        )
        assert isinstance(
            error_from_response(200, NO_HEADERS, body(payload), now=NOW),
            AuthenticationError,
        )

    def test_partial_error_body_off_the_2xx_path(self) -> None:
        """A non-2xx body with only name and status is still read."""
        error = error_from_response(
            401, NO_HEADERS, body({"name": "Unauthorized", "status": 401}), now=NOW
        )

        assert isinstance(error, AuthenticationError)
        assert "Unauthorized" == error.name

    def test_unknown_code_is_a_plain_api_error(self) -> None:
        """An error code the SDK does not know is an APIError with its data."""
        payload = {"name": "Weird", "message": "new", "code": 17, "status": 409}

        error = error_from_response(200, NO_HEADERS, body(payload), now=NOW)

        assert type(error) is APIError
        assert 17 == error.code


class TestNonJsonBodies:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (400, InvalidParameterError),
            (401, AuthenticationError),
            (402, InsufficientBalanceError),
            (403, AuthenticationError),
            (404, UnexpectedResponseError),
            (429, RateLimitError),
            # 500/502/503 without the API's own error body: from a gateway.
            (500, AmbiguousServerError),
            (502, AmbiguousServerError),
            (503, AmbiguousServerError),
            (504, GatewayTimeoutError),
            (520, AmbiguousServerError),
            (524, GatewayTimeoutError),
        ],
    )
    @pytest.mark.parametrize(
        "raw", [b"<html><body><h1>Bad Gateway</h1></body></html>", b"", b"oops"]
    )
    def test_classified_by_http_status(
        self, status: int, expected: type[Exception], raw: bytes
    ) -> None:
        """A proxy's HTML page or an empty body is classified by the HTTP status."""
        with pytest.raises(expected) as info:
            decode_send_response(status, NO_HEADERS, raw, now=NOW)

        assert expected is type(info.value)
        assert status == getattr(info.value, "http_status", None)
        assert getattr(info.value, "code", None) is None
        assert isinstance(info.value, (APIError, UnexpectedResponseError))
        assert raw.decode() == info.value.body

    def test_error_body_is_truncated(self) -> None:
        """Huge error pages are not kept whole on the exception."""
        error = error_from_response(502, NO_HEADERS, b"x" * 100_000, now=NOW)

        assert error is not None
        assert 2000 == len(error.body)


class TestSuccessBodies:
    @pytest.mark.parametrize(
        "raw",
        [
            b'{"message_id":429}',
            b'{"message_id":"429"}',
            b'{"message_id":429,"unexpected":[1,2]}',
            b'{"message_id":429,}',
            b' {"message_id": 429} \n',
        ],
    )
    def test_send_ids(self, raw: bytes) -> None:
        """IDs as numbers or numeric strings, extra keys, a trailing comma."""
        assert 429 == decode_send_response(200, NO_HEADERS, raw, now=NOW)

    def test_201_is_success_too(self) -> None:
        """Any 2xx with the documented body is a success."""
        assert 1 == decode_send_response(201, NO_HEADERS, b'{"message_id":1}', now=NOW)

    @pytest.mark.parametrize(
        "raw",
        [
            b"",
            b"null",
            b"[]",
            b'{"message_id": null}',
            b'{"message_id": true}',
            b'{"message_id": 1.5}',
            b'{"name": "x"}',
            b"\xff\xfe",
        ],
    )
    def test_unusable_2xx_bodies(self, raw: bytes) -> None:
        """A 2xx without a usable message_id is an unexpected response."""
        with pytest.raises(UnexpectedResponseError):
            decode_send_response(200, NO_HEADERS, raw, now=NOW)

    def test_receipt_tolerates_strings_extras_and_unknown_codes(self) -> None:
        """Numeric strings, unknown statuses and extra keys all parse."""
        receipt = decode_status_response(
            200,
            NO_HEADERS,
            body(
                {
                    "message_id": "429",
                    "status": "77",
                    "sms_message_id": 36478,
                    "sms_message_status": 99,
                    "new_field": {"a": 1},
                }
            ),
            now=NOW,
        )

        assert 429 == receipt.message_id
        assert MessageStatus(77) == receipt.status
        assert SmsStatus(99) == receipt.sms_message_status

    def test_receipt_sms_fields_may_be_null(self) -> None:
        """Null SMS fields mean no fallback."""
        receipt = decode_status_response(
            200,
            NO_HEADERS,
            body({"message_id": 1, "status": 1, "sms_message_id": None}),
            now=NOW,
        )

        assert receipt.sms_message_id is None
        assert receipt.sms_message_status is None

    @pytest.mark.parametrize(
        "payload", [{"message_id": 1}, {"status": 1, "message_id": "x"}]
    )
    def test_receipt_needs_id_and_status(self, payload: dict[str, Any]) -> None:
        """A receipt without an integer status is unexpected."""
        with pytest.raises(UnexpectedResponseError):
            decode_status_response(200, NO_HEADERS, body(payload), now=NOW)


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({}, None),
            ({"Retry-After": "3"}, 3.0),
            ({"Retry-After": "1.5"}, 1.5),
            ({"Retry-After": " 7 "}, 7.0),
            ({"Retry-After": "-1"}, None),
            ({"Retry-After": "nan"}, None),
            ({"Retry-After": "soon"}, None),
            (
                {
                    "Retry-After": format_datetime(
                        datetime.fromtimestamp(NOW + 30, tz=timezone.utc), usegmt=True
                    )
                },
                30.0,
            ),
            (
                {
                    "Retry-After": format_datetime(
                        datetime.fromtimestamp(NOW - 30, tz=timezone.utc), usegmt=True
                    )
                },
                0.0,
            ),
            ({"X-Rate-Limit-Reset": "2"}, 2.0),
            ({"X-Rate-Limit-Reset": str(int(NOW) + 5)}, 5.0),
            ({"Retry-After": "4", "X-Rate-Limit-Reset": "9"}, 4.0),
            ({"Retry-After": "junk", "X-Rate-Limit-Reset": "9"}, 9.0),
        ],
        ids=[
            "none",
            "seconds",
            "fraction",
            "spaces",
            "negative",
            "nan",
            "junk",
            "http-date",
            "http-date-past",
            "yii2-reset",
            "reset-epoch",
            "retry-after-wins",
            "junk-falls-back-to-reset",
        ],
    )
    def test_parse(self, headers: dict[str, str], expected: float | None) -> None:
        """Retry-After (seconds or HTTP date), then X-Rate-Limit-Reset."""
        assert expected == retry_after_from_headers(httpx.Headers(headers), NOW)

    def test_rate_limit_error_carries_it(self) -> None:
        """The parsed wait is on the RateLimitError."""
        error = error_from_response(
            429,
            httpx.Headers({"Retry-After": "12"}),
            body(DOCUMENTED_ERRORS["rate_limit"]),
            now=NOW,
        )

        assert isinstance(error, RateLimitError)
        assert 12.0 == error.retry_after
        assert "12" == error.headers["retry-after"]
