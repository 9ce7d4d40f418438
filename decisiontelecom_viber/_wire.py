"""The wire format: request bodies, and answers turned into values or errors.

Pure functions, no I/O. The rules follow what is known of the API
(docs/errors.md has the full table):

* An answer is an API error when its body is a JSON object with ``name``,
  ``message``, ``code`` and ``status`` and no ``message_id``, whatever the
  HTTP status: the vendor SDKs expect errors with HTTP 200, and the server
  (a Yii2 application) may as well send the matching 4xx/5xx.
* Which error an answer is follows one table (`error_class`): refusals
  (400/401/402/403/429), failures that processed nothing (500/502/503), and
  everything that may have been processed (any other 5xx, and any status
  the SDK does not know that carries no API error body).
* A 2xx answer that is neither an error nor the documented success body is an
  `UnexpectedResponseError`: the request may have been processed.
* Parsing is tolerant: extra keys, IDs as numeric strings, unknown status
  codes and the trailing comma of the documentation's own example are fine.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from ._constants import MAX_ERROR_BODY_CHARS
from ._enums import MessageStatus, SmsStatus
from ._errors import (
    AmbiguousServerError,
    APIError,
    AuthenticationError,
    GatewayTimeoutError,
    InsufficientBalanceError,
    InvalidParameterError,
    RateLimitError,
    ServerError,
    UnexpectedResponseError,
)
from ._models import MessageReceipt, ViberMessage


__all__ = [
    "decode_send_response",
    "decode_status_response",
    "encode_json",
    "encode_message",
    "error_from_response",
    "retry_after_from_headers",
    "retry_after_header",
]

_ERROR_KEYS = frozenset({"name", "message", "code", "status"})
_INVALID_PARAMETER = re.compile(r"^\s*Invalid Parameter:\s*(?P<param>\S.*?)\s*$")
_TRAILING_COMMA = re.compile(rb",(\s*[}\]])")
# A reset header above this is an epoch timestamp, not a number of seconds.
_EPOCH_THRESHOLD = 1_000_000_000

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Encode a request payload as compact UTF-8 JSON."""
    return _dumps(payload).encode()


def encode_message(message: ViberMessage) -> bytes:
    """Encode *message* as the ``send-viber`` request body."""
    return _dumps(message.to_payload()).encode()


def _loads(body: bytes) -> Any:
    """Parse JSON, forgiving a trailing comma (the docs' own example has one).

    Raises ValueError for any unusable body, one nested past the recursion
    limit included.
    """
    try:
        try:
            return json.loads(body)
        except ValueError:
            if b"," not in body:
                raise
            return json.loads(_TRAILING_COMMA.sub(rb"\1", body))
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None


def _as_int(value: Any) -> int | None:
    """Return *value* as an int if it is an int or a string of ASCII digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        digits = value.strip()
        # str.isdigit() also accepts "²", which int() refuses; int() also
        # refuses digit strings past Python's int-to-str limit.
        if digits.isascii() and digits.isdigit():
            try:
                return int(digits)
            except ValueError:
                return None
    return None


def _body_text(body: bytes) -> str:
    return body[:MAX_ERROR_BODY_CHARS].decode("utf-8", "replace")


def retry_after_header(headers: Mapping[str, str], now: float) -> float | None:
    """``Retry-After`` in seconds (seconds, or an HTTP date compared with *now*).

    Negative, infinite and unparseable values are ignored (None).
    """
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _parse_seconds(raw)
    if seconds is None:
        try:
            seconds = parsedate_to_datetime(raw.strip()).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = max(seconds, 0.0)
    return seconds


def retry_after_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asked to wait, or None.

    ``Retry-After`` wins (`retry_after_header`); then Yii2's
    ``X-Rate-Limit-Reset`` (seconds until the allowance refills; a value that
    looks like a Unix time is treated as one). Negative, infinite and
    unparseable values are ignored.
    """
    asked = retry_after_header(headers, now)
    if asked is not None:
        return asked
    raw = headers.get("x-rate-limit-reset")
    if raw is not None:
        seconds = _parse_seconds(raw)
        if seconds is not None:
            if seconds > _EPOCH_THRESHOLD:
                return max(seconds - now, 0.0)
            return seconds
    return None


def _parse_seconds(raw: str) -> float | None:
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return None
    return seconds


