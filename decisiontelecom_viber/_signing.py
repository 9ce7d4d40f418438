"""Authenticated callback URLs: an HMAC token in the query string.

DecisionTelecom signs nothing it POSTs to a ``callback_url``, so anyone who
learns the URL can forge status changes and user replies. The best a client
can do is make the URL itself a capability: `signed_callback_url` adds a
token, an HMAC-SHA256 of the URL's query parameters under a secret only the
application knows, and `verify_callback_token` checks it on arrival.

What is signed is the *canonical query*: every query parameter except the
token, decoded, sorted, and re-encoded one way. The scheme, host and path are
deliberately left out: reverse proxies and load balancers rewrite them (TLS
ends at the proxy, so https becomes http; a mount prefix is stripped; the
Host header names an internal service). Signatures over the full URL break
exactly that way behind proxies, a well-known trouble with Twilio's request
signatures. Decoding before signing also survives proxies that re-encode the
query (``%7E`` versus ``~``, ``+`` versus ``%20``) or reorder it.

The token is static for a given query, so it is a bearer credential, not a
per-request signature: whoever sees the URL can replay it. A per-message
*reference* (``ref``) limits the damage: a token leaked with one message's
URL cannot be used for another reference. Keep the URL out of places it
need not be: access logs of servers and proxies record query strings, token
included (uvicorn's does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import attrs

from ._errors import ConfigurationError, ValidationError
from ._models import ViberMessage
from ._validation import check_http_url


__all__ = [
    "DEFAULT_TOKEN_PARAM",
    "REFERENCE_PARAM",
    "CallbackSigner",
    "SecretLike",
    "normalise_secrets",
    "query_pairs",
    "signed_callback_url",
    "token_matches",
    "verify_callback_token",
]

REFERENCE_PARAM = "ref"
DEFAULT_TOKEN_PARAM = "token"  # noqa: S105 - a parameter name, not a secret

# Domain separation: a token made for callback URLs cannot be mistaken for
# an HMAC the application computes with the same secret for something else.
_CONTEXT = b"decisiontelecom-viber callback-url v1\n"
# 128 bits of HMAC-SHA256: far beyond guessing, and 22 characters keep the
# callback URL short.
_TOKEN_BYTES = 16

SecretLike = str | bytes
QueryLike = str | bytes | Mapping[str, str] | Iterable[tuple[str, str]]


def normalise_secrets(secrets: SecretLike | Iterable[SecretLike]) -> tuple[bytes, ...]:
    """Return *secrets* as a non-empty tuple of non-empty byte strings.

    Raises:
        ConfigurationError: No secret, an empty one, or one of the wrong type.
    """
    items = [secrets] if isinstance(secrets, (str, bytes)) else list(secrets)
    if not items:
        raise ConfigurationError("at least one callback secret is required")
    keys: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            item = item.encode()
        if not isinstance(item, bytes):
            raise ConfigurationError(
                f"a callback secret must be str or bytes, not {type(item).__name__}"
            )
        if not item:
            raise ConfigurationError("a callback secret must not be empty")
        keys.append(item)
    return tuple(keys)


def query_pairs(query: QueryLike) -> list[tuple[str, str]]:
    """Return the decoded ``(name, value)`` pairs of a query, in order."""
    if isinstance(query, bytes):
        # An ASGI query_string is raw bytes; percent-escapes are decoded
        # as UTF-8 below, so latin-1 only has to carry ASCII through.
        query = query.decode("latin-1")
    if isinstance(query, str):
        return parse_qsl(query.removeprefix("?"), keep_blank_values=True)
    if isinstance(query, Mapping):
        return [(str(k), str(v)) for k, v in query.items()]
    return [(str(k), str(v)) for k, v in query]


def _canonical(pairs: Iterable[tuple[str, str]]) -> bytes:
    def enc(text: str) -> str:
        return quote(text, safe="", errors="surrogatepass")

    return "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(pairs)).encode()


def compute_token(key: bytes, pairs: Iterable[tuple[str, str]], param: str) -> str:
    """Return the token for the query *pairs* (the token parameter excluded)."""
    message = _CONTEXT + _canonical((k, v) for k, v in pairs if k != param)
    digest = hmac.digest(key, message, hashlib.sha256)[:_TOKEN_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_matches(
    keys: Iterable[bytes], pairs: list[tuple[str, str]], param: str
) -> bool:
    """Whether *pairs* carry exactly one token and it matches one of *keys*."""
    tokens = [value for name, value in pairs if name == param]
    if len(tokens) != 1:
        return False
    given = tokens[0].encode("utf-8", "surrogatepass")
    matched = False
    # Every key is tried (no early exit), so timing says nothing about
    # which key, if any, matched; compare_digest hides where bytes differ.
    for key in keys:
        expected = compute_token(key, pairs, param).encode()
        matched |= hmac.compare_digest(expected, given)
    return matched


def _names(segment: str, name: str) -> bool:
    """Whether one ``name=value`` segment of a query string is named *name*."""
    return any(key == name for key, _ in query_pairs(segment))


def signed_callback_url(
    url: str,
    secret: SecretLike,
    *,
    reference: str | None = None,
    param: str = DEFAULT_TOKEN_PARAM,
) -> str:
    """Return *url* with an HMAC token added as a query parameter.

    The token is HMAC-SHA256 over the URL's query parameters (all but the
    token itself, sorted; ``ref`` included), truncated to 128 bits and
    base64url-encoded without padding (22 characters). Existing parameters
    are kept as written and signed; an existing token is replaced. Scheme,
    host and path are not signed, so the URL still verifies after a reverse
    proxy rewrites them.

    Args:
        url: The callback URL, e.g. ``"https://example.com/viber/callbacks"``.
        secret: The signing secret (use at least 32 random bytes, e.g.
            ``secrets.token_urlsafe(32)``).
        reference: A per-message reference (e.g. your order ID), added as
            query parameter ``ref`` and covered by the token.
        param: Name of the token query parameter.

    Returns:
        The signed URL.

    Raises:
        ConfigurationError: The secret is empty, the reference is empty, the
            URL already has a ``ref`` parameter while *reference* is given,
            or *param* is empty or ``ref``.
    """
    (key,) = normalise_secrets(secret)
    if not param or param == REFERENCE_PARAM:
        raise ConfigurationError(
            f"the token parameter must be a non-empty name other than "
            f"{REFERENCE_PARAM!r}"
        )
    parts = urlsplit(url)
    # Kept as written (not re-encoded), minus any old token.
    segments = [
        segment
        for segment in parts.query.split("&")
        if segment and not _names(segment, param)
    ]
    if reference is not None:
        if not reference:
            raise ConfigurationError("reference must not be empty")
        if any(name == REFERENCE_PARAM for name, _ in query_pairs(parts.query)):
            raise ConfigurationError(
                f"the URL already has a {REFERENCE_PARAM!r} parameter"
            )
        segments.append(f"{REFERENCE_PARAM}={quote(reference, safe='')}")
    token = compute_token(key, query_pairs("&".join(segments)), param)
    segments.append(f"{quote(param, safe='')}={token}")
    return urlunsplit(parts._replace(query="&".join(segments)))


def verify_callback_token(
    query: QueryLike,
    secrets: SecretLike | Iterable[SecretLike],
    *,
    param: str = DEFAULT_TOKEN_PARAM,
) -> bool:
    """Check the token of a callback URL made by `signed_callback_url`.

    Args:
        query: The query of the request: the raw query string (``str`` or
            the ASGI ``bytes``), a mapping, or ``(name, value)`` pairs. Pass
            the raw string when a parameter may repeat: a mapping keeps one
            value per name, and the check then fails.
        secrets: One secret, or several during key rotation (new and old);
            the token may match any of them.
        param: Name of the token query parameter.

    Returns:
        True when there is exactly one token and it matches. Comparisons run
        in constant time.

    Raises:
        ConfigurationError: No secret, or an empty one.
    """
    keys = normalise_secrets(secrets)
    return token_matches(keys, query_pairs(query), param)


class CallbackSigner:
    """Gives messages without a callback URL the client's, signed per message.

    Args:
        url: The callback URL.
        secrets: Signing secrets; the first signs (the others only verify).
        reference: Called with a message to get its reference (or None).
    """

    __slots__ = ("_key", "_reference", "_unsigned", "_url")

    def __init__(
        self,
        url: str,
        secrets: SecretLike | Iterable[SecretLike] | None,
        reference: Callable[[Any], str | None] | None,
    ) -> None:
        self._url = url
        self._key = normalise_secrets(secrets)[0] if secrets is not None else None
        self._reference = reference
        # Without a reference the signed URL is the same for every message.
        self._unsigned: str | None = None
        if self._key is None:
            self._unsigned = url
        elif reference is None:
            self._unsigned = signed_callback_url(url, self._key)

    @classmethod
    def build(
        cls,
        url: str | None,
        secrets: SecretLike | Iterable[SecretLike] | None,
        reference: Callable[[Any], str | None] | None,
    ) -> CallbackSigner | None:
        """A signer for a client's settings, or None when no URL is set.

        Raises:
            ConfigurationError: A secret or reference is given without a URL,
                or the URL is not an absolute http(s) URL.
        """
        if url is None:
            if secrets is not None or reference is not None:
                raise ConfigurationError(
                    "callback_secret and callback_reference need callback_url"
                )
            return None
        try:
            check_http_url("callback_url", url)
        except ValidationError as error:
            raise ConfigurationError(str(error)) from None
        return cls(url, secrets, reference)

    def url_for(self, message: Any) -> str:
        """The callback URL for *message*."""
        if self._unsigned is not None:
            return self._unsigned
        key = self._key or b""  # set whenever _unsigned is None
        if self._reference is None:
            return signed_callback_url(self._url, key)
        try:
            reference = self._reference(message)
        except Exception as error:
            # Your function's failure, before anything was sent.
            raise ValidationError(
                "callback_reference", f"raised {type(error).__name__}"
            ) from error
        if reference is not None and not isinstance(reference, str):
            raise ValidationError(
                "callback_reference",
                f"must return a string or None, not {type(reference).__name__}",
            )
        try:
            return signed_callback_url(self._url, key, reference=reference)
        except UnicodeError:
            raise ValidationError(
                "callback_reference", "returned text that is not valid Unicode"
            ) from None

    def signed_for(self, reference: str) -> str | None:
        """The URL with *reference* signed in; None without a secret."""
        if self._key is None:
            return None
        return signed_callback_url(self._url, self._key, reference=reference)

    def attach(self, message: ViberMessage) -> ViberMessage:
        """*message* with the callback URL, unless it has its own."""
        if message.callback_url is not None:
            return message
        return attrs.evolve(message, callback_url=self.url_for(message))
