"""Every exception the SDK raises.

```
ViberError
├── ConfigurationError      bad client settings, e.g. no access key (ValueError)
├── ValidationError         invalid message or argument; nothing sent (ValueError)
├── ClientClosedError       closed before the request was written (RuntimeError)
├── DeadlineExceededError   the deadline passed before writing (TimeoutError)
├── LimiterError            a custom rate limiter failed; nothing sent
├── WriteRefusedError       the record due before writing failed; nothing sent
├── StatusTimeoutError      wait_for_status saw no final status in time (TimeoutError)
├── APIError                the API answered with an error
│   ├── AuthenticationError         401/403: wrong or missing access key
│   ├── InvalidParameterError       code 1 / 400: the API refused a field
│   ├── InsufficientBalanceError    code 3 / 402: top up the balance
│   ├── RateLimitError              code 0 / 429: too many requests
│   └── ServerError                 code 2, or 500/502/503 with the API's body
│       └── AmbiguousServerError    any other 5xx: also an OutcomeUnknownError
│           └── GatewayTimeoutError     504, 524, 598, 599
├── APIConnectionError      the request never reached the API; safe to retry
├── OutcomeUnknownError     the request may have reached the API; no usable answer
│   ├── AmbiguousServerError
│   └── UnexpectedResponseError     an answer the SDK does not understand
└── CallbackError           a callback body is malformed (also ValueError)
```

Exceptions carry data only. What each one means for a send (failed, retried,
or unknown) is decided in one place, `_outcomes.verdict`. Errors from httpx
and aiohttp are translated into this tree at one boundary
(the exchanges of `_transport`); the foreign exception is never chained, because
aiohttp's carry the request headers (and so the access key): its class name
is kept in `ViberError.cause_type` instead.

Every exception pickles with its type, message and attributes (job queues
such as arq and Celery pickle a failed job's exception).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


__all__ = [
    "APIConnectionError",
    "APIError",
    "AmbiguousServerError",
    "AuthenticationError",
    "CallbackError",
    "ClientClosedError",
    "ConfigurationError",
    "DeadlineExceededError",
    "GatewayTimeoutError",
    "InsufficientBalanceError",
    "InvalidParameterError",
    "LimiterError",
    "OutcomeUnknownError",
    "RateLimitError",
    "ServerError",
    "StatusTimeoutError",
    "UnexpectedResponseError",
    "ValidationError",
    "ViberError",
    "WriteRefusedError",
]


def _rebuild(
    cls: type[ViberError], args: tuple[Any, ...], state: dict[str, Any]
) -> Any:
    """Unpickle an exception without calling its ``__init__``."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ViberError(Exception):
    """Base class of every exception this SDK raises.

    Attributes:
        cause_type: The class name of the foreign exception (from aiohttp,
            httpx...) this error was translated from, if any. The foreign
            exception itself is not chained: aiohttp's carry the request
            headers, and so the access key.
    """

    cause_type: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the message and the attributes, whatever the
        # subclass's constructor takes.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


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
    """The client was closed before this call's request was written.

    Nothing was sent, so the call is safe to repeat with a new client.
    Requests already written when `AsyncViberClient.aclose` was called finish
    normally (or end in `OutcomeUnknownError`), never in this error.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "this AsyncViberClient is closed; create a new one")


class DeadlineExceededError(ViberError, TimeoutError):
    """The call's deadline passed before its request was written.

    Raised instead of sending a request that could not finish in time: the
    rate limiter, a 429 pause or a retry's backoff used up
    `RetryPolicy.timeout`. Nothing was sent by this attempt (and no earlier
    attempt of the call may have been processed), so it is safe to send
    again.

    Attributes:
        waited: What the time went on (``"the rate limiter"``...).
    """

    def __init__(self, waited: str) -> None:
        super().__init__(
            f"the call's deadline passed while waiting for {waited}; nothing was sent"
        )
        self.waited = waited


class LimiterError(ViberError):
    """The rate limiter failed (a bug in a custom `Limiter`); nothing was sent.

    The limiter's exception is the ``__cause__`` (a limiter never sees the
    request, so it holds no credentials).
    """


class WriteRefusedError(ViberError):
    """What must be recorded before a request is written could not be; nothing was sent.

    A `SendOnceGuard` marks its record "on the wire" in Redis, the bulk
    CLI's journal notes "writing", and a ``send_messages(on_write=...)``
    callback runs, each immediately before a request is written: when that
    fails, the request is not written. Its failure is the ``__cause__``.
    """


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


class OutcomeUnknownError(ViberError):
    """The request may have reached the API, but no usable answer came back.

    Raised for a read timeout, a connection broken after the request was
    written, a gateway's 5xx other than 500/502/503, the call's deadline
    passing while the answer was awaited, or an answer the SDK does not
    understand. For a send, the message may or may not have been sent (and
    charged): the API has no idempotency key, so sends failing this way are
    not retried unless `RetryPolicy.retry_unknown_outcome` is set.

    Attributes:
        reason: What happened, in a few words.
    """

    def __init__(self, reason: str, *, message: str | None = None) -> None:
        super().__init__(
            message
            or f"no usable answer from the API ({reason}); "
            "the request may or may not have been processed"
        )
        self.reason = reason


class APIError(ViberError):
    """The API answered with an error.

    Subclasses that need one more attribute take it as one more keyword.

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
        # Cooperative: for an AmbiguousServerError the next class is
        # OutcomeUnknownError, which words this as the unknown outcome's reason.
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

    def __init__(self, *args: Any, param: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
        self, *args: Any, retry_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """The API or a gateway in front of it failed (a 5xx; see subclasses).

    A plain `ServerError` — 500, 502 or 503 with the API's own error body,
    or its code 2 — means the request was not processed: it is retried, for
    sends too.
    """


class AmbiguousServerError(ServerError, OutcomeUnknownError):
    """A 5xx that is not the API's own failure: the request may have been processed.

    Gateways and CDNs answer 504, Cloudflare's 520-527, 598, 599 and the
    like — and 500, 502, 503 pages of their own — when the API did not
    answer them in time, or answered something they could not use (nginx's
    502 when its upstream closed after reading the request): the API may
    have processed the request. For sends
    this is an unknown outcome as well as a server error: retried for status
    lookups, and for sends only when `RetryPolicy.retry_unknown_outcome` is
    set.
    """


class GatewayTimeoutError(AmbiguousServerError):
    """A gateway gave up waiting for the API (504, 524, 598, 599)."""


class APIConnectionError(ViberError):
    """The request never reached the API: refused, DNS, TLS, connect or pool timeout.

    Nothing was sent, so it is always safe to retry.
    """


class UnexpectedResponseError(OutcomeUnknownError):
    """The API answered something the SDK does not understand.

    A 2xx answer whose body is not what the API documents, or a status the
    SDK does not know (a redirect, a 404 or 408 without an API error body...):
    the request reached something, which may have processed it.

    Attributes:
        http_status: The HTTP status code of the response.
        body: The response body as text, truncated.
    """

    def __init__(self, reason: str, *, http_status: int, body: str) -> None:
        super().__init__(reason)
        self.http_status = http_status
        self.body = body


class CallbackError(ViberError, ValueError):
    """A callback body is malformed: not JSON, a missing field, a wrong type.

    Attributes:
        reason: What is wrong, in a few words (safe to send back in a 400).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid callback: {reason}")
        self.reason = reason
