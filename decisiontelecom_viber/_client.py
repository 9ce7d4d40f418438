"""`AsyncViberClient`: lifecycle and the request pipeline.

One private path per call: build the body once, then ``Retrier.call`` runs
attempts, each of which builds an `httpx.Request`, exchanges it (errors
translated at the boundary in `_transport`) and decodes the answer
(`_wire`). Retries and rate limits wrap that path; they are not woven
through it.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import ssl
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, TypeAlias

import httpx

from ._bulk import ResultStream, check_concurrency
from ._clock import Clock, SystemClock
from ._constants import (
    ACCESS_KEY_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    SEND_PATH,
    STATUS_PATH,
)
from ._errors import ClientClosedError, ConfigurationError, ValidationError
from ._models import MessageReceipt, SendResult, ViberMessage
from ._retry import Retrier, RetryHook, RetryPolicy
from ._transport import (
    TRANSLATED_ERRORS,
    ClientExchange,
    Exchange,
    TransportExchange,
    build_default_transport,
    environment_proxy,
    translate_error,
)
from ._version import user_agent
from ._wire import (
    decode_send_response,
    decode_status_response,
    encode_json,
    encode_message,
)


__all__ = ["AsyncViberClient", "MessageLike"]

logger = logging.getLogger("decisiontelecom_viber")

MessageLike: TypeAlias = "ViberMessage | Mapping[str, Any]"
"""A `ViberMessage`, or a mapping of its field names."""


class _Default:
    """Marks an argument left out (where None means something else)."""

    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Final = _Default()

DEFAULT_TIMEOUT = httpx.Timeout(
    DEFAULT_READ_TIMEOUT,
    connect=DEFAULT_CONNECT_TIMEOUT,
    pool=DEFAULT_POOL_TIMEOUT,
)


def _resolve_access_key(access_key: str | None) -> str:
    key: object = (
        access_key if access_key is not None else os.environ.get(ACCESS_KEY_ENV)
    )
    if not key:
        raise ConfigurationError(
            "no DecisionTelecom access key: pass AsyncViberClient(access_key=...) "
            f"or set the {ACCESS_KEY_ENV} environment variable "
            "(your account manager issues the key)"
        )
    if not isinstance(key, str) or key != key.strip() or "\n" in key:
        raise ConfigurationError(
            "the access key must be a string without surrounding whitespace"
        )
    return key


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve_base_url(base_url: str, *, allow_insecure_http: bool) -> httpx.URL:
    try:
        url = httpx.URL(base_url.rstrip("/"))
    except (httpx.InvalidURL, TypeError, AttributeError) as error:
        raise ConfigurationError(f"base_url is not a valid URL: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("base_url must be an absolute http(s) URL")
    if url.scheme == "http" and not (_is_loopback(url.host) or allow_insecure_http):
        raise ConfigurationError(
            "base_url must use https:// (the access key would travel in clear "
            "text); http:// is allowed for loopback hosts, or with "
            "allow_insecure_http=True"
        )
    return url


def _coerce_message(item: object) -> ViberMessage:
    if isinstance(item, ViberMessage):
        return item
    if isinstance(item, Mapping):
        return ViberMessage.from_dict(item)
    raise ValidationError(
        "message",
        f"must be a ViberMessage or a mapping of its fields, not {type(item).__name__}",
    )


class AsyncViberClient:
    """Asyncio client of DecisionTelecom's Viber Business Messages API.

    Use it as an async context manager, or call `aclose` when done. One
    client is meant to be shared by a whole application: it holds the
    connection pool.

    Args:
        access_key: Your API access key. Defaults to the
            ``DECISIONTELECOM_ACCESS_KEY`` environment variable. It is sent
            as ``Authorization: Basic base64(key)`` and never appears in
            reprs, errors or logs.
        base_url: API root, without the endpoint name.
        timeout: Per-attempt timeout in seconds, or an `httpx.Timeout` for
            separate connect/read/pool values. Defaults to connect 5 s,
            read 20 s, pool 10 s (or the timeout of *http_client*, if given).
        retry: The `RetryPolicy`; None turns retries off.
        http_client: An `httpx.AsyncClient` to send with instead of the
            default transport (httpx over aiohttp). The client does not own
            it: closing the client leaves it open.
        max_connections: Size of the default transport's connection pool.
        verify: TLS verification for the default transport: True (system
            CAs), False (never in production), a CA bundle path or an
            `ssl.SSLContext`.
        proxy: Proxy URL for the default transport. By default the
            ``HTTPS_PROXY``/``NO_PROXY`` environment variables are honoured.
        allow_insecure_http: Allow an ``http://`` *base_url* for a host that is
            not loopback. The access key then travels in clear text.
        on_retry: Hooks called before each retry with a `RetryDetails`.
        clock: Time source for retry waits (tests pass a fake one).

    Raises:
        ConfigurationError: No access key, or an invalid setting.
    """

    __slots__ = (
        "_base_url",
        "_clock",
        "_closed",
        "_exchange",
        "_headers",
        "_host",
        "_owns_exchange",
        "_retrier",
        "_send_url",
        "_status_url",
        "_timeout",
        "_timeout_ext",
        "_timeout_max",
    )

    def __init__(
        self,
        access_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout | _Default = _DEFAULT,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen, immutable
        http_client: httpx.AsyncClient | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        verify: ssl.SSLContext | str | bool = True,
        proxy: str | httpx.Proxy | _Default | None = _DEFAULT,
        allow_insecure_http: bool = False,
        on_retry: RetryHook | Sequence[RetryHook] = (),
        clock: Clock | None = None,
    ) -> None:
        key = _resolve_access_key(access_key)
        self._base_url = _resolve_base_url(
            base_url, allow_insecure_http=allow_insecure_http
        )
        self._host = self._base_url.host
        self._send_url = self._base_url.join(f"{self._base_url.path}/{SEND_PATH}")
        self._status_url = self._base_url.join(f"{self._base_url.path}/{STATUS_PATH}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a RetryPolicy or None")
        self._clock: Clock = clock if clock is not None else SystemClock()
        hooks = (on_retry,) if callable(on_retry) else tuple(on_retry)
        self._retrier = Retrier(retry, self._clock, hooks=hooks)

        # The header holds the key; httpx masks Authorization in reprs.
        token = base64.b64encode(key.encode()).decode("ascii")
        headers = httpx.Headers(http_client.headers if http_client else None)
        headers.update(
            {
                "Authorization": f"Basic {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": user_agent(),
            }
        )
        self._headers = headers

        if http_client is not None:
            if proxy is not _DEFAULT or verify is not True:
                raise ConfigurationError(
                    "proxy and verify configure the default transport; with "
                    "http_client=..., configure them on your httpx.AsyncClient"
                )
            if timeout is _DEFAULT:
                timeout = http_client.timeout
            self._exchange: Exchange = ClientExchange(http_client)
            self._owns_exchange = False
        else:
            if proxy is _DEFAULT:
                proxy = environment_proxy(self._base_url)
            check_concurrency(max_connections)
            self._exchange = TransportExchange(
                build_default_transport(
                    verify=verify,
                    max_connections=max_connections,
                    keepalive_expiry=DEFAULT_KEEPALIVE_EXPIRY,
                    proxy=proxy,  # type: ignore[arg-type]
                )
            )
            self._owns_exchange = True
        self._timeout = (
            DEFAULT_TIMEOUT
            if timeout is _DEFAULT
            else timeout
            if isinstance(timeout, httpx.Timeout)
            else httpx.Timeout(timeout)  # type: ignore[arg-type]
        )
        self._timeout_ext = self._timeout.as_dict()
        self._timeout_max = max(
            (t for t in self._timeout_ext.values() if t is not None), default=0.0
        )
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncViberClient base_url={str(self._base_url)!r} {state}>"

    @property
    def base_url(self) -> str:
        """The API root this client talks to."""
        return str(self._base_url)

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force (one attempt when retries are off)."""
        return self._retrier.policy

    @property
    def is_closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    async def __aenter__(self) -> AsyncViberClient:
        if self._closed:
            raise ClientClosedError
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (unless it came from *http_client*).

        Calls made after this raise `ClientClosedError`. Closing twice is
        harmless.
        """
        if self._closed:
            return
        self._closed = True
        if self._owns_exchange:
            await self._exchange.aclose()

    async def send_message(self, message: MessageLike) -> int:
        """Send one message and return its message ID.

        Args:
            message: A `ViberMessage`, or a mapping of its field names.

        Returns:
            The ID the API assigned to the message.

        Raises:
            ValidationError: The message is invalid; nothing was sent.
            APIError: The API refused the message (after retries, for 429
                and 5xx).
            APIConnectionError: The API could not be reached (after retries);
                nothing was sent.
            OutcomeUnknownError: No usable answer came back; the message may
                or may not have been sent. Not retried unless the policy opts
                in: check before sending it again.
            ClientClosedError: The client is closed.
        """
        return await self._send(_coerce_message(message))

    async def get_message_status(self, message_id: int) -> MessageReceipt:
        """Look up the status of a message sent in the last 5 days.

        Status lookups are read-only, so every transient failure is retried,
        an `OutcomeUnknownError` included.

        Raises:
            ValidationError: *message_id* is not a non-negative integer.
            APIError: The API refused the lookup.
            APIConnectionError: The API could not be reached.
            OutcomeUnknownError: No usable answer came back (after retries).
            ClientClosedError: The client is closed.
        """
        given: object = message_id  # callers may pass anything at run time
        if isinstance(given, bool) or not isinstance(given, int) or given < 0:
            raise ValidationError("message_id", "must be a non-negative integer")
        self._check_open()
        body = encode_json({"message_id": message_id})

        async def attempt(deadline: float | None) -> MessageReceipt:
            status, headers, raw = await self._post(self._status_url, body, deadline)
            return decode_status_response(status, headers, raw, now=self._clock.time())

        return await self._retrier.call(
            attempt, name="get_message_status", idempotent=True
        )

    def send_messages(
        self,
        messages: Iterable[MessageLike] | AsyncIterable[MessageLike],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
    ) -> ResultStream[SendResult]:
        """Send many messages concurrently; yield one `SendResult` per item.

        The input (a sync or async iterable) is consumed lazily, at most a
        bounded window ahead of the results, so it may be a generator of
        millions of messages. Items are `ViberMessage` instances or mappings
        of their fields; an invalid item yields a failed result carrying its
        `ValidationError`, without a request. No failure ends the batch.

        Use it as ``async for result in client.send_messages(...)``, inside
        ``async with`` if you may leave the loop early.

        Args:
            messages: The messages to send.
            concurrency: Requests in flight at most.
            ordered: Yield results in input order instead of as they complete.

        Returns:
            An async iterator of `SendResult`, also an async context manager.
        """
        self._check_open()
        return ResultStream(
            messages, self._send_item, concurrency=concurrency, ordered=ordered
        )

    async def _send_item(self, index: int, item: object) -> SendResult:
        try:
            message = _coerce_message(item)
        except Exception as error:  # noqa: BLE001 - one result per item, always
            return SendResult(index, item, error=error)
        try:
            message_id = await self._send(message)
        except Exception as error:  # noqa: BLE001 - one result per item, always
            return SendResult(index, message, error=error)
        return SendResult(index, message, message_id=message_id)

    async def _send(self, message: ViberMessage) -> int:
        self._check_open()
        body = encode_message(message)

        async def attempt(deadline: float | None) -> int:
            status, headers, raw = await self._post(self._send_url, body, deadline)
            return decode_send_response(status, headers, raw, now=self._clock.time())

        return await self._retrier.call(attempt, name="send_message", idempotent=False)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError

    def _timeouts(self, deadline: float | None) -> dict[str, float | None]:
        if deadline is None:
            return self._timeout_ext
        left = deadline - self._clock.monotonic()
        if left >= self._timeout_max:
            return self._timeout_ext
        # The call's deadline is nearer than a full attempt: cut every phase
        # of this attempt to the time left.
        left = max(left, 0.001)
        return {
            phase: left if value is None else min(value, left)
            for phase, value in self._timeout_ext.items()
        }

    async def _post(
        self, url: httpx.URL, body: bytes, deadline: float | None
    ) -> tuple[int, httpx.Headers, bytes]:
        request = httpx.Request(
            "POST",
            url,
            headers=self._headers,
            content=body,
            extensions={"timeout": self._timeouts(deadline)},
        )
        try:
            answer = await self._exchange(request)
        except TRANSLATED_ERRORS as error:
            if self._closed:
                raise ClientClosedError from error
            translated = translate_error(error, host=self._host)
            logger.debug("POST %s failed: %s", url.path, translated)
            raise translated from error
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("POST %s -> HTTP %d", url.path, answer[0])
        return answer
