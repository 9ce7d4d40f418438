"""The outcome rule as tables: every HTTP status, every exception class.

The expectations here are written from the rule itself (docs/errors.md),
not from the code: a send is failed only when nothing was written or the
API refused it; retried only when it certainly was not processed; unknown
otherwise. The exception tables cover every exception class aiohttp and
httpx define, and fail when a new release adds one the table does not
place (as httpx's own test does for httpcore).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
from typing import Any

import aiohttp
import httpx
import pytest
import yarl
from aiohttp.client_reqrep import ConnectionKey
from httpx_aiohttp.transport import map_aiohttp_exceptions
from multidict import CIMultiDict, CIMultiDictProxy

import decisiontelecom_viber as dv
import decisiontelecom_viber.redis as dv_redis
from decisiontelecom_viber import SendOutcome
from decisiontelecom_viber._outcomes import Verdict, should_retry, verdict
from decisiontelecom_viber._transport import translate_error
from decisiontelecom_viber._wire import decode_send_response, decode_status_response
from decisiontelecom_viber.redis import SendRecord, SendState


NOW = 1_700_000_000.0
HEADERS = httpx.Headers({"Retry-After": "1"})
SUCCESS = json.dumps({"message_id": 7, "status": 1}).encode()

FAILED = Verdict.FAILED
RETRY = Verdict.RETRY_SAFE
UNKNOWN = Verdict.UNKNOWN


def api_body(status: int, code: int) -> bytes:
    return json.dumps(
        {"name": "Some Error", "message": "why", "code": code, "status": status}
    ).encode()


def expected(http_status: int, body: str) -> Verdict | None:
    """The rule, written out: None means the answer is a success."""
    if 200 <= http_status < 300:
        if body == "success":
            return None
        if body == "api-error":  # the error body says 200 too: its code decides
            return RETRY  # code 0 = rate limit (see the code table below)
        return UNKNOWN
    if http_status in (400, 401, 402, 403):
        return FAILED
    if http_status == 429:
        return RETRY
    if http_status in (500, 502, 503):
        # The API's own failure only when it says so in its error body.
        return RETRY if body == "api-error" else UNKNOWN
    if http_status >= 500:
        return UNKNOWN
    # Any other status (1xx, 3xx, other 4xx) is a refusal only when the API
    # says so in its own error body.
    return FAILED if body == "api-error" else UNKNOWN


def body_for(http_status: int, kind: str) -> bytes:
    return {
        "none": b"",
        "html": b"<html><h1>Gateway</h1></html>",
        "partial": b'{"message": "Endpoint request timed out"}',
        "api-error": api_body(http_status, 0),
        "success": SUCCESS,
    }[kind]


@pytest.mark.parametrize("kind", ["none", "html", "partial", "api-error", "success"])
def test_every_status_of_a_send(kind: str) -> None:
    """Each status 100-599, each kind of body: failed, retried or unknown."""
    wrong = []
    for http_status in range(100, 600):
        if kind == "success" and not 200 <= http_status < 300:
            continue
        try:
            decode_send_response(
                http_status, HEADERS, body_for(http_status, kind), now=NOW
            )
        except Exception as error:
            got: Verdict | None = verdict(error)
        else:
            got = None
        if got != expected(http_status, kind):
            wrong.append((http_status, got, expected(http_status, kind)))

    assert [] == wrong


@pytest.mark.parametrize(
    ("code", "judged"),
    [(0, RETRY), (1, FAILED), (2, RETRY), (3, FAILED), (17, FAILED)],
)
def test_an_error_body_with_http_200_is_read_by_its_code(
    code: int, judged: Verdict
) -> None:
    """The vendor's SDKs expect errors with HTTP 200: their code decides."""
    with pytest.raises(dv.APIError) as info:
        decode_send_response(200, HEADERS, api_body(200, code), now=NOW)

    assert judged is verdict(info.value)


