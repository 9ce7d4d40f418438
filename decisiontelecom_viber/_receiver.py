"""`CallbackReceiver`: a plain ASGI 3 app that receives DecisionTelecom callbacks.

No web framework at runtime: it runs on its own under any ASGI server
(``uvicorn module:receiver``) and serves a route of Starlette or FastAPI
(``app.add_route("/viber/callbacks", receiver, methods=["POST"])``). One
request goes through:

1. method (405 unless POST), 2. token (403, when a secret is set),
3. size (413, from Content-Length, then while streaming),
4. `parse_callback` (400 with the reason), 5. de-duplication (200 for a
repeat), 6. the handler (200, or 500 when it raises, so that the provider
delivers again).

Log lines never show phone numbers or message texts in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import attrs

from ._asgi import Receive, Scope, Send, serve_lifespan
from ._callbacks import (
    DEFAULT_MAX_CALLBACK_BYTES,
    CallbackEvent,
    IncomingMessage,
    StatusCallback,
    parse_callback,
)
from ._checks import check_count
from ._errors import CallbackError, ConfigurationError
from ._signing import (
    DEFAULT_TOKEN_PARAM,
    REFERENCE_PARAM,
    SecretLike,
    normalise_secrets,
    query_pairs,
    signed_callback_url,
    token_matches,
)


__all__ = ["CallbackReceiver", "MessageHandler", "ReceiverStats", "StatusHandler"]

logger = logging.getLogger("decisiontelecom_viber")

StatusHandler: TypeAlias = Callable[[StatusCallback], Awaitable[object]]
"""An async callable that takes a `StatusCallback`."""
MessageHandler: TypeAlias = Callable[[IncomingMessage], Awaitable[object]]
"""An async callable that takes an `IncomingMessage`."""


@attrs.frozen(kw_only=True)
class ReceiverStats:
    """Counters of a `CallbackReceiver`, as a snapshot.

    Attributes:
        received: POST requests that reached the receiver.
        dispatched: Events handled: the handler returned, or there was none.
        duplicates: Repeated deliveries answered without calling a handler.
        rejected: Requests refused with 400, 403 or 413.
        failed: Events whose handler raised (answered 500).
    """

    received: int = 0
    dispatched: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0


class _Rejected(Exception):
    """A request answered with a 4xx status; carries the status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _mask_phone(phone: str) -> str:
    return "*" * max(len(phone) - 2, 0) + phone[-2:] if len(phone) > 4 else "****"


def _describe(event: CallbackEvent) -> str:
    """Describe *event* for a log line: IDs in clear, phone and text masked."""
    if isinstance(event, StatusCallback):
        sms = (
            f", sms {event.sms_message_id} {event.sms_message_status!r}"
            if event.sms_message_id is not None or event.sms_message_status is not None
            else ""
        )
        return f"status of message {event.message_id}: {event.status!r}{sms}"
    text = "no text" if event.text is None else f"{len(event.text)} characters"
    return (
        f"reply {event.message_token} from {_mask_phone(event.phone_number)} "
        f"to message {event.reply_to_message_id} ({text})"
    )


def _fingerprint(event: CallbackEvent) -> bytes:
    # Canonical JSON of the parsed payload, so that a redelivery with other
    # whitespace or key order is still recognised; ensure_ascii keeps lone
    # surrogates (legal in JSON escapes) encodable. The reference is part of
    # the URL, not the body, and distinguishes deliveries too.
    canonical = (
        json.dumps(event.raw, sort_keys=True, separators=(",", ":"), default=repr)
        + "\x00"
        + (event.reference or "")
    )
    return hashlib.sha256(canonical.encode()).digest()


def _check_handler(name: str, handler: object) -> None:
    if handler is not None and not callable(handler):
        raise ConfigurationError(f"{name} must be an async callable or None")


