"""The error boundary: which transport failures prove a request was never sent."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest
import yarl
from aiohttp.client_reqrep import ConnectionKey
from httpx_aiohttp.transport import map_aiohttp_exceptions
from multidict import CIMultiDict, CIMultiDictProxy

from decisiontelecom_viber import APIConnectionError, OutcomeUnknownError
from decisiontelecom_viber._transport import never_sent, translate_error


KEY = ConnectionKey("api.example.test", 443, True, True, None, None, None)

NEVER_SENT = [
    aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")),
    aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")),
    aiohttp.ClientConnectorSSLError(KEY, OSError(1, "handshake failed")),
    aiohttp.ClientProxyConnectionError(KEY, OSError(111, "proxy refused")),
    aiohttp.ConnectionTimeoutError("connect timed out"),
    aiohttp.ServerFingerprintMismatch(b"a", b"b", "api.example.test", 443),
]
MAYBE_SENT = [
    aiohttp.ServerDisconnectedError(),
    aiohttp.SocketTimeoutError("read timed out"),
    aiohttp.ClientPayloadError("response payload is not completed"),
    aiohttp.ClientOSError(104, "Connection reset by peer"),
    aiohttp.ClientConnectionResetError("reset"),
    aiohttp.ServerTimeoutError("timed out"),
    aiohttp.ClientResponseError(
        aiohttp.RequestInfo(
            yarl.URL("https://api.example.test/"),
            "POST",
            CIMultiDictProxy(CIMultiDict()),
        ),
        (),
        status=400,
        message="bad status line",
    ),
]


def mapped(error: Exception) -> BaseException:
    """What httpx-aiohttp turns *error* into (the class we actually receive)."""
    try:
        with map_aiohttp_exceptions():
            raise error
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize("error", NEVER_SENT, ids=lambda e: type(e).__name__)
def test_connect_failures_are_never_sent(error: Exception) -> None:
    """Failures before the connection was up: safe to retry, as raw or as mapped."""
    assert never_sent(error)
    assert never_sent(mapped(error))
    assert isinstance(translate_error(mapped(error), host="h"), APIConnectionError)


@pytest.mark.parametrize("error", MAYBE_SENT, ids=lambda e: type(e).__name__)
def test_failures_after_connecting_are_ambiguous(error: Exception) -> None:
    """httpx-aiohttp may call these ConnectError/ConnectTimeout; the cause decides."""
    assert not never_sent(error)
    assert not never_sent(mapped(error))
    assert isinstance(translate_error(mapped(error), host="h"), OutcomeUnknownError)


def test_disconnect_is_mapped_to_connect_timeout() -> None:
    """The trap this boundary exists for: a disconnect looks like a connect timeout."""
    assert isinstance(mapped(aiohttp.ServerDisconnectedError()), httpx.ConnectTimeout)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ConnectTimeout("slow connect"), True),
        (httpx.PoolTimeout("pool full"), True),
        (httpx.ProxyError("proxy"), True),
        (httpx.ReadTimeout("slow read"), False),
        (httpx.WriteTimeout("slow write"), False),
        (httpx.ReadError("reset"), False),
        (httpx.WriteError("broken pipe"), False),
        (httpx.RemoteProtocolError("disconnected"), False),
        (httpx.DecodingError("bad gzip"), False),
        (asyncio.TimeoutError(), False),
        (ConnectionResetError(104, "reset"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_plain_httpx_classes(error: Exception, expected: bool) -> None:
    """Without an aiohttp cause (httpx's own transport), the httpx class decides."""
    assert expected == never_sent(error)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (mapped(aiohttp.SocketTimeoutError("x")), "read timeout"),
        (mapped(aiohttp.ConnectionTimeoutError("x")), "connect timeout"),
        (httpx.ReadTimeout("x"), "read timeout"),
        (mapped(aiohttp.ServerDisconnectedError()), "ServerDisconnectedError"),
    ],
)
def test_descriptions_name_the_real_cause(error: Exception, text: str) -> None:
    """Messages describe what happened, not the misleading mapped class."""
    assert text in str(translate_error(error, host="api.example.test"))