@pytest.mark.parametrize("http_status", [404, 405, 409, 413, 422, 301, 307])
def test_an_error_body_on_another_status_is_a_refusal(http_status: int) -> None:
    """The API's own error body (Yii2's 404, say) says the request was refused."""
    with pytest.raises(dv.APIError) as info:
        decode_send_response(http_status, HEADERS, api_body(http_status, 0), now=NOW)

    assert FAILED is verdict(info.value)


@pytest.mark.parametrize(
    ("http_status", "cls"),
    [
        (504, dv.GatewayTimeoutError),
        (524, dv.GatewayTimeoutError),
        (598, dv.GatewayTimeoutError),
        (599, dv.GatewayTimeoutError),
        (520, dv.AmbiguousServerError),
        (522, dv.AmbiguousServerError),
        (501, dv.AmbiguousServerError),
        (505, dv.AmbiguousServerError),
    ],
)
def test_gateway_statuses_are_both_server_errors_and_unknown(
    http_status: int, cls: type[Exception]
) -> None:
    """Caught as ServerError or as OutcomeUnknownError; never resent by default."""
    with pytest.raises(cls) as info:
        decode_send_response(http_status, HEADERS, b"", now=NOW)

    assert isinstance(info.value, dv.ServerError)
    assert isinstance(info.value, dv.OutcomeUnknownError)
    assert not should_retry(info.value, idempotent=False, retry_unknown_outcome=False)
    assert should_retry(info.value, idempotent=True, retry_unknown_outcome=False)


def test_status_lookups_retry_whatever_may_be_transient() -> None:
    """A lookup is read-only: every unknown outcome is retried, refusals not."""
    retried = []
    for http_status in range(300, 600):
        try:
            decode_status_response(http_status, HEADERS, b"", now=NOW)
        except Exception as error:
            if should_retry(error, idempotent=True, retry_unknown_outcome=False):
                retried.append(http_status)

    assert not {400, 401, 402, 403} & set(retried)
    assert set(range(300, 600)) - {400, 401, 402, 403} == set(retried)


# -- exceptions -------------------------------------------------------------------

# Every exception class of aiohttp's client and of httpx, placed by the rule.
# "sent" means the request may have left; "never" that it provably did not.
AIOHTTP = {
    "ClientError": "sent",
    "ClientConnectionError": "sent",
    "ClientConnectionResetError": "sent",
    "ClientOSError": "sent",
    "ClientConnectorError": "never",
    "ClientConnectorDNSError": "never",
    "ClientConnectorSSLError": "never",
    "ClientConnectorCertificateError": "never",
    "ClientSSLError": "never",
    "ClientProxyConnectionError": "never",
    "UnixClientConnectorError": "never",
    "ConnectionTimeoutError": "never",
    "ClientHttpProxyError": "never",
    "ServerFingerprintMismatch": "never",
    "InvalidURL": "never",
    "InvalidUrlClientError": "never",
    "NonHttpUrlClientError": "never",
    "RedirectClientError": "sent",
    "InvalidUrlRedirectClientError": "sent",
    "NonHttpUrlRedirectClientError": "sent",
    "TooManyRedirects": "sent",
    "ClientPayloadError": "sent",
    "ClientResponseError": "sent",
    "ContentTypeError": "sent",
    "WSServerHandshakeError": "sent",
    "ServerConnectionError": "sent",
    "ServerDisconnectedError": "sent",
    "ServerTimeoutError": "sent",
    "SocketTimeoutError": "sent",
    "UploadAbortedError": "sent",
}
HTTPX = {
    "HTTPError": "sent",
    "RequestError": "sent",
    "TransportError": "sent",
    "TimeoutException": "sent",
    "ConnectTimeout": "never",
    "ReadTimeout": "sent",
    "WriteTimeout": "sent",
    "PoolTimeout": "never",
    "NetworkError": "sent",
    "ConnectError": "never",
    "ReadError": "sent",
    "WriteError": "sent",
    "CloseError": "sent",
    "ProtocolError": "sent",
    "LocalProtocolError": "sent",
    "RemoteProtocolError": "sent",
    "ProxyError": "never",
    "UnsupportedProtocol": "never",
    "DecodingError": "sent",
    "TooManyRedirects": "sent",
    "HTTPStatusError": "sent",
}


