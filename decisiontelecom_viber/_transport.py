"""HTTP exchange, and the one boundary where httpx and aiohttp errors become ours.

The default transport is httpx over aiohttp (`httpx_aiohttp.AiohttpTransport`),
chosen by measurement: httpx's own pool scans every connection on each
request and burns a core at bulk rates (docs/bulk.md has the figures). When
the SDK builds the transport itself it calls it directly, skipping the
`httpx.AsyncClient` machinery it does not use (auth flows, redirects,
cookies, event hooks); a user's own `httpx.AsyncClient` is used through its
public ``send``.

Each exchange translates failures itself, at one boundary: a foreign
exception becomes an `APIConnectionError` (provably never sent) or an
`OutcomeUnknownError`, raised *without* the foreign exception chained and
outside its ``except`` block. aiohttp's exceptions carry the request headers,
``Authorization`` included, and their frames hold them as locals; the SDK's
error keeps only a sanitized description and the foreign class name
(``cause_type``).

httpx-aiohttp maps *every* aiohttp connection error, including a server
disconnect after the request was written, to ``httpx.ConnectError`` or
``httpx.ConnectTimeout``. Whether a request "never reached the API" is
therefore decided from the aiohttp cause when there is one, and only
otherwise from the httpx class (`never_sent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import urllib.request
from collections.abc import AsyncGenerator, Iterator
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
    "close_with_loop",
    "environment_proxy",
    "never_sent",
    "translate_error",
]

logger = logging.getLogger("decisiontelecom_viber")

Answer = tuple[int, httpx.Headers, bytes]

# Errors of the exchange that the boundary translates. Anything else (a bug,
# cancellation) propagates untouched.
TRANSLATED_ERRORS: tuple[type[BaseException], ...] = (
    httpx.RequestError,
    aiohttp.ClientError,
    OSError,  # includes TimeoutError and asyncio.TimeoutError on 3.11+
    asyncio.TimeoutError,
)


class Exchange(Protocol):
    """Sends one request and returns (status, headers, body).

    Every failure is raised as a `ViberError` (`translate_error`), never as
    a foreign exception; cancellation propagates untouched.
    """

    async def __call__(self, request: httpx.Request) -> Answer:
        """Send *request* and read the whole answer."""

    async def aclose(self) -> None:
        """Release connections, if this exchange owns them."""


class TransportExchange:
    """Sends through a transport the SDK built and owns."""

    __slots__ = ("_closed", "_transport")

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport
        self._closed = False

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The transport (tests inspect its TLS settings)."""
        return self._transport

    async def __call__(self, request: httpx.Request) -> Answer:
        """Send *request* and read the whole answer."""
        try:
            response = await self._transport.handle_async_request(request)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
        except TRANSLATED_ERRORS as error:
            failure = translate_error(error, request)
        except Exception as error:  # noqa: BLE001 - a bug below us proves nothing
            failure = _unexpected(error)
        else:
            return response.status_code, response.headers, body
        # Raised here, outside the except block: no foreign exception in its
        # __context__, and none of aiohttp's frames (their locals hold the
        # request headers) in its traceback.
        raise failure from None

    async def aclose(self) -> None:
        """Close the transport and its connections (once)."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()


class ClientExchange:
    """Sends through a user's `httpx.AsyncClient`, which the SDK does not close."""

    __slots__ = ("_client",)

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def __call__(self, request: httpx.Request) -> Answer:
        """Send *request* with ``client.send`` and return the answer."""
        try:
            response = await self._client.send(request)
        except httpx.HTTPStatusError as error:
            # A response hook called raise_for_status(): the answer came all
            # the same, and it, not the hook, says what became of the request.
            return _answer_of(error.response)
        except TRANSLATED_ERRORS as error:
            failure = translate_error(error, request)
        except Exception as error:  # noqa: BLE001 - a hook's error proves nothing
            failure = _unexpected(error)
        else:
            return response.status_code, response.headers, response.content
        raise failure from None

    async def aclose(self) -> None:
        """Do nothing: the user owns the client."""


async def _closing_with_the_loop(exchange: Exchange) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await exchange.aclose()


def close_with_loop(exchange: Exchange) -> AsyncGenerator[None, None]:
    """Have the running event loop close *exchange* when it shuts down.

    The connections of the default transport belong to one event loop. A
    client made at import time and used with ``asyncio.run`` leaves them
    open when that loop closes; started here, this async generator is
    finalized by ``loop.shutdown_asyncgens()`` (which ``asyncio.run`` and
    ``asyncio.Runner`` call), and closes them then. Keep a reference to it.
    """
    sentinel = _closing_with_the_loop(exchange)
    step = sentinel.__anext__()  # registers it with the running loop
    with contextlib.suppress(StopIteration):
        step.send(None)
    return sentinel


def _answer_of(response: httpx.Response) -> Answer:
    try:
        body = response.content
    except httpx.ResponseNotRead:
        body = b""  # the hook raised before the body was read
    return response.status_code, response.headers, body


def _unexpected(error: Exception) -> ViberError:
    # Not an error of the HTTP stack we know: the request may or may not
    # have been written, so the outcome is unknown. Its traceback is logged
    # (without locals); the exception is not chained.
    name = type(error).__name__
    logger.warning("unexpected %s while sending a request", name, exc_info=error)
    failure = OutcomeUnknownError(f"unexpected {name} while sending the request")
    failure.cause_type = name
    return failure


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


# Redirect errors subclass the invalid-URL ones, which are raised before
# sending; these come after an answer (redirects are never followed anyway).
_REDIRECT_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (getattr(aiohttp, "RedirectClientError", None), aiohttp.TooManyRedirects)
    if isinstance(cls, type)
)


def never_sent(error: BaseException) -> bool:
    """Whether the failed exchange provably never delivered the request.

    True for failures to connect (refused, DNS, TLS handshake, proxy), connect
    and pool timeouts. False for everything after the connection was up
    (read timeouts, disconnects, resets, garbled answers): the server may have
    received and processed the request.
    """
    cause = _aiohttp_cause(error)
    if cause is not None:
        if isinstance(cause, _REDIRECT_ERRORS):
            return False  # raised on a redirect: the request was answered
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
    if isinstance(cause, aiohttp.ClientResponseError):
        # Its str() includes the URL; its repr, the request headers.
        text = str(cause.message)
    else:
        try:
            text = str(cause).strip()
        except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
            text = ""
    name = type(cause).__name__
    return f"{name}: {text}" if text else name


def _redact(text: str, request: httpx.Request | None) -> str:
    """Remove the credentials of *request* from *text*, should they be in it."""
    if request is None:
        return text
    authorization = request.headers.get("authorization")
    if authorization:
        for secret in (authorization, authorization.partition(" ")[2]):
            if secret:
                text = text.replace(secret, "[secret]")
    return text


def translate_error(
    error: BaseException, request: httpx.Request | None = None, *, host: str = ""
) -> ViberError:
    """Turn an exchange error into `APIConnectionError` or `OutcomeUnknownError`.

    The result does not chain *error* (see the module docstring); it names
    its class in ``cause_type``.
    """
    description = _redact(_describe(error), request)
    cause = _aiohttp_cause(error) or error
    if never_sent(error):
        host = host or (request.url.host if request is not None else "the API")
        failure: ViberError = APIConnectionError(
            f"could not reach {host}: {description}"
        )
    else:
        failure = OutcomeUnknownError(description)
    failure.cause_type = type(cause).__name__
    return failure
