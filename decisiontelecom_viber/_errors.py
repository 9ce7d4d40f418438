"""Every exception the SDK raises.

```
ViberError
├── ConfigurationError      bad client settings, e.g. no access key (ValueError)
├── ValidationError         invalid message or argument; nothing sent (ValueError)
├── ClientClosedError       the client was closed (RuntimeError)
├── StatusTimeoutError      wait_for_status saw no final status in time (TimeoutError)
├── APIError                the API answered with an error
│   ├── AuthenticationError         401/403: wrong or missing access key
│   ├── InvalidParameterError       code 1 / 400: the API refused a field
│   ├── InsufficientBalanceError    code 3 / 402: top up the balance
│   ├── RateLimitError              code 0 / 429: too many requests
│   └── ServerError                 code 2 / 500, and 502/503/504 from a gateway
│       └── GatewayTimeoutError     504: also an OutcomeUnknownError
├── APIConnectionError      the request never reached the API; safe to retry
├── OutcomeUnknownError     the request may have reached the API; no usable answer
│   ├── GatewayTimeoutError
│   └── UnexpectedResponseError     a 2xx answer whose body is not understood
└── CallbackError           a callback body is malformed (also ValueError)
```

Which of them are retried is decided in one place, `_retry.should_retry`, not
here: exceptions carry data only. Errors from httpx and aiohttp are translated
into this tree at one boundary (`_transport.translate_errors`), with the
original kept as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping


__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "CallbackError",
    "ClientClosedError",
    "ConfigurationError",
    "GatewayTimeoutError",
    "InsufficientBalanceError",
    "InvalidParameterError",
    "OutcomeUnknownError",
    "RateLimitError",
    "ServerError",
    "StatusTimeoutError",
    "UnexpectedResponseError",
    "ValidationError",
    "ViberError",
]


class ViberError(Exception):
    """Base class of every exception this SDK raises."""


class ConfigurationError(ViberError, ValueError):
    """The client was configured wrongly (for example, no access key)."""


class ValidationError(ViberError, ValueError):
    """A message or argument is invalid; nothing was sent.

    Attributes:
        field: The name of the offending field, as the Python attribute name
            (``"text"``, ``"image_url"``, ...).
        reason: What is wrong with it. Never contains the value itself, so
            phone numbers and message texts stay out of logs.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ClientClosedError(ViberError, RuntimeError):
    """The client was closed; create a new one."""

    def __init__(self) -> None:
        super().__init__("this AsyncViberClient is closed; create a new one")


class StatusTimeoutError(ViberError, TimeoutError):
    """`AsyncViberClient.wait_for_status` ran out of time before a final status.

    Attributes:
        message_id: The message waited for.
        receipt: The last receipt seen (a `MessageReceipt`), or None if no
            lookup succeeded.
    """

    def __init__(self, message_id: int, timeout: float, receipt: object) -> None:
        status = getattr(receipt, "status", None)
        last = f"last status {status.name}" if status is not None else "no status seen"
        super().__init__(
            f"message {message_id} has no final status after {timeout:g} s ({last})"
        )
        self.message_id = message_id
        self.receipt = receipt


class APIError(ViberError):
    """The API answered with an error.

    Attributes:
        name: The ``name`` of the error body (``"Too Many Requests"``,
            ``"Invalid Parameter: text"``...), or the HTTP reason when the
            body was not an API error.
        message: The ``message`` of the error body.
        code: DecisionTelecom's error code (``code`` in the body), if any.
        status: The HTTP-style ``status`` inside the body, if any.
        http_status: The HTTP status code of the response (may be 200: the
            API is known to send errors with HTTP 200).
        body: The response body as text, truncated, for diagnosis.
        headers: The response headers.
    """

    def __init__(
        self,
        name: str,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        http_status: int,
        body: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        details = [f"HTTP {http_status}"]
        if code is not None:
            details.insert(0, f"code {code}")
        text = f"{name}: {message}" if message else name
        super().__init__(f"{text} ({', '.join(details)})")
        self.name = name
        self.message = message
        self.code = code
        self.status = status
        self.http_status = http_status
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})


class AuthenticationError(APIError):
    """The access key was refused (HTTP 401 or 403)."""


class InvalidParameterError(APIError):
    """The API refused a request field (code 1, HTTP 400).

    Attributes:
        param: The wire name of the refused field, parsed from the error name
            ``"Invalid Parameter: <field>"``; None when the API did not say.
    """

    def __init__(
        self,
        name: str,
        message: str,
        *,
        param: str | None = None,
        code: int | None = None,
        status: int | None = None,
        http_status: int,
        body: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            name,
            message,
            code=code,
            status=status,
            http_status=http_status,
            body=body,
            headers=headers,
        )
        self.param = param


class InsufficientBalanceError(APIError):
    """The account balance is empty (code 3, HTTP 402)."""


class RateLimitError(APIError):
    """Too many requests (code 0, HTTP 429).

    Attributes:
        retry_after: Seconds the server asked to wait (from ``Retry-After`` or
            ``X-Rate-Limit-Reset``), or None when it did not say.
    """

    def __init__(
        self,
        name: str,
        message: str,
        *,
        retry_after: float | None = None,
        code: int | None = None,
        status: int | None = None,
        http_status: int,
        body: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            name,
            message,
            code=code,
            status=status,
            http_status=http_status,
            body=body,
            headers=headers,
        )
        self.retry_after = retry_after


class ServerError(APIError):
    """The API or a gateway in front of it failed (500, 502, 503, 504)."""


class APIConnectionError(ViberError):
    """The request never reached the API: refused, DNS, TLS, connect or pool timeout.

    Nothing was sent, so it is always safe to retry.
    """


class OutcomeUnknownError(ViberError):
    """The request may have reached the API, but no usable answer came back.

    Raised for a read timeout, a connection broken after the request was
    written, a 504 from a gateway, or a 2xx answer that cannot be parsed. For
    a send, the message may or may not have been sent (and charged): the API
    has no idempotency key, so sends failing this way are not retried unless
    `RetryPolicy.retry_unknown_outcome` is set.

    Attributes:
        reason: What happened, in a few words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"no usable answer from the API ({reason}); "
            "the request may or may not have been processed"
        )
        self.reason = reason


class UnexpectedResponseError(OutcomeUnknownError):
    """The API answered 2xx, but the body is not what the API documents.

    Attributes:
        http_status: The HTTP status code of the response.
        body: The response body as text, truncated.
    """

    def __init__(self, reason: str, *, http_status: int, body: str) -> None:
        super().__init__(reason)
        self.http_status = http_status
        self.body = body


class GatewayTimeoutError(ServerError, OutcomeUnknownError):
    """A gateway gave up waiting for the API (HTTP 504).

    The API may still have processed the request, so for sends this is an
    ambiguous outcome as well as a server error: it is retried for status
    lookups, and for sends only when `RetryPolicy.retry_unknown_outcome` is set.
    """

    def __init__(
        self,
        name: str,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        http_status: int,
        body: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # OutcomeUnknownError.__init__ would replace the message; only its
        # attribute is needed.
        ServerError.__init__(
            self,
            name,
            message,
            code=code,
            status=status,
            http_status=http_status,
            body=body,
            headers=headers,
        )
        self.reason = "gateway timeout (HTTP 504)"


class CallbackError(ViberError, ValueError):
    """A callback body is malformed: not JSON, a missing field, a wrong type.

    Attributes:
        reason: What is wrong, in a few words (safe to send back in a 400).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid callback: {reason}")
        self.reason = reason
