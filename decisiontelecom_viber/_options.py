"""Client settings turned into ready-to-use values, checked once at construction."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final

import httpx

from ._clock import Clock
from ._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
)
from ._errors import ConfigurationError, ValidationError
from ._limits import Limiter, RateLimit
from ._models import ViberMessage
from ._ratelimit import AdaptiveLimiter


__all__ = [
    "DEFAULT",
    "DEFAULT_TIMEOUT",
    "Default",
    "coerce_message",
    "resolve_base_url",
    "resolve_limiter",
    "resolve_timeout",
]


class Default:
    """Marks an argument left out (where None means something else)."""

    def __repr__(self) -> str:
        return "<default>"


DEFAULT: Final = Default()

DEFAULT_TIMEOUT = httpx.Timeout(
    DEFAULT_READ_TIMEOUT,
    connect=DEFAULT_CONNECT_TIMEOUT,
    pool=DEFAULT_POOL_TIMEOUT,
)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_base_url(base_url: str, *, allow_insecure_http: bool) -> httpx.URL:
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


def coerce_message(item: object) -> ViberMessage:
    if isinstance(item, ViberMessage):
        return item
    if isinstance(item, Mapping):
        return ViberMessage.from_dict(item)
    raise ValidationError(
        "message",
        f"must be a ViberMessage or a mapping of its fields, not {type(item).__name__}",
    )


def resolve_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """An `httpx.Timeout` from seconds (or None for no timeout)."""
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def resolve_limiter(
    rate_limit: RateLimit | Limiter | float | None, clock: Clock
) -> Limiter | None:
    """The limiter for a ``rate_limit=`` argument (None: no limiting)."""
    if rate_limit is None:
        return None
    if isinstance(rate_limit, bool):
        raise ConfigurationError(
            "rate_limit must be a RateLimit, a Limiter, a rate or None"
        )
    if isinstance(rate_limit, (int, float)):
        return AdaptiveLimiter(RateLimit(rate=float(rate_limit)), clock)
    if isinstance(rate_limit, RateLimit):
        return AdaptiveLimiter(rate_limit, clock)
    if isinstance(rate_limit, Limiter):
        rate_limit.bind(clock)
        return rate_limit
    raise ConfigurationError(
        "rate_limit must be a RateLimit, a Limiter, a rate or None"
    )
