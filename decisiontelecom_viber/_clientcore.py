"""The working parts behind `AsyncViberClient`'s public methods.

`ClientCore` resolves the client's settings into the objects every call
goes through (the limiter, the retrier, the exchange, the `Pipeline`, the
two operations, the callback signer), in the order whose first invalid
setting is the error raised; it also closes them, and runs the one send and
the one lookup the public methods are made of. The client keeps only what
users see (its settings' public views, the closed flag, the docstrings):
the class stays one readable surface, its machinery one collaborator.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, Callable, Sequence

import httpx

from ._clientparts import build_exchange, operations, rate_reader
from ._clock import Clock, SystemClock
from ._credentials import Credentials
from ._errors import ConfigurationError
from ._exchange import close_with_loop
from ._limits import Limiter, Priority, RateLimit
from ._metrics import Tally
from ._models import MessageReceipt, ViberMessage
from ._options import DEFAULT_TIMEOUT, Default, resolve_limiter, resolve_timeout
from ._pipeline import Pipeline
from ._retry import Retrier, RetryHook, RetryPolicy
from ._signing import CallbackSigner
from ._telemetry import Telemetry, instrument, type_label
from ._wire import encode_json, encode_message


__all__ = ["ClientCore"]


class ClientCore:
    """A client's limiter, retrier, exchange and pipeline, built and closed.

    Args:
        credentials: The access key, resolved.
        base_url: The API root, resolved.
        timeout: Per-attempt timeouts (`DEFAULT`: the default, or those of
            *http_client*).
        retry: The retry policy (None: one attempt).
        rate_limit: How requests are paced.
        http_client: The caller's ``httpx.AsyncClient`` (None: the default
            transport, owned).
        max_connections: The default transport's pool size.
        verify: The default transport's TLS verification.
        proxy: The default transport's proxy.
        on_retry: Hooks called before each retry.
        callback_url: The callback URL given to messages without one.
        callback_secret: The secret signing it.
        callback_reference: A message's reference, signed into its URL.
        clock: The time source (None: the system's).
        telemetry: The OpenTelemetry settings (None: off).

    Raises:
        ConfigurationError: An invalid setting.
    """

    __slots__ = (
        "callback",
        "clock",
        "exchange",
        "limiter",
        "loop_sentinel",
        "owns_exchange",
        "pipeline",
        "retrier",
        "send_op",
        "status_op",
        "tally",
        "telemetry",
    )

    def __init__(
        self,
        credentials: Credentials,
        base_url: httpx.URL,
        *,
        timeout: float | httpx.Timeout | Default | None,
        retry: RetryPolicy | None,
        rate_limit: RateLimit | Limiter | float | None,
        http_client: httpx.AsyncClient | None,
        max_connections: int,
        verify: ssl.SSLContext | str | bool,
        proxy: str | httpx.Proxy | Default | None,
        on_retry: RetryHook | Sequence[RetryHook],
        callback_url: str | None,
        callback_secret: str | bytes | Sequence[str | bytes] | None,
        callback_reference: Callable[[ViberMessage], str | None] | None,
        clock: Clock | None,
        telemetry: Telemetry | None,
    ) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a RetryPolicy or None")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.limiter = resolve_limiter(rate_limit, self.clock)
        self.tally = Tally()
        hooks = (on_retry,) if callable(on_retry) else tuple(on_retry)
        self.telemetry = instrument(telemetry, base_url, rate_reader(self.limiter))
        if self.telemetry is not None:
            # Retries counted where client.metrics counts them: scheduled.
            hooks = (*hooks, self.telemetry.count_retry)
        self.retrier = Retrier(
            retry,
            self.clock,
            hooks=hooks,
            paced=self.limiter is not None,
            tally=self.tally,
        )
        self.exchange, self.owns_exchange, timeout = build_exchange(
            http_client,
            credentials,
            timeout,
            base_url=base_url,
            max_connections=max_connections,
            verify=verify,
            proxy=proxy,
        )
        self.pipeline = Pipeline(
            exchange=self.exchange,
            limiter=self.limiter,
            retrier=self.retrier,
            credentials=credentials,
            headers=credentials.headers(http_client.headers if http_client else None),
            timeout=(
                DEFAULT_TIMEOUT
                if isinstance(timeout, Default)
                else resolve_timeout(timeout)
            ),
            clock=self.clock,
            tally=self.tally,
            telemetry=self.telemetry,
            on_bind=self.bound if self.owns_exchange else None,
        )
        self.loop_sentinel: AsyncGenerator[None, None] | None = None
        self.send_op, self.status_op = operations(base_url)
        self.callback = CallbackSigner.build(
            callback_url, callback_secret, callback_reference
        )

    def bound(self) -> None:
        """Close the pool when the loop of the first call shuts down."""
        # The pool belongs to this loop now.
        self.loop_sentinel = close_with_loop(self.exchange)

    async def close(self, *, first: bool) -> None:
        """What `AsyncViberClient.aclose` does (*first*: not closed before)."""
        if self.telemetry is not None:
            self.telemetry.retire()  # (its rate is no longer observed)
        try:
            if self.pipeline.owns_current_loop():
                # A second aclose() waits for the first one's calls too.
                await self.pipeline.close()
        finally:
            if first:
                sentinel, self.loop_sentinel = self.loop_sentinel, None
                if sentinel is not None and self.pipeline.owns_current_loop():
                    await sentinel.aclose()  # closes the exchange
                if self.owns_exchange:
                    await self.exchange.aclose()

    async def send(self, message: ViberMessage, priority: Priority) -> int:
        """Send *message* (valid), its callback URL signed; its message ID."""
        if self.callback is not None:
            message = self.callback.attach(message)
        return await self.pipeline.run(
            self.send_op,
            encode_message(message),
            priority,
            message_type=type_label(message.message_type),
        )

    async def status(self, message_id: int, priority: Priority) -> MessageReceipt:
        """Look up the status of *message_id* (valid)."""
        body = encode_json({"message_id": message_id})
        return await self.pipeline.run(
            self.status_op, body, priority, message_id=message_id
        )