# Statuses the API's own errors use, each refused for a known reason.
_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidParameterError,
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: AuthenticationError,
    429: RateLimitError,
}
# The API's own failures: Yii2 answers an unhandled error with its error
# body (and 500). Not processed, so retried — but only with that body: the
# same statuses from a gateway (nginx's 502 when its upstream closed after
# reading the request) may follow the API's processing.
_API_FAILURES = frozenset({500, 502, 503})
# A gateway's "the origin did not answer in time": 504, Cloudflare's 524,
# and the 598/599 network timeouts some proxies use.
_GATEWAY_TIMEOUTS = frozenset({504, 524, 598, 599})
_BY_CODE: dict[int, type[APIError]] = {
    0: RateLimitError,
    1: InvalidParameterError,
    2: ServerError,
    3: InsufficientBalanceError,
}


def error_class(
    status: int, code: int | None, *, api_error: bool
) -> type[APIError] | type[UnexpectedResponseError]:
    """The error an answer is, by its status and whether it is an API error.

    This is the HTTP side of the outcome rule (`_outcomes`):

    * 400/401/402/403 and 429 are refusals, whatever the body says.
    * 500/502/503 with the API's error body are its own failures, which did
      not process the request (`ServerError`, retried).
    * Any other 5xx (504, Cloudflare's 520-527, 598..., and 500/502/503
      without the API's body, from a gateway) may have been processed:
      `AmbiguousServerError` (`GatewayTimeoutError` for the timeouts).
    * Any other status is the API's own refusal only with a full API error
      body; without one (a redirect, a proxy's 404 page) nobody can say what
      happened: `UnexpectedResponseError`.
    * A 2xx answer carrying an API error body is classified by its ``code``.

    Args:
        status: The ``status`` of an API error body when it is an HTTP
            error status, else the HTTP status.
        code: The ``code`` of an API error body, if any.
        api_error: Whether the body is a full API error object (``name``,
            ``message``, ``code`` and ``status``).
    """
    known = _BY_STATUS.get(status)
    if known is not None:
        return known
    if status in _API_FAILURES and api_error:
        return ServerError
    if status >= 500:
        return (
            GatewayTimeoutError if status in _GATEWAY_TIMEOUTS else AmbiguousServerError
        )
    if not api_error:
        return UnexpectedResponseError
    if 200 <= status < 300 and code is not None:
        return _BY_CODE.get(code, APIError)
    return APIError


def _error_body(payload: Any, http_status: int) -> dict[str, Any] | None:
    """*payload* if it is an API error object, else None."""
    if not isinstance(payload, dict) or "message_id" in payload:
        return None
    if payload.keys() >= _ERROR_KEYS:
        return payload
    # Off the 2xx path a partial body (only name and status, as a 401 may
    # have) is still the server's own explanation.
    if http_status >= 300 and ("name" in payload or "message" in payload):
        return payload
    return None


def error_from_response(
    http_status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    payload: Any = None,
) -> APIError | UnexpectedResponseError | None:
    """Return the API error this answer carries, or None if it is not one.

    Every non-2xx answer is an error. *payload* is the parsed body when the
    caller has already parsed it.
    """
    if payload is None:
        payload = _loads_or_none(body)
    if not 200 <= http_status < 300:
        return _non_2xx_error(http_status, headers, body, now=now, payload=payload)
    error_body = _error_body(payload, http_status)
    if error_body is None:
        return None
    return _api_error(http_status, headers, body, error_body, now=now)


def _loads_or_none(body: bytes) -> Any:
    try:
        return _loads(body) if body.strip() else None
    except ValueError:
        return None