def subclasses(root: type[BaseException]) -> set[type[BaseException]]:
    found = {root}
    for sub in root.__subclasses__():
        found |= subclasses(sub)
    return found


KEY = ConnectionKey("api.example.test", 443, True, True, None, None, None)
SECRET = "Basic czNjcjN0LWFjY2Vzcy1rZXk="
REQUEST_INFO = aiohttp.RequestInfo(
    yarl.URL("https://api.example.test/v1/api/send-viber"),
    "POST",
    CIMultiDictProxy(CIMultiDict({"Authorization": SECRET})),
)


def bare(cls: type[BaseException]) -> BaseException:
    """An instance made without its constructor (their signatures all differ),
    with the attributes their ``__str__`` reads, request headers included."""
    error = cls.__new__(cls)
    fields = {
        "_conn_key": KEY,
        "_os_error": OSError(111, "refused"),
        "_certificate_error": OSError(1, "certificate verify failed"),
        "_path": "/run/api.sock",
        "status": 400,
        "message": "Invalid status line",
        "request_info": REQUEST_INFO,
        "history": (),
        "headers": None,
        "_url": yarl.URL("https://api.example.test/"),
        "_description": "bad URL",
    }
    for name, value in fields.items():
        with contextlib.suppress(AttributeError):
            object.__setattr__(error, name, value)
    return error


def test_the_tables_place_every_exception_class() -> None:
    """A new exception class in aiohttp or httpx fails here until it is placed."""
    aiohttp_classes = {
        cls.__name__
        for cls in subclasses(aiohttp.ClientError)
        if cls.__module__.startswith("aiohttp")
    }
    httpx_classes = {
        cls.__name__
        for cls in subclasses(httpx.HTTPError)
        if cls.__module__.startswith("httpx")
    }

    assert set(AIOHTTP) >= aiohttp_classes
    assert set(HTTPX) >= httpx_classes


PLACED_AIOHTTP_CLASSES = sorted(
    (c for c in subclasses(aiohttp.ClientError) if c.__name__ in AIOHTTP),
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize(
    "cls", PLACED_AIOHTTP_CLASSES, ids=[c.__name__ for c in PLACED_AIOHTTP_CLASSES]
)
def test_each_aiohttp_error_raw_and_as_httpx_aiohttp_maps_it(
    cls: type[BaseException],
) -> None:
    """The aiohttp cause decides, whatever httpx class httpx-aiohttp picked."""
    want = (
        dv.APIConnectionError
        if AIOHTTP[cls.__name__] == "never"
        else (dv.OutcomeUnknownError)
    )
    error = bare(cls)
    try:
        with map_aiohttp_exceptions():
            raise error
    except BaseException as mapped:
        seen = mapped

    assert isinstance(seen, httpx.HTTPError) or seen is error
    for given in (error, seen):
        translated = translate_error(given, host="api.example.test")
        assert isinstance(translated, want)
        assert cls.__name__ == translated.cause_type
        assert translated.__cause__ is None
        assert SECRET.split()[1] not in repr(translated)


@pytest.mark.parametrize("name", sorted(HTTPX), ids=str)
def test_each_httpx_error(name: str) -> None:
    """Without an aiohttp cause (a user's httpx client), the httpx class decides."""
    cls = getattr(httpx, name)
    want = dv.APIConnectionError if HTTPX[name] == "never" else dv.OutcomeUnknownError

    translated = translate_error(bare(cls), host="api.example.test")

    assert isinstance(translated, want)
    expected_verdict = RETRY if HTTPX[name] == "never" else UNKNOWN
    assert expected_verdict is verdict(translated)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (dv.ValidationError("text", "too long"), SendOutcome.FAILED),
        (dv.ConfigurationError("no key"), SendOutcome.FAILED),
        (dv.ClientClosedError(), SendOutcome.FAILED),
        (dv.DeadlineExceededError("the rate limiter"), SendOutcome.FAILED),
        (dv.LimiterError("a custom limiter's bug"), SendOutcome.FAILED),
        (dv.WriteRefusedError("the journal is full"), SendOutcome.FAILED),
        (dv.APIConnectionError("refused"), SendOutcome.FAILED),
        (dv.OutcomeUnknownError("read timeout"), SendOutcome.UNKNOWN),
        (ValueError("a bug"), SendOutcome.UNKNOWN),
        (KeyError("a limiter's bug"), SendOutcome.UNKNOWN),
        (asyncio.CancelledError(), SendOutcome.UNKNOWN),
        (None, SendOutcome.SENT),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, SendOutcome) else None,
)
def test_outcome_of_exceptions_the_sdk_did_not_classify(
    error: BaseException | None, outcome: SendOutcome
) -> None:
    """Only the SDK's own never-sent and refused errors are failed."""
    assert outcome is SendOutcome.of(error)


