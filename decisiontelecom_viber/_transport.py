"""The default transport, and how foreign errors are read: never sent, or maybe sent.

The default transport is httpx over aiohttp (`httpx_aiohttp.AiohttpTransport`),
chosen by measurement: httpx's own pool scans every connection on each
request and burns a core at bulk rates (docs/bulk.md has the figures). Its
aiohttp session carries a trace that signals (`wire_signal`) the moment a
connection is handed to a request: before it, nothing of the request has
left the process (waiting for the pool, resolving, connecting, the TLS
handshake); after it, bytes may be on the wire.

httpx-aiohttp maps *every* aiohttp connection error, including a server
disconnect after the request was written, to ``httpx.ConnectError`` or
``httpx.ConnectTimeout``. Whether a request "never reached the API" is
therefore decided from the aiohttp cause when there is one, and only
otherwise from the httpx class (`never_sent`). The exchanges (`_exchange`)
turn every failure into the SDK's errors with `translate_error`.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import ssl
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from ._errors import (
    APIConnectionError,
    ConfigurationError,
    OutcomeUnknownError,
    ViberError,
)


__all__ = [
    "TRANSLATED_ERRORS",
    "build_default_transport",
    "environment_proxy",
    "never_sent",
    "translate_error",
    "wire_signal",
]


class WireSignal(Protocol):
    """Told by the transport what became of the request it is sending."""

    def started(self) -> None:
        """The transport started the request (it will say when it writes)."""

    def on_the_wire(self) -> None:
        """A connection was handed to the request: it may leave now."""


wire_signal: contextvars.ContextVar[WireSignal | None] = contextvars.ContextVar(
    "decisiontelecom_viber_wire_signal", default=None
)
"""The signal of the request the current task is sending, if any."""


async def _started(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: object
) -> None:
    signal = wire_signal.get()
    if signal is not None:
        signal.started()


async def _on_the_wire(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: object
) -> None:
    signal = wire_signal.get()
    if signal is not None:
        signal.on_the_wire()


def _wire_trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(_started)
    # A new connection ready, or a pooled one taken: the request goes next.
    trace.on_connection_create_end.append(_on_the_wire)
    trace.on_connection_reuseconn.append(_on_the_wire)
    trace.freeze()
    return trace


# Errors of the exchange that the boundary translates. Anything else (a bug,
# cancellation) propagates untouched.
TRANSLATED_ERRORS: tuple[type[BaseException], ...] = (
    httpx.RequestError,
    aiohttp.ClientError,
    OSError,  # includes TimeoutError and asyncio.TimeoutError on 3.11+
    asyncio.TimeoutError,
)


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``NO_PROXY``...) sets for *url*."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy


def tls_verification(
    verify: ssl.SSLContext | str | os.PathLike[str] | bool,
) -> ssl.SSLContext | bool:
    """*verify* as httpx takes it: a CA bundle's path becomes an `ssl.SSLContext`.

    (httpx deprecates ``verify=<path>``, with a warning that fails a suite run
    with warnings as errors.)

    Raises:
        ConfigurationError: The path names no readable CA bundle (a PEM file).
    """
    if isinstance(verify, (bool, ssl.SSLContext)):
        return verify
    # (Typed as a path, given whatever the caller had: checked at run time.)
    value: object = verify
    if isinstance(value, (os.PathLike, bytes)):
        value = os.fsdecode(value)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            "verify must be True, False, an ssl.SSLContext or a CA bundle's path"
        )
    try:
        return ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(
            f"verify: no CA bundle could be read from {value!r} "
            f"({type(error).__name__})"
        ) from None


def build_default_transport(
    *,
    verify: ssl.SSLContext | str | bool,
    max_connections: int,
    keepalive_expiry: float,
    proxy: str | httpx.Proxy | None,
) -> httpx.AsyncBaseTransport:
    """Build the default transport: httpx over aiohttp, with the wire signal."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )
    transport = AiohttpTransport(
        verify=tls_verification(verify),
        limits=limits,
        proxy=httpx.Proxy(proxy) if isinstance(proxy, str) else proxy,
    )
    trace = _wire_trace()

    def session() -> aiohttp.ClientSession:
        # What AiohttpTransport would build, with the trace. Made lazily, in
        # the event loop of the first request.
        connector = aiohttp.TCPConnector(
            keepalive_timeout=keepalive_expiry,
            ssl=transport.ssl_context,
            limit=max_connections,
        )
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace])

    transport.client = session
    built: httpx.AsyncBaseTransport = transport
    return built


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
        text = str(getattr(cause, "message", ""))
    else:
        try:
            text = str(cause).strip()
        except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
            text = ""
    name = type(cause).__name__
    return f"{name}: {text}" if text else name


def translate_error(error: BaseException, *, host: str) -> ViberError:
    """Turn an exchange error into `APIConnectionError` or `OutcomeUnknownError`.

    The result does not chain *error* (see `_exchange`); it names its class
    in ``cause_type``.
    """
    description = _describe(error)
    cause = _aiohttp_cause(error) or error
    if never_sent(error):
        failure: ViberError = APIConnectionError(
            f"could not reach {host}: {description}"
        )
    else:
        failure = OutcomeUnknownError(description)
    failure.cause_type = type(cause).__name__
    return failure