class CallbackReceiver:
    """An ASGI 3 app that receives status callbacks and 2Way replies.

    Serve it where the ``callback_url`` of your messages points, e.g.
    ``app.add_route("/viber/callbacks", receiver, methods=["POST"])`` in
    Starlette or FastAPI (not ``app.mount``: a mount redirects its own path,
    and callbacks are not redirected), or run it alone with ``uvicorn
    module:receiver``. It answers every path it is given.

    Answers: 200 when the event was handled (or is a repeat); 400 with the
    reason when the body is malformed; 403 when the token is missing or
    wrong; 405 for methods other than POST; 413 when the body is too large;
    500 when the handler raised (the exception is logged), so the provider
    can deliver again. Cancellation is never swallowed.

    Args:
        on_status: Async callable awaited with each `StatusCallback`.
        on_message: Async callable awaited with each `IncomingMessage`.
            An event without a handler is answered 200 and logged at DEBUG.
        secret: A secret (or several, newest first, during key rotation)
            with which the callback URLs were signed by `signed_callback_url`
            or `sign_url`. None turns the token check off.
        max_body_bytes: Largest body accepted, in bytes (default 64 KiB).
        deduplicate: How many recent deliveries to remember (0, the default,
            turns de-duplication off). A repeat of a remembered payload is
            answered 200 without calling the handler; a delivery whose
            handler failed is not remembered.
        token_param: Name of the token query parameter.

    Raises:
        ConfigurationError: An argument is invalid (an empty secret, a
            non-positive size...).
    """

    __slots__ = (
        "_done",
        "_in_flight",
        "_keys",
        "_max_body_bytes",
        "_on_message",
        "_on_status",
        "_remember",
        "_stats",
        "_token_param",
    )

    def __init__(
        self,
        *,
        on_status: StatusHandler | None = None,
        on_message: MessageHandler | None = None,
        secret: SecretLike | Iterable[SecretLike] | None = None,
        max_body_bytes: int = DEFAULT_MAX_CALLBACK_BYTES,
        deduplicate: int = 0,
        token_param: str = DEFAULT_TOKEN_PARAM,
    ) -> None:
        _check_handler("on_status", on_status)
        _check_handler("on_message", on_message)
        check_count("max_body_bytes", max_body_bytes, 1)
        check_count("deduplicate", deduplicate, 0)
        if not token_param or token_param == REFERENCE_PARAM:
            raise ConfigurationError(
                f"token_param must be a non-empty name other than {REFERENCE_PARAM!r}"
            )
        self._on_status = on_status
        self._on_message = on_message
        self._keys = None if secret is None else normalise_secrets(secret)
        self._max_body_bytes = max_body_bytes
        self._remember = deduplicate
        self._token_param = token_param
        self._done: OrderedDict[bytes, None] = OrderedDict()
        # Deliveries being handled now: a repeat arriving meanwhile (the
        # provider timed out on a slow handler) waits for the first outcome
        # instead of running the handler twice.
        self._in_flight: dict[bytes, asyncio.Future[bool]] = {}
        self._stats = ReceiverStats()

    @property
    def stats(self) -> ReceiverStats:
        """A snapshot of the counters."""
        return self._stats

    def sign_url(self, url: str, *, reference: str | None = None) -> str:
        """Sign *url* with the first (newest) secret, for this receiver.

        Raises:
            ConfigurationError: The receiver has no secret.
        """
        if self._keys is None:
            raise ConfigurationError("this CallbackReceiver has no secret")
        return signed_callback_url(
            url, self._keys[0], reference=reference, param=self._token_param
        )

    def _count(self, **changes: int) -> None:
        current = self._stats
        self._stats = attrs.evolve(
            current,
            **{name: getattr(current, name) + n for name, n in changes.items()},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http``, ``lifespan`` or ``websocket``)."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await serve_lifespan(receive, send)  # nothing to start or stop
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":
            logger.debug("callback receiver: %s refused (405)", scope.get("method"))
            await _respond(send, 405, b"method not allowed", allow=True)
            return
        self._count(received=1)
        try:
            reference = self._authenticate(scope)
            body = await self._read_body(scope, receive)
            if body is None:
                return  # the client went away; there is no one to answer
            try:
                event = parse_callback(body, max_bytes=self._max_body_bytes)
            except CallbackError as error:
                raise _Rejected(400, error.reason) from None
        except _Rejected as rejected:
            self._count(rejected=1)
            logger.warning(
                "callback rejected with %d: %s (client %s)",
                rejected.status,
                rejected.reason,
                _client(scope),
            )
            await _respond(send, rejected.status, rejected.reason.encode())
            return
        if reference is not None or self._keys is not None:
            event = attrs.evolve(
                event, reference=reference, authenticated=self._keys is not None
            )
        await self._dispatch(event, send)

    def _authenticate(self, scope: Scope) -> str | None:
        """Check the token; return the ``ref`` query parameter, if any."""
        pairs = query_pairs(bytes(scope.get("query_string", b"")))
        if self._keys is not None:
            if not any(name == self._token_param for name, _ in pairs):
                raise _Rejected(403, "missing token")
            if not token_matches(self._keys, pairs, self._token_param):
                raise _Rejected(403, "invalid token")
        references = [value for name, value in pairs if name == REFERENCE_PARAM]
        return references[0] if len(references) == 1 else None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        limit = self._max_body_bytes
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                digits = value.strip()
                if not digits.isdigit():  # bytes: ASCII digits only
                    raise _Rejected(400, "invalid Content-Length")
                # The length test keeps int() away from Python's digit limit.
                if len(digits) > 18 or int(digits) > limit:
                    raise _Rejected(413, f"body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > limit:  # stop reading: at most one chunk past the limit
                raise _Rejected(413, f"body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _handler(
        self, event: CallbackEvent
    ) -> Callable[[Any], Awaitable[object]] | None:
        if isinstance(event, StatusCallback):
            return self._on_status
        return self._on_message

    async def _dispatch(self, event: CallbackEvent, send: Send) -> None:
        key = _fingerprint(event) if self._remember else None
        if key is not None:
            if key in self._done:
                self._done.move_to_end(key)
                await self._answer_duplicate(event, send)
                return
            first = self._in_flight.get(key)
            if first is not None:
                # shield: cancelling this request must not cancel the wait
                # of others on the same future.
                if await asyncio.shield(first):
                    await self._answer_duplicate(event, send)
                else:
                    self._count(failed=1)
                    await _respond(send, 500, b"handler failed")
                return
            self._in_flight[key] = asyncio.get_running_loop().create_future()
        ok = False
        try:
            ok = await self._call_handler(event)
        finally:
            if key is not None:
                future = self._in_flight.pop(key)
                future.set_result(ok)
                if ok:
                    self._done[key] = None
                    if len(self._done) > self._remember:
                        self._done.popitem(last=False)
        if ok:
            self._count(dispatched=1)
            await _respond(send, 200, b"ok")
        else:
            self._count(failed=1)
            await _respond(send, 500, b"handler failed")

    async def _call_handler(self, event: CallbackEvent) -> bool:
        handler = self._handler(event)
        if handler is None:
            logger.debug(
                "callback without a handler, acknowledged: %s", _describe(event)
            )
            return True
        logger.debug("callback received: %s", _describe(event))
        try:
            await handler(event)
        except Exception:
            # Exception, not BaseException: CancelledError must propagate.
            logger.exception("callback handler failed for %s", _describe(event))
            return False
        return True

    async def _answer_duplicate(self, event: CallbackEvent, send: Send) -> None:
        self._count(duplicates=1)
        logger.debug("callback repeated, not handled again: %s", _describe(event))
        await _respond(send, 200, b"ok (duplicate)")


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


async def _respond(
    send: Send, status: int, body: bytes, *, allow: bool = False
) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if allow:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
