"""HTTP exchange, and the one boundary where httpx and aiohttp errors become ours.

The default transport is httpx over aiohttp (`httpx_aiohttp.AiohttpTransport`),
chosen by measurement: httpx's own pool scans every connection on each
request and burns a core at bulk rates (docs/bulk.md has the figures). When
the SDK builds the transport itself it calls it directly, skipping the
`httpx.AsyncClient` machinery it does not use (auth flows, redirects,
cookies, event hooks); a user's own `httpx.AsyncClient` is used through its
public ``send``.

httpx-aiohttp maps *every* aiohttp connection error, including a server
disconnect after the request was written, to ``httpx.ConnectError`` or
``httpx.ConnectTimeout``. Whether a request "never reached the API" is
therefore decided from the aiohttp cause when there is one, and only
otherwise from the httpx class (`never_sent`).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from ._errors import APIConnectionError, OutcomeUnknownError, ViberError


__all__ = [
    "ClientExchange",
    "Exchange",
    "TransportExchange",
    "build_default_transport",
    "environment_proxy",
    "never_sent",
    "translate_error",
]

# Errors of the exchange that the boundary translates. Anything else (a bug,
# cancellation) propagates untouched.
TRANSLATED_ERRORS: tuple[type[BaseException], ...] = (
    httpx.RequestError,
    aiohttp.ClientError,
    OSError,  # includes TimeoutError and asyncio.TimeoutError on 3.11+
    asyncio.TimeoutError,
)


class Exchange(Protocol):
    """Sends one request and returns (status, headers, body)."""

    async def __call__(
        self, request: httpx.Request
    ) -> tuple[int, httpx.Headers, bytes]:
        """Send *request* and read the whole answer."""

    async def aclose(self) -> None:
        """Release connections, if this exchange owns them."""


class TransportExchange:
    """Sends through a transport the SDK built and owns."""

    __slots__ = ("_transport",)

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def __call__(
        self, request: httpx.Request
    ) -> tuple[int, httpx.Headers, bytes]:
        """Send *request* and read the whole answer."""
        response = await self._transport.handle_async_request(request)
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        return response.status_code, response.headers, body

    async def aclose(self) -> None:
        """Close the transport and its connections."""
        await self._transport.aclose()


class ClientExchange:
    """Sends through a user's `httpx.AsyncClient`, which the SDK does not close."""

    __slots__ = ("_client",)

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def __call__(
        self, request: httpx.Request
    ) -> tuple[int, httpx.Headers, bytes]:
        """Send *request* with ``client.send`` and return the answer."""
        response = await self._client.send(request)
        return response.status_code, response.headers, response.content

    async def aclose(self) -> None:
        """Do nothing: the user owns the client."""


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``NO_PROXY``...) sets for *url*."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy


def build_default_transport(
    *,
    verify: ssl.SSLContext | str | bool,
    max_connections: int,
    keepalive_expiry: float,
    proxy: str | httpx.Proxy | None,
) -> httpx.AsyncBaseTransport:
    """Build the default transport: httpx over aiohttp."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )
    transport: httpx.AsyncBaseTransport = AiohttpTransport(
        verify=verify,
        limits=limits,
        proxy=httpx.Proxy(proxy) if isinstance(proxy, str) else proxy,
    )
    return transport


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _aiohttp_cause(error: BaseException) -> BaseException | None:
    for cause in _causes(error):
        if isinstance(cause, aiohttp.ClientError):
            return cause
    return None


def never_sent(error: BaseException) -> bool:
    """Whether the failed exchange provably never delivered the request.

    True for failures to connect (refused, DNS, TLS handshake, proxy), connect
    and pool timeouts. False for everything after the connection was up
    (read timeouts, disconnects, resets, garbled answers): the server may have
    received and processed the request.
    """
    cause = _aiohttp_cause(error)
    if cause is not None:
        return isinstance(
            cause,
            (
                aiohttp.ClientConnectorError,  # refused, DNS, TLS, proxy connect
                aiohttp.ConnectionTimeoutError,  # connect or pool timeout
                aiohttp.ClientHttpProxyError,  # the proxy refused the tunnel
                aiohttp.ServerFingerprintMismatch,  # TLS pin check, before sending
                aiohttp.InvalidURL,
                aiohttp.NonHttpUrlClientError,
            ),
        )
    return isinstance(
        error,
        (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.ProxyError,
            httpx.UnsupportedProtocol,
        ),
    )


def _describe(error: BaseException) -> str:
    # The httpx class says little when httpx-aiohttp chose it; the aiohttp
    # cause, when there is one, says what happened.
    cause = _aiohttp_cause(error) or error
    if isinstance(cause, (aiohttp.SocketTimeoutError, httpx.ReadTimeout)):
        return "read timeout"
    if isinstance(
        cause,
        (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout, httpx.PoolTimeout),
    ):
        return "connect timeout"
    try:
        text = str(cause).strip()
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
        text = ""
    name = type(cause).__name__
    return f"{name}: {text}" if text else name


def translate_error(error: BaseException, *, host: str) -> ViberError:
    """Turn an exchange error into `APIConnectionError` or `OutcomeUnknownError`."""
    description = _describe(error)
    if never_sent(error):
        return APIConnectionError(f"could not reach {host}: {description}")
    return OutcomeUnknownError(description)
