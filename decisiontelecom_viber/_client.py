"""`AsyncViberClient`: configuration, lifecycle and the public methods.

Every call goes through one `Pipeline` (`_pipeline`): limiter, deadline,
request, exchange, decoding, in that order. The client's `ClientCore`
(`_clientcore`) builds it from the settings, hands it each call's body, and
closes it: `aclose` aborts the calls that have nothing on the wire and waits
for those that have. The bulk entry points' streams are built in
`_bulkcalls`, the argument checks and smaller parts in `_clientparts`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeAlias

import httpx

from ._bulk import ProgressCallback, ResultStream
from ._bulkcalls import send_stream, status_stream
from ._clientcore import ClientCore
from ._clientparts import check_message_id, client_base_url, metrics_snapshot
from ._clock import Clock
from ._constants import DEFAULT_CONCURRENCY, DEFAULT_MAX_CONNECTIONS
from ._credentials import install_log_scrubber, resolve_credentials
from ._errors import ClientClosedError, ConfigurationError, ValidationError
from ._limits import Limiter, Priority, RateLimit, check_priority
from ._metrics import ClientMetrics
from ._models import MessageReceipt, SendResult, StatusResult, ViberMessage
from ._options import DEFAULT, Default, coerce_message
from ._polling import poll_until_final
from ._retry import RetryHook, RetryPolicy
from ._telemetry import Telemetry


__all__ = ["AsyncViberClient", "MessageLike"]

MessageLike: TypeAlias = "ViberMessage | Mapping[str, Any]"
"""A `ViberMessage`, or a mapping of its field names."""


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

    # The machinery lives in one collaborator (`ClientCore`); the exchange
    # is also kept here, where white-box tests look at its TLS settings.
    __slots__ = ("_base_url", "_closed", "_core", "_exchange")

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
        self._base_url = client_base_url(base_url, allow_insecure_http)
        self._core = ClientCore(
            credentials,
            self._base_url,
            timeout=timeout,
            retry=retry,
            rate_limit=rate_limit,
            http_client=http_client,
            max_connections=max_connections,
            verify=verify,
            proxy=proxy,
            on_retry=on_retry,
            callback_url=callback_url,
            callback_secret=callback_secret,
            callback_reference=callback_reference,
            clock=clock,
            telemetry=telemetry,
        )
        self._exchange = self._core.exchange
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
        return self._core.clock

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force (one attempt when retries are off)."""
        return self._core.retrier.policy

    @property
    def rate_limiter(self) -> Limiter | None:
        """The limiter every call goes through (None when not limited)."""
        return self._core.limiter

    @property
    def current_rate(self) -> float | None:
        """Requests per second the limiter allows now; None when unlimited."""
        limiter = self._core.limiter
        return limiter.current_rate if limiter is not None else None

    @property
    def metrics(self) -> ClientMetrics:
        """A snapshot of this client's counters, for your metrics system."""
        return metrics_snapshot(self._core.tally, self._core.limiter)

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
        await self._core.close(first=first)

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
        return await self._core.send(coerce_message(message), priority)

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
        message_id = check_message_id(message_id)
        return await self._core.status(message_id, priority)

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
        if self._core.callback is None:
            return None
        try:
            return self._core.callback.signed_for(reference)
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
        return send_stream(
            messages,
            self._core.pipeline,
            self._core.send_op,
            self._core.callback,
            clock=self._core.clock,
            concurrency=concurrency,
            ordered=ordered,
            on_progress=on_progress,
            progress_interval=progress_interval,
            priority=priority,
            on_write=on_write,
            on_refused=on_refused,
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
        return status_stream(
            message_ids,
            self.get_message_status,
            clock=self._core.clock,
            concurrency=concurrency,
            ordered=ordered,
            on_progress=on_progress,
            progress_interval=progress_interval,
            priority=priority,
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
        message_id = check_message_id(message_id)
        priority = check_priority(priority)
        return await poll_until_final(
            lambda: self.get_message_status(message_id, priority=priority),
            message_id=message_id,
            clock=self._core.clock,
            timeout=timeout,
            poll_initial=poll_initial,
            poll_max=poll_max,
            until=until,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError
