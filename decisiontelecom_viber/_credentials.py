"""The access key: resolved once, sent as a header, and scrubbed from everything else.

The key lives in one `Credentials` object whose repr shows nothing. No
function that holds the key in a local variable raises (`resolve_credentials`
returns its error instead), so a traceback rendered with its frames' locals
(rich's ``show_locals``) never shows it. `Credentials.scrub` removes the key
and its base64 forms from text a server or a library may have echoed back
(an error page quoting the request, say).
"""

from __future__ import annotations

import base64
import logging
import os
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from ._constants import ACCESS_KEY_ENV
from ._errors import ConfigurationError, ViberError
from ._version import user_agent


__all__ = ["Credentials", "install_log_scrubber", "resolve_credentials"]

_REDACTED = "[secret]"
_MIN_SECRET = 8


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


class Credentials:
    """An access key, as a header to send and a list of strings to scrub."""

    __slots__ = ("__weakref__", "_authorization", "_secrets")

    def __init__(self, key: str) -> None:
        token = _b64(key)
        self._authorization = f"Basic {token}"
        # Longest first: the header before the token inside it. curl's form
        # (base64 of "key:") is scrubbed too, and the key itself.
        # (Strings too short to be a real key would only mangle messages.)
        candidates = {self._authorization, token, _b64(f"{key}:"), key}
        self._secrets = tuple(
            sorted((s for s in candidates if len(s) >= _MIN_SECRET), key=len)[::-1]
        )

    def __repr__(self) -> str:
        return "<Credentials [secret]>"

    def headers(self, base: Mapping[str, str] | None) -> httpx.Headers:
        """Request headers: *base* (a user client's defaults), then ours.

        httpx masks the Authorization header in its reprs.
        """
        headers = httpx.Headers(base)
        headers.update(
            {
                "Authorization": self._authorization,
                "Content-Type": "application/json",
                "Accept": "application/json",
                # Only what httpx always decodes: left to aiohttp, the
                # header names every codec aiohttp has (zstd with
                # aiohttp[speedups]), which httpx may not read.
                "Accept-Encoding": "gzip, deflate",
                "User-Agent": user_agent(),
            }
        )
        return headers

    def scrub(self, text: str) -> str:
        """*text* with the key and its encoded forms replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    def scrub_error(self, error: ViberError) -> None:
        """Scrub an error the SDK built: its message and its text attributes.

        An API error keeps the answer's body and headers for diagnosis; a
        server echoing the request would put the key there.
        """
        error.args = tuple(self._scrubbed(arg) for arg in error.args)
        for name, value in vars(error).items():
            scrubbed = self._scrubbed(value)
            if scrubbed is not value:
                setattr(error, name, scrubbed)

    def _scrubbed(self, value: Any) -> Any:
        if isinstance(value, str):
            clean = self.scrub(value)
            return value if clean == value else clean
        if isinstance(value, Mapping):
            items = {k: self._scrubbed(v) for k, v in value.items()}
            if any(items[k] is not v for k, v in value.items()):
                return items
        return value


def resolve_credentials(access_key: str | None) -> Credentials | ConfigurationError:
    """The credentials for *access_key* (or the environment's), or the error.

    The error is returned, not raised: this frame holds the key, and a
    traceback through it would show it to anyone rendering locals.
    """
    key: object = (
        access_key if access_key is not None else os.environ.get(ACCESS_KEY_ENV)
    )
    if not key:
        return ConfigurationError(
            "no DecisionTelecom access key: pass AsyncViberClient(access_key=...) "
            f"or set the {ACCESS_KEY_ENV} environment variable "
            "(your account manager issues the key)"
        )
    if not isinstance(key, str) or key != key.strip() or "\n" in key:
        return ConfigurationError(
            "the access key must be a string without surrounding whitespace "
            "(a key read from a file often ends with a newline)"
        )
    return Credentials(key)


# Loggers of the HTTP stack that write what they send and receive at DEBUG:
# httpcore logs response headers as they came, which a server may have
# copied the credentials into. (Filters on a logger apply to the records it
# creates, so each one is named.)
_HTTP_LOGGERS = (
    "decisiontelecom_viber",
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "hpack.hpack",
    "hpack.table",
    # aiohttp.log's loggers (the cookie parser logs illegal names verbatim
    # on aiohttp.internal, at WARNING).
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    "asyncio",
)


class _Scrubber(logging.Filter):
    """Removes the credentials of every live client from the stack's records."""

    def __init__(self) -> None:
        super().__init__()
        self.credentials: weakref.WeakSet[Credentials] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.credentials:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        clean = text
        for credentials in list(self.credentials):
            clean = credentials.scrub(clean)
        if clean != text:
            record.msg, record.args = clean, None
        return True


_scrubber = _Scrubber()


def install_log_scrubber(credentials: Credentials) -> None:
    """Scrub *credentials* from the HTTP stack's log records while they live."""
    if not _scrubber.credentials:
        for name in _HTTP_LOGGERS:
            logger = logging.getLogger(name)
            if _scrubber not in logger.filters:
                logger.addFilter(_scrubber)
    _scrubber.credentials.add(credentials)
