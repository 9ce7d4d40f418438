"""Exchanges: send one request, read the whole answer, translate every failure.

`TransportExchange` drives the transport the SDK built (httpx over aiohttp,
`_transport.build_default_transport`) directly, skipping the
`httpx.AsyncClient` machinery it does not use; `ClientExchange` sends through
a user's own `httpx.AsyncClient`, redirects off.

Each exchange is the boundary where foreign exceptions become the SDK's:
`APIConnectionError` (provably never sent) or `OutcomeUnknownError`, raised
outside the ``except`` block and without chaining (aiohttp's exceptions and
frames hold the request headers). Cancellation propagates, but as a fresh
`asyncio.CancelledError` raised from here, for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import httpx

from ._errors import OutcomeUnknownError, ViberError
from ._transport import TRANSLATED_ERRORS, translate_error


__all__ = [
    "Answer",
    "ClientExchange",
    "Exchange",
    "TransportExchange",
    "close_with_loop",
]

logger = logging.getLogger("decisiontelecom_viber")

Answer = tuple[int, httpx.Headers, bytes]
Scrub = Callable[[str], str]


class Exchange(Protocol):
    """Sends one request and returns (status, headers, body).

    Every failure is raised as a `ViberError`, never as a foreign exception;
    cancellation propagates. A transport may tell the pipeline when it starts
    the request and when it may write it (`_transport.wire_signal`).

    Attributes:
        pool_timeout_bounds_connecting: Whether the ``pool`` timeout bounds
            waiting for a connection *and* making one (aiohttp's ``connect``
            timeout does), rather than the wait alone (httpx's: its
            ``connect`` timeout then follows).
    """

    pool_timeout_bounds_connecting: bool

    async def __call__(self, request: httpx.Request) -> Answer:
        """Send *request* and read the whole answer."""

    async def aclose(self) -> None:
        """Release connections, if this exchange owns them."""


class TransportExchange:
    """Sends through a transport the SDK built and owns.

    Args:
        transport: The transport.
        scrub: Cleans text of the credentials (for logged descriptions).
    """

    __slots__ = ("_closed", "_scrub", "_transport")

    # httpx-aiohttp maps ``pool`` to aiohttp's ``connect``: wait and connect.
    pool_timeout_bounds_connecting = True

    def __init__(self, transport: httpx.AsyncBaseTransport, scrub: Scrub = str) -> None:
        self._transport = transport
        self._scrub = scrub
        self._closed = False

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The transport (tests inspect its TLS settings)."""
        return self._transport

    async def __call__(self, request: httpx.Request) -> Answer:
        """Send *request* and read the whole answer."""
        cancelled: asyncio.CancelledError | None = None
        try:
            response = await self._transport.handle_async_request(request)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
        except asyncio.CancelledError as error:
            cancelled = error
        except TRANSLATED_ERRORS as error:
            failure = translate_error(error, host=request.url.host)
        except Exception as error:  # noqa: BLE001 - a bug below us proves nothing
            failure = _unexpected(error, self._scrub)
        else:
            return response.status_code, response.headers, body
        # Raised here, outside the except block: no foreign exception in the
        # context, and none of aiohttp's frames in the traceback.
        if cancelled is not None:
            raise asyncio.CancelledError(*cancelled.args) from None
        raise failure from None

    async def aclose(self) -> None:
        """Close the transport and its connections (once)."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()


class ClientExchange:
    """Sends through a user's `httpx.AsyncClient`, which the SDK does not close.

    Redirects are never followed (a POST repeated elsewhere could be a
    second send). An error counts as "never sent" only when the transport
    raised it for this very request: one raised by an event hook (a
    ``ConnectError`` from the hook's own call) came after the answer.
    """

    __slots__ = ("_client", "_scrub")

    pool_timeout_bounds_connecting = False

    def __init__(self, client: httpx.AsyncClient, scrub: Scrub = str) -> None:
        self._client = client
        self._scrub = scrub

    async def __call__(self, request: httpx.Request) -> Answer:
        """Send *request* with ``client.send`` and return the answer."""
        cancelled: asyncio.CancelledError | None = None
        try:
            response = await self._client.send(request, follow_redirects=False)
        except httpx.HTTPStatusError as error:
            # A response hook called raise_for_status(): the answer came all
            # the same, and it, not the hook, says what became of the request.
            return _answer_of(error.response)
        except asyncio.CancelledError as error:
            cancelled = error
        except TRANSLATED_ERRORS as error:
            if isinstance(error, httpx.RequestError) and _raised_for(error, request):
                failure = translate_error(error, host=request.url.host)
            else:
                failure = _unexpected(error, self._scrub)
        except Exception as error:  # noqa: BLE001 - a hook's error proves nothing
            failure = _unexpected(error, self._scrub)
        else:
            return response.status_code, response.headers, response.content
        if cancelled is not None:
            raise asyncio.CancelledError(*cancelled.args) from None
        raise failure from None

    async def aclose(self) -> None:
        """Do nothing: the user owns the client."""


def _raised_for(error: httpx.RequestError, request: httpx.Request) -> bool:
    """Whether httpx raised *error* while sending *request* (not in a hook)."""
    # httpx attaches the request to errors its transport raises for it; an
    # error raised in a response hook has none, or the hook's own request.
    try:
        return error.request is request
    except RuntimeError:  # no request attached
        return False


def _answer_of(response: httpx.Response) -> Answer:
    try:
        body = response.content
    except httpx.ResponseNotRead:
        body = b""  # the hook raised before the body was read
    return response.status_code, response.headers, body


def _unexpected(error: BaseException, scrub: Scrub) -> ViberError:
    # Not an error of the HTTP stack we know, or one raised after the
    # answer came: the request may or may not have been written, so the
    # outcome is unknown. The traceback is logged as text (no locals), with
    # the credentials scrubbed; the exception is not chained.
    name = type(error).__name__
    if logger.isEnabledFor(logging.WARNING):
        text = scrub("".join(traceback.format_exception(error)))
        logger.warning("unexpected %s while sending a request:\n%s", name, text)
    failure = OutcomeUnknownError(f"unexpected {name} while sending the request")
    failure.cause_type = name
    return failure


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