# -- pickling -----------------------------------------------------------------------

RECORD = SendRecord("otp:1", SendState.PENDING, None, 1.0, 1.0, 2.0)
RECEIPT = dv.MessageReceipt(message_id=5, status=dv.MessageStatus(6))
SAMPLES: dict[str, BaseException] = {
    "ViberError": dv.ViberError("boom"),
    "ConfigurationError": dv.ConfigurationError("no key"),
    "ValidationError": dv.ValidationError("text", "too long"),
    "ClientClosedError": dv.ClientClosedError(),
    "DeadlineExceededError": dv.DeadlineExceededError("the rate limiter"),
    "LimiterError": dv.LimiterError("the rate limiter failed (KeyError)"),
    "WriteRefusedError": dv.WriteRefusedError("the record due before writing failed"),
    "StatusTimeoutError": dv.StatusTimeoutError(5, 30.0, RECEIPT),
    "APIError": dv.APIError("Not Found", "no", code=0, status=404, http_status=404),
    "AuthenticationError": dv.AuthenticationError("Unauthorized", "", http_status=401),
    "InvalidParameterError": dv.InvalidParameterError(
        "Invalid Parameter: text", "bad", param="text", code=1, http_status=400
    ),
    "InsufficientBalanceError": dv.InsufficientBalanceError(
        "Topup balance is required", "empty", code=3, http_status=402
    ),
    "RateLimitError": dv.RateLimitError(
        "Too Many Requests",
        "slow down",
        retry_after=2.5,
        code=0,
        http_status=429,
        headers={"Retry-After": "2.5"},
    ),
    "ServerError": dv.ServerError("Internal server error", "", http_status=500),
    "AmbiguousServerError": dv.AmbiguousServerError("HTTP 520", "", http_status=520),
    "GatewayTimeoutError": dv.GatewayTimeoutError(
        "Gateway Timeout", "", http_status=504
    ),
    "APIConnectionError": dv.APIConnectionError("could not reach it"),
    "OutcomeUnknownError": dv.OutcomeUnknownError("read timeout"),
    "UnexpectedResponseError": dv.UnexpectedResponseError(
        "not json", http_status=200, body="<html>"
    ),
    "CallbackError": dv.CallbackError("not JSON"),
    "RedisUnavailableError": dv_redis.RedisUnavailableError(
        "claim", ConnectionError("refused")
    ),
    "PossibleDuplicateError": dv_redis.PossibleDuplicateError("otp:1", RECORD, "why"),
    "SendInProgressError": dv_redis.SendInProgressError("otp:1", RECORD),
    "SendUnresolvedError": dv_redis.SendUnresolvedError("otp:1", RECORD),
}


def public_exceptions() -> set[str]:
    names = set()
    for module in (dv, dv_redis):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                names.add(name)
    return names


def test_every_public_exception_has_a_pickling_sample() -> None:
    """A new public exception must be added to the pickling test."""
    assert public_exceptions() == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES), ids=str)
def test_every_public_exception_pickles(name: str) -> None:
    """Job queues (arq, Celery) pickle a failed job's exception: type, text, data."""
    error = SAMPLES[name]
    error.cause_type = "ServerDisconnectedError"  # type: ignore[attr-defined]

    copy: Any = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes

    assert type(error) is type(copy)
    assert str(error) == str(copy)
    assert error.args == copy.args
    assert vars(error) == vars(copy)
