"""The parts `AsyncViberClient` is built from, and the checks of its inputs.

The client's constructor resolves its settings in a fixed order (the first
invalid one is the error raised); the pieces that are more than a line of
that order live here: the API root, the exchange (the default transport,
or the caller's ``httpx.AsyncClient``), the two operations, the limiter's
reader for the rate gauge, the metrics snapshot. Kept apart from the client
and its `ClientCore` so that those read as the order of things, and so that
`_bulkcalls` can share the message ID check without importing the client.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

import httpx

from ._checks import check_count
from ._constants import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_KEEPALIVE_EXPIRY,
    SEND_PATH,
    STATUS_PATH,
)
from ._credentials import Credentials
from ._errors import ConfigurationError, ValidationError
from ._exchange import ClientExchange, Exchange, TransportExchange
from ._limits import Limiter
from ._metrics import ClientMetrics, Tally
from ._models import MessageReceipt
from ._options import DEFAULT, Default, resolve_base_url
from ._pipeline import Operation
from ._transport import build_default_transport, environment_proxy
from ._wire import decode_send_response, decode_status_response


__all__ = [
    "build_exchange",
    "check_message_id",
    "client_base_url",
    "metrics_snapshot",
    "operations",
    "rate_reader",
]


def client_base_url(base_url: str | None, allow_insecure_http: bool) -> httpx.URL:
    """The API root: *base_url*, else the environment's, else the real API.

    Raises:
        ConfigurationError: It is not a valid root (or plain HTTP to a host
            that is not loopback, unless *allow_insecure_http*).
    """
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return resolve_base_url(base_url, allow_insecure_http=allow_insecure_http)


def check_message_id(message_id: object) -> int:
    """*message_id*, unless it is not a non-negative int (`ValidationError`)."""
    if (
        isinstance(message_id, bool)
        or not isinstance(message_id, int)
        or message_id < 0
    ):
        raise ValidationError("message_id", "must be a non-negative integer")
    return message_id


def check_max_connections(value: object) -> None:
    """Raise `ConfigurationError` unless *value* is an int >= 1."""
    check_count("max_connections", value)


def rate_reader(limiter: Limiter | None) -> Callable[[], float | None]:
    """The limiter's rate for the gauge (holding the limiter, not the client)."""

    def read() -> float | None:
        if limiter is None:
            return None
        try:
            return limiter.current_rate
        except Exception:  # noqa: BLE001 - a user's limiter: no measurement
            return None

    return read


def build_exchange(
    http_client: httpx.AsyncClient | None,
    credentials: Credentials,
    timeout: float | httpx.Timeout | Default | None,
    *,
    base_url: httpx.URL,
    max_connections: int,
    verify: ssl.SSLContext | str | bool,
    proxy: str | httpx.Proxy | Default | None,
) -> tuple[Exchange, bool, float | httpx.Timeout | Default | None]:
    """The client's exchange, whether it owns it, and the timeout to use.

    With *http_client*, the exchange sends with it (and its timeout is the
    default); else it is the default transport, which the client owns.

    Raises:
        ConfigurationError: *proxy* or *verify* given with *http_client*, or
            an invalid *max_connections*.
    """
    if http_client is not None:
        if proxy is not DEFAULT or verify is not True:
            raise ConfigurationError(
                "proxy and verify configure the default transport; with "
                "http_client=..., configure them on your httpx.AsyncClient"
            )
        if isinstance(timeout, Default):
            timeout = http_client.timeout
        return ClientExchange(http_client, credentials.scrub), False, timeout
    check_max_connections(max_connections)
    exchange = TransportExchange(
        build_default_transport(
            verify=verify,
            max_connections=max_connections,
            keepalive_expiry=DEFAULT_KEEPALIVE_EXPIRY,
            proxy=(
                environment_proxy(base_url) if isinstance(proxy, Default) else proxy
            ),
        ),
        credentials.scrub,
    )
    return exchange, True, timeout


def operations(
    base_url: httpx.URL,
) -> tuple[Operation[int], Operation[MessageReceipt]]:
    """The send and the status lookup, at their endpoints under *base_url*."""
    root = base_url.path
    send = Operation(
        "send_message",
        base_url.join(f"{root}/{SEND_PATH}"),
        idempotent=False,
        decode=decode_send_response,
    )
    status = Operation(
        "get_message_status",
        base_url.join(f"{root}/{STATUS_PATH}"),
        idempotent=True,
        decode=decode_status_response,
    )
    return send, status


def metrics_snapshot(tally: Tally, limiter: Limiter | None) -> ClientMetrics:
    """A `ClientMetrics` of *tally*, with *limiter*'s rate and estimate."""
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
