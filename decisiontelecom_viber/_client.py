"""`AsyncViberClient`: configuration, lifecycle and the public methods.

Every call goes through one `Pipeline` (`_pipeline`): limiter, deadline,
request, exchange, decoding, in that order. The client builds it from its
settings, hands it each call's body, and closes it: `aclose` aborts the
calls that have nothing on the wire and waits for those that have.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeAlias

import httpx

from ._bulk import ProgressCallback, ResultStream
from ._checks import check_count
from ._clock import Clock, SystemClock
from ._constants import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_MAX_CONNECTIONS,
    SEND_PATH,
    STATUS_PATH,
)
from ._context import before_write
from ._credentials import install_log_scrubber, resolve_credentials
from ._errors import ClientClosedError, ConfigurationError, ValidationError
from ._exchange import ClientExchange, Exchange, TransportExchange, close_with_loop
from ._limits import Limiter, Priority, RateLimit, check_priority
from ._metrics import ClientMetrics, Tally
from ._models import MessageReceipt, SendResult, StatusResult, ViberMessage
from ._options import (
    DEFAULT,
    DEFAULT_TIMEOUT,
    Default,
    coerce_message,
    resolve_base_url,
    resolve_limiter,
    resolve_timeout,
)
from ._pipeline import Operation, Pipeline
from ._polling import poll_until_final
from ._retry import Retrier, RetryHook, RetryPolicy
from ._signing import CallbackSigner
from ._telemetry import Telemetry, instrument, type_label
from ._transport import build_default_transport, environment_proxy
from ._wire import (
    decode_send_response,
    decode_status_response,
    encode_json,
    encode_message,
)


__all__ = ["AsyncViberClient", "MessageLike"]

MessageLike: TypeAlias = "ViberMessage | Mapping[str, Any]"
"""A `ViberMessage`, or a mapping of its field names."""


def _check_message_id(message_id: object) -> int:
    if (
        isinstance(message_id, bool)
        or not isinstance(message_id, int)
        or message_id < 0
    ):
        raise ValidationError("message_id", "must be a non-negative integer")
    return message_id


class AsyncViberClient:
    """Asyncio client of DecisionTelecom's Viber Business Messages API.

    Use it as an async context manager, or call `aclose` when done. One
    client is meant to be shared by a whole application: it holds the
    connection pool and the rate limiter every call goes through.

    Args:
        access_key: Your API access key. Defaults to the
            ``DECISIONTELECOM_ACCESS_KEY`` environment variable. It is sent
            as ``Authorization: Basic base64(key)`` and never appears in
            reprs, errors or logs.
        base_url: API root, without the endpoint name. Defaults to the
            ``DECISIONTELECOM_BASE_URL`` environment variable, else the real
            API (point it at the sandbox or a proxy).
        timeout: Per-attempt timeout in seconds, or an `httpx.Timeout` for
            separate connect/read/pool values. Defaults to connect 5 s,
            read 20 s, pool 10 s (or the timeout of *http_client*, if given).
        retry: The `RetryPolicy`; None turns retries off.
        rate_limit: How requests are paced: a `RateLimit`, a rate in
            requests per second, a custom `Limiter` (for example one shared
            through Redis), or None for no client-side limit. The default
            discovers the account's limit from the server's answers.
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
        callback_url: A callback URL to give every message that has none.
            With *callback_secret*, each one is signed (`signed_callback_url`),
            so a `CallbackReceiver` holding the same secret can refuse forged
            callbacks.
        callback_secret: The secret signing *callback_url* (the first one, if
            several are given for key rotation).
        callback_reference: Called with each message to get its reference
            (for example your order ID), signed into its callback URL as
            ``ref`` and handed to your callback handlers as ``reference``.
        clock: Time source for waits (tests pass a fake one).
        telemetry: OpenTelemetry spans and metrics (`Telemetry`; needs the
            ``[otel]`` extra and an SDK configured by the application, else
            nothing is recorded); None turns them off.

    Raises:
        ConfigurationError: No access key, or an invalid setting.
    """

    __slots__ = (
        "_base_url",
        "_callback",
        "_clock",
        "_closed",
        "_exchange",
        "_limiter",
        "_loop_sentinel",
        "_owns_exchange",
        "_pipeline",
        "_retrier",
        "_send_op",
        "_status_op",
        "_tally",
        "_telemetry",
    )

    def __init__(
        self,
        access_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | Default | None = DEFAULT,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen, immutable
        rate_limit: RateLimit | Limiter | float | None = RateLimit(),  # noqa: B008
        http_client: httpx.AsyncClient | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        verify: ssl.SSLContext | str | bool = True,
        proxy: str | httpx.Proxy | Default | None = DEFAULT,
        allow_insecure_http: bool = False,
        on_retry: RetryHook | Sequence[RetryHook] = (),
        callback_url: str | None = None,
        callback_secret: str | bytes | Sequence[str | bytes] | None = None,
        callback_reference: Callable[[ViberMessage], str | None] | None = None,
        clock: Clock | None = None,
        telemetry: Telemetry | None = Telemetry(),  # noqa: B008 - frozen
    ) -> None:
        # The key leaves this frame at once: an error raised later in it
        # would otherwise show the key to a traceback rendering its locals.
        resolved = resolve_credentials(access_key)
        del access_key
        if isinstance(resolved, ConfigurationError):
            raise resolved
        credentials = resolved
        install_log_scrubber(credentials)
        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self._base_url = resolve_base_url(
            base_url, allow_insecure_http=allow_insecure_http
        )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a RetryPolicy or None")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._limiter = resolve_limiter(rate_limit, self._clock)
        self._tally = Tally()
        hooks = (on_retry,) if callable(on_retry) else tuple(on_retry)
        self._telemetry = instrument(
            telemetry, self._base_url, _rate_reader(self._limiter)
        )
        if self._telemetry is not None:
            # Retries counted where client.metrics counts them: scheduled.
            hooks = (*hooks, self._telemetry.count_retry)
        self._retrier = Retrier(
            retry,
            self._clock,
            hooks=hooks,
            paced=self._limiter is not None,
            tally=self._tally,
        )
        if http_client is not None:
            if proxy is not DEFAULT or verify is not True:
                raise ConfigurationError(
                    "proxy and verify configure the default transport; with "
                    "http_client=..., configure them on your httpx.AsyncClient"
                )
            if isinstance(timeout, Default):
                timeout = http_client.timeout
            self._exchange: Exchange = ClientExchange(http_client, credentials.scrub)
            self._owns_exchange = False
        else:
            check_max_connections(max_connections)
            self._exchange = TransportExchange(
                build_default_transport(
                    verify=verify,
                    max_connections=max_connections,
                    keepalive_expiry=DEFAULT_KEEPALIVE_EXPIRY,
                    proxy=(
                        environment_proxy(self._base_url)
                        if isinstance(proxy, Default)
                        else proxy
                    ),
                ),
                credentials.scrub,
            )
            self._owns_exchange = True
        self._pipeline = Pipeline(
            exchange=self._exchange,
            limiter=self._limiter,
            retrier=self._retrier,
            credentials=credentials,
            headers=credentials.headers(http_client.headers if http_client else None),
            timeout=(
                DEFAULT_TIMEOUT
                if isinstance(timeout, Default)
                else resolve_timeout(timeout)
            ),
            clock=self._clock,
            tally=self._tally,
            telemetry=self._telemetry,
            on_bind=self._bound if self._owns_exchange else None,
        )
        self._loop_sentinel: AsyncGenerator[None, None] | None = None
        root = self._base_url.path
        self._send_op = Operation(
            "send_message",
            self._base_url.join(f"{root}/{SEND_PATH}"),
            idempotent=False,
            decode=decode_send_response,
        )
        self._status_op = Operation(
            "get_message_status",
            self._base_url.join(f"{root}/{STATUS_PATH}"),
            idempotent=True,
            decode=decode_status_response,
        )
        self._callback = CallbackSigner.build(
            callback_url, callback_secret, callback_reference
        )
        self._closed = False

    def __repr__(self) -> str:
        # Also for a client whose __init__ failed half-way (tracebacks with
        # locals show it).
        base_url = getattr(self, "_base_url", None)
        if base_url is None:
            return "<AsyncViberClient (not set up)>"
        state = "closed" if getattr(self, "_closed", False) else "open"
        return f"<AsyncViberClient base_url={str(base_url)!r} {state}>"

    @property
    def base_url(self) -> str:
        """The API root this client talks to."""
        return str(self._base_url)

    @property
    def clock(self) -> Clock:
        """The clock the client reads time from and waits with."""
        return self._clock

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force (one attempt when retries are off)."""
        return self._retrier.policy

    @property
    def rate_limiter(self) -> Limiter | None:
        """The limiter every call goes through (None when not limited)."""
        return self._limiter

    @property
    def current_rate(self) -> float | None:
        """Requests per second the limiter allows now; None when unlimited."""
        return self._limiter.current_rate if self._limiter is not None else None

    @property
    def metrics(self) -> ClientMetrics:
        """A snapshot of this client's counters, for your metrics system."""
        tally = self._tally
        limiter = self._limiter
        return ClientMetrics(
            attempts=tally.attempts,
            retries=tally.retries,
            rate_limited=tally.rate_limited,
            limiter_waits=tally.limiter_waits,
            limiter_wait=tally.limiter_wait,
            current_rate=limiter.current_rate if limiter is not None else None,
            estimated_limit=limiter.estimated_limit if limiter is not None else None,
            outcomes=dict(tally.outcomes),
            send_latency=tally.send_latency(),
        )

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
        """Close the client: stop what was not sent, finish what was.

        Calls that have not written their request yet (waiting for the rate
        limiter, a retry's backoff) raise `ClientClosedError`: nothing of
        theirs was sent. Calls whose request is on the wire are waited for:
        they end as usual, with their message ID or an error (an
        `OutcomeUnknownError` at worst, never `ClientClosedError`); each is
        bounded by its own timeouts and deadline. Then the connection pool is
        closed (unless it came from *http_client*). Calls made after this
        raise `ClientClosedError`. Closing twice is harmless.

        If `aclose` itself is cancelled, the pool is closed at once and the
        calls still on the wire end in `OutcomeUnknownError`.
        """
        first = not self._closed
        self._closed = True
        if self._telemetry is not None:
            self._telemetry.retire()  # (its rate is no longer observed)
        try:
            if self._pipeline.owns_current_loop():
                # A second aclose() waits for the first one's calls too.
                await self._pipeline.close()
        finally:
            if first:
                sentinel, self._loop_sentinel = self._loop_sentinel, None
                if sentinel is not None and self._pipeline.owns_current_loop():
                    await sentinel.aclose()  # closes the exchange
                if self._owns_exchange:
                    await self._exchange.aclose()

    def _bound(self) -> None:
        # The pool belongs to this loop now: close it when the loop shuts down.
        self._loop_sentinel = close_with_loop(self._exchange)

    async def send_message(
        self, message: MessageLike, *, priority: Priority = "high"
    ) -> int:
        """Send one message and return its message ID.

        Args:
            message: A `ViberMessage`, or a mapping of its field names.
            priority: Its lane at the rate limiter: ``"high"`` (the default)
                goes before every waiting ``"normal"`` request, such as those
                of a `send_messages` campaign.

        Returns:
            The ID the API assigned to the message.

        Raises:
            ValidationError: The message is invalid; nothing was sent.
            APIError: The API refused the message (after retries, for 429
                and 500/502/503).
            APIConnectionError: The API could not be reached (after retries);
                nothing was sent.
            DeadlineExceededError: The call's deadline passed before the
                request could be written (the rate limiter, a 429 pause);
                nothing was sent.
            OutcomeUnknownError: No usable answer came back; the message may
                or may not have been sent. Not retried unless the policy opts
                in: check before sending it again.
            ClientClosedError: The client was closed before the request was
                written; nothing was sent.
            ConfigurationError: The client is used from another event loop
                than the one of its first call; nothing was sent.
        """
        priority = check_priority(priority)
        return await self._send_validated(coerce_message(message), priority)

    async def get_message_status(
        self, message_id: int, *, priority: Priority = "high"
    ) -> MessageReceipt:
        """Look up the status of a message sent in the last 5 days.

        Status lookups are read-only, so every transient failure is retried,
        an `OutcomeUnknownError` included. Like `send_message`, it waits for
        the limiter in the ``"high"`` lane unless *priority* says otherwise.

        Raises:
            ValidationError: *message_id* is not a non-negative integer.
            APIError: The API refused the lookup.
            APIConnectionError: The API could not be reached.
            DeadlineExceededError: The deadline passed before a request
                could be written.
            OutcomeUnknownError: No usable answer came back (after retries).
            ClientClosedError: The client is closed.
            ConfigurationError: The client is used from another event loop.
        """
        priority = check_priority(priority)
        message_id = _check_message_id(message_id)
        body = encode_json({"message_id": message_id})
        return await self._pipeline.run(
            self._status_op, body, priority, message_id=message_id
        )

    def callback_url_for(self, reference: str) -> str | None:
        """The client's callback URL carrying *reference*, signed.

        What a message sent with *reference* as its ``callback_reference``
        gets: for callers that give messages their URL themselves (as
        `SendOnceGuard` does with the dedupe key).

        Returns:
            The signed URL; None when the client has no ``callback_url`` or
            no ``callback_secret`` (an unsigned reference proves nothing).

        Raises:
            ValidationError: *reference* is empty or not valid Unicode.
        """
        if not reference:
            raise ValidationError("reference", "must be a non-empty string")
        if self._callback is None:
            return None
        try:
            return self._callback.signed_for(reference)
        except UnicodeError:
            raise ValidationError("reference", "is not valid Unicode") from None

    def send_messages(
        self,
        messages: Iterable[MessageLike] | AsyncIterable[MessageLike],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        priority: Priority = "normal",
        on_write: Callable[[int], None] | None = None,
        on_refused: Callable[[int], None] | None = None,
    ) -> ResultStream[SendResult]:
        """Send many messages concurrently; yield one `SendResult` per item.

        The input (a sync or async iterable) is consumed lazily, at most a
        bounded window ahead of the results, so it may be a generator of
        millions of messages. Items are `ViberMessage` instances or mappings
        of their fields; an invalid item yields a failed result carrying its
        `ValidationError`, without a request. No failure ends the batch.
        Every request goes through the client's rate limiter.

        Use it as ``async for result in client.send_messages(...)``, inside
        ``async with`` if you may leave the loop early. The stream's
        ``summary`` (a `BulkSummary`) counts outcomes, attempts, 429s and
        time spent waiting on the limiter.

        Args:
            messages: The messages to send.
            concurrency: Requests in flight at most.
            ordered: Yield results in input order instead of as they complete.
            on_progress: Called with the `BulkSummary` at most every
                *progress_interval* seconds, and once at the end.
            progress_interval: Seconds between progress calls.
            priority: The lane its requests wait in at the rate limiter:
                ``"normal"`` (the default) lets single calls (``"high"``)
                go first; ``"high"`` for a campaign of one-time codes.
            on_write: Called with an item's index (its position in the
                input) immediately before its request is first written,
                after the rate limiter let it go: the moment from which the
                API may have it. Record it durably here (a journal line) to
                know, after a crash, which items may have been sent and
                which certainly were not. If it raises, nothing is written
                and the item fails with `WriteRefusedError`.
            on_refused: With *on_write*: called with the index when that
                write was refused for sure (a 429, the API's own 500/503,
                a connection that never reached it) and the item waits for
                a retry; nothing of it is on the wire until *on_write* is
                called again.

        Returns:
            An async iterator of `SendResult`, also an async context manager.
        """
        self._check_open()
        priority = check_priority(priority)
        for name, callback in (("on_write", on_write), ("on_refused", on_refused)):
            if callback is not None and not callable(callback):
                raise ConfigurationError(f"{name} must be callable")
        return ResultStream(
            messages,
            functools.partial(
                self._send_item,
                priority=priority,
                on_write=on_write,
                on_refused=on_refused,
            ),
            concurrency=concurrency,
            ordered=ordered,
            outcome=_send_outcome,
            clock=self._clock,
            on_progress=on_progress,
            progress_interval=progress_interval,
            name="messages",
        )

    def get_message_statuses(
        self,
        message_ids: Iterable[int] | AsyncIterable[int],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        priority: Priority = "normal",
    ) -> ResultStream[StatusResult]:
        """Look up many statuses concurrently; yield one `StatusResult` per ID.

        The same machinery as `send_messages`: lazy input, bounded memory,
        the shared rate limiter, one result per item (an invalid ID yields a
        failed result carrying its `ValidationError`). Its lookups wait in
        the ``"normal"`` lane unless *priority* says otherwise.
        """
        self._check_open()
        priority = check_priority(priority)
        return ResultStream(
            message_ids,
            functools.partial(self._status_item, priority=priority),
            concurrency=concurrency,
            ordered=ordered,
            outcome=_status_outcome,
            clock=self._clock,
            on_progress=on_progress,
            progress_interval=progress_interval,
            name="message_ids",
        )

    async def wait_for_status(
        self,
        message_id: int,
        *,
        timeout: float = 300.0,
        poll_initial: float = 1.0,
        poll_max: float = 30.0,
        until: Callable[[MessageReceipt], bool] | None = None,
        priority: Priority = "high",
    ) -> MessageReceipt:
        """Poll a message's status until it is final (or *until* says so).

        Polls first at once, then after *poll_initial* seconds, the interval
        growing by half each time up to *poll_max*. Failed lookups are
        retried by the retry policy; lookups refused for good are raised.

        Args:
            message_id: The message to watch.
            timeout: Seconds to wait in all.
            poll_initial: First interval between lookups, in seconds.
            poll_max: Longest interval between lookups, in seconds.
            until: Stop when this returns True for a receipt; defaults to
                `MessageReceipt.is_final`.
            priority: The lookups' lane at the rate limiter.

        Raises:
            StatusTimeoutError: No final status within *timeout* (it carries
                the last receipt).
            ValidationError: *message_id*, *timeout* or a poll interval is
                invalid.
        """
        message_id = _check_message_id(message_id)
        priority = check_priority(priority)
        return await poll_until_final(
            lambda: self.get_message_status(message_id, priority=priority),
            message_id=message_id,
            clock=self._clock,
            timeout=timeout,
            poll_initial=poll_initial,
            poll_max=poll_max,
            until=until,
        )

    async def _send_item(
        self,
        index: int,
        item: object,
        *,
        priority: Priority,
        on_write: Callable[[int], None] | None = None,
        on_refused: Callable[[int], None] | None = None,
    ) -> SendResult:
        try:
            message = coerce_message(item)
            if self._callback is not None:
                message = self._callback.attach(message)
        except Exception as error:  # noqa: BLE001 - one result per item, always
            return SendResult(index, item, error=error)
        token = (
            None
            if on_write is None
            else before_write.set(_OnWrite(on_write, on_refused, index))
        )
        try:
            message_id = await self._pipeline.run(
                self._send_op,
                encode_message(message),
                priority,
                message_type=type_label(message.message_type),
            )
        except Exception as error:  # noqa: BLE001 - one result per item, always
            return SendResult(index, message, error=error)
        finally:
            if token is not None:
                before_write.reset(token)
        return SendResult(index, message, message_id=message_id)

    async def _status_item(
        self, index: int, item: object, *, priority: Priority
    ) -> StatusResult:
        try:
            receipt = await self.get_message_status(
                _check_message_id(item), priority=priority
            )
        except Exception as error:  # noqa: BLE001 - one result per item, always
            return StatusResult(index, item, error=error)
        return StatusResult(index, item, receipt=receipt)

    async def _send_validated(self, message: ViberMessage, priority: Priority) -> int:
        if self._callback is not None:
            message = self._callback.attach(message)
        return await self._pipeline.run(
            self._send_op,
            encode_message(message),
            priority,
            message_type=type_label(message.message_type),
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError


def _rate_reader(limiter: Limiter | None) -> Callable[[], float | None]:
    """The limiter's rate for the gauge (holding the limiter, not the client)."""

    def read() -> float | None:
        if limiter is None:
            return None
        try:
            return limiter.current_rate
        except Exception:  # noqa: BLE001 - a user's limiter: no measurement
            return None

    return read


def check_max_connections(value: object) -> None:
    """Raise `ConfigurationError` unless *value* is an int >= 1."""
    check_count("max_connections", value)


class _OnWrite:
    """The `before_write` hook of one bulk item: *on_write* once per write.

    Called again after *on_refused* (the attempt was refused for sure, a
    retry waits).
    """

    __slots__ = ("_called", "_index", "_on_refused", "_on_write")

    def __init__(
        self,
        on_write: Callable[[int], None],
        on_refused: Callable[[int], None] | None,
        index: int,
    ) -> None:
        self._on_write = on_write
        self._on_refused = on_refused
        self._index = index
        self._called = False

    def __call__(self) -> None:
        if not self._called:
            self._on_write(self._index)
            self._called = True  # (after: a failed call refuses the retry too)

    def not_written(self) -> None:
        if self._on_refused is not None and self._called:
            self._on_refused(self._index)
            self._called = False


def _send_outcome(result: SendResult) -> str:
    return result.outcome.value


def _status_outcome(result: StatusResult) -> str:
    return "ok" if result.ok else "failed"