def _api_error(
    http_status: int,
    headers: Mapping[str, str],
    body: bytes,
    error_body: dict[str, Any] | None,
    *,
    now: float,
) -> APIError | UnexpectedResponseError:
    if error_body is not None:
        name = str(error_body.get("name") or _REASONS.get(http_status, "Error"))
        message = str(error_body.get("message") or "")
        code = _as_int(error_body.get("code"))
        status = _as_int(error_body.get("status"))
    else:
        name = _REASONS.get(http_status, f"HTTP {http_status}")
        message = "the response body is not an API error object"
        code = None
        status = None
    full = error_body is not None and error_body.keys() >= _ERROR_KEYS
    # The error body's own status decides — but not over a gateway's 5xx:
    # a 504 page shaped like the API's error says nothing of the API.
    gateway = http_status >= 500 and http_status not in _API_FAILURES
    effective = (
        status
        if full and not gateway and status is not None and 400 <= status <= 599
        else http_status
    )
    found = error_class(effective, code, api_error=full)
    text = _body_text(body)
    if not issubclass(found, APIError):
        return UnexpectedResponseError(
            f"HTTP {http_status} without an API error body",
            http_status=http_status,
            body=text,
        )
    cls: type[APIError] = found
    common: dict[str, Any] = {
        "code": code,
        "status": status,
        "http_status": http_status,
        "body": text,
        "headers": headers,
    }
    if cls is RateLimitError:
        return RateLimitError(
            name,
            message,
            retry_after=retry_after_from_headers(headers, now),
            **common,
        )
    if cls is InvalidParameterError:
        match = _INVALID_PARAMETER.match(name)
        return InvalidParameterError(
            name, message, param=match.group("param") if match else None, **common
        )
    return cls(name, message, **common)


def _non_2xx_error(
    http_status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    payload: Any = None,
) -> APIError | UnexpectedResponseError:
    if payload is None:
        payload = _loads_or_none(body)
    if isinstance(payload, dict) and "message_id" in payload:
        # An error status around a message ID: the message may well have
        # been accepted. Nobody can say; never resend it blindly.
        return UnexpectedResponseError(
            f"HTTP {http_status} with a message_id in the body",
            http_status=http_status,
            body=_body_text(body),
        )
    error_body = _error_body(payload, http_status)
    return _api_error(http_status, headers, body, error_body, now=now)


def _parse_2xx(
    http_status: int, headers: Mapping[str, str], body: bytes, *, now: float
) -> dict[str, Any]:
    """Parse a 2xx body into a dict, raising the API error it may carry."""
    try:
        payload = _loads(body)
    except ValueError:
        raise UnexpectedResponseError(
            "the 2xx response body is not JSON",
            http_status=http_status,
            body=_body_text(body),
        ) from None
    if isinstance(payload, dict) and "message_id" in payload:
        return payload
    error = error_from_response(http_status, headers, body, now=now, payload=payload)
    if error is not None:
        raise error
    raise UnexpectedResponseError(
        "the 2xx response has no message_id",
        http_status=http_status,
        body=_body_text(body),
    )


def decode_send_response(
    http_status: int, headers: Mapping[str, str], body: bytes, *, now: float
) -> int:
    """Return the message ID of a ``send-viber`` answer, or raise its error.

    Raises:
        APIError: The answer is an API error (or a non-2xx status).
        UnexpectedResponseError: A 2xx answer without a usable ``message_id``.
    """
    if 200 <= http_status < 300:
        payload = _parse_2xx(http_status, headers, body, now=now)
        message_id = _as_int(payload["message_id"])
        if message_id is None:
            raise UnexpectedResponseError(
                "message_id is not an integer",
                http_status=http_status,
                body=_body_text(body),
            )
        return message_id
    raise _non_2xx_error(http_status, headers, body, now=now)


def decode_status_response(
    http_status: int, headers: Mapping[str, str], body: bytes, *, now: float
) -> MessageReceipt:
    """Return the receipt of a ``receive-viber`` answer, or raise its error.

    Raises:
        APIError: The answer is an API error (or a non-2xx status).
        UnexpectedResponseError: A 2xx answer without a usable receipt.
    """
    if not 200 <= http_status < 300:
        raise _non_2xx_error(http_status, headers, body, now=now)
    payload = _parse_2xx(http_status, headers, body, now=now)
    message_id = _as_int(payload.get("message_id"))
    status = _as_int(payload.get("status"))
    if message_id is None or status is None:
        raise UnexpectedResponseError(
            "the status response lacks an integer message_id or status",
            http_status=http_status,
            body=_body_text(body),
        )
    sms_id = _as_int(payload.get("sms_message_id"))
    sms_status = _as_int(payload.get("sms_message_status"))
    return MessageReceipt(
        message_id=message_id,
        status=MessageStatus(status),
        sms_message_id=sms_id,
        sms_message_status=SmsStatus(sms_status) if sms_status is not None else None,
    )
