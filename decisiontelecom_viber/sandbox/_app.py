"""`Sandbox`: the fake DecisionTelecom Viber API as a plain ASGI app.

Plain ASGI rather than a framework, for speed and because breaking a
connection needs uvicorn's own ``send`` callable (see `_http`), which
framework middleware would wrap. Every API answer goes through
`Sandbox._answer`: record the request, wait out its latency, send.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._asgi import Receive, Scope, Send, serve_lifespan
from .._enums import MessageStatus, SmsStatus
from ._admin import Admin
from ._config import SandboxConfig
from ._faults import FAULT_STATUS, pick_fault, sample_latency
from ._http import (
    Dropped,
    ReplyFor,
    auth_table,
    authenticate,
    error_reply,
    fault_reply,
    header,
    invalid_reply,
    ok_reply,
    read_body,
    recorded_status,
    send_reply,
)
from ._requests import SandboxValidationError, normalise_send, parse_message_id
from ._scheduler import Callbacks
from ._state import (
    AcceptedMessage,
    CallbackRecord,
    RequestRecord,
    SandboxState,
    SandboxStats,
)


__all__ = ["API_PREFIX", "Sandbox"]


API_PREFIX = "/v1/api"

# The traceparent of the request being answered (each request is a task).
_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sandbox_traceparent", default=None
)


@attrs.frozen
class _Call:
    """An API request being answered: where the answer goes, and when.

    Attributes:
        send: The connection's ``send``.
        path: The request path.
        delay: Seconds to wait before answering; None answers at once.
        key: The access key, once authenticated.
        headers: The rate-limit headers, once the request is counted.
    """

    send: Send
    path: str
    delay: float | None
    key: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


class Sandbox:
    """The fake API: an ASGI app with recorded state.

    Serve it with `serve_sandbox` (uvicorn on loopback), mount it in any ASGI
    server, or call it in process through `httpx.ASGITransport`. Its Python
    methods are safe to call from another thread than the one serving it.

    Args:
        config: The knobs; defaults to `SandboxConfig()`.
        wall_clock: The Unix time of the rate limits (Yii2 counts whole
            seconds of it); defaults to `time.time`. Tests pass a fake one.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config if config is not None else SandboxConfig()
        self._wall_clock = wall_clock
        self._state = SandboxState(self._config.first_message_id)
        self._rng = random.Random(self._config.seed)
        self._epoch = time.monotonic()
        self._api_offset = 0.0
        self._auth = auth_table(self._config)
        self._callbacks = Callbacks(
            self._state, self.api_time, lambda: self._config, lambda: self._rng
        )
        self._admin = Admin(self)

    # -- configuration and time ----------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        """The knobs in force."""
        return self._config

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change some knobs, keeping the recorded state. Returns the new config."""
        return self._apply(self._config.replace(**changes), clear=False)

    def reset(self, config: SandboxConfig | None = None) -> None:
        """Forget every request, message and callback; optionally change config.

        Callbacks planned before the reset are dropped. API time starts over.
        """
        self._apply(config if config is not None else self._config, clear=True)

    def _apply(self, config: SandboxConfig, *, clear: bool) -> SandboxConfig:
        with self._state.lock:
            now = self.api_time()
            self._config = config
            self._auth = auth_table(config)
            self._state.buckets.clear()
            if clear:
                self._state.clear(config.first_message_id)
                self._rng = random.Random(config.seed)
                self._api_offset = 0.0
            else:
                self._api_offset = now  # a new time scale must not jump the clock
            self._epoch = time.monotonic()
        self._callbacks.wake()
        return config

    def api_time(self) -> float:
        """API seconds since the last reset (runs ``time_scale`` times real time)."""
        elapsed = time.monotonic() - self._epoch
        return self._api_offset + elapsed * self._config.time_scale

    def advance(self, seconds: float) -> None:
        """Move API time forward: statuses and callbacks due by then happen now."""
        if seconds < 0:
            raise ValueError("API time only moves forward")
        with self._state.lock:
            self._api_offset += seconds
        self._callbacks.wake()

    # -- what it saw (copies: the serving thread goes on changing the state) --

    @property
    def stats(self) -> SandboxStats:
        """Counters since the last reset."""
        return self._state.stats()

    def requests(self) -> list[RequestRecord]:
        """Every recorded request, in order of arrival."""
        with self._state.lock:
            return list(self._state.requests)

    def callbacks(self) -> list[CallbackRecord]:
        """Every callback delivery attempt, in order."""
        with self._state.lock:
            return list(self._state.callbacks)

    def accepted_ids(self) -> set[int]:
        """IDs of every accepted message."""
        with self._state.lock:
            return set(self._state.messages)

    def messages(self) -> list[AcceptedMessage]:
        """Every accepted message, in order of acceptance."""
        with self._state.lock:
            return list(self._state.messages.values())

    def message(self, message_id: int) -> AcceptedMessage:
        """One accepted message (KeyError if there is none with that ID)."""
        with self._state.lock:
            return self._state.messages[message_id]

    def status_of(self, message_id: int) -> tuple[MessageStatus, SmsStatus | None]:
        """The Viber and SMS statuses of a message now."""
        return self.message(message_id).status_at(self.api_time())

    def state_json(self) -> dict[str, Any]:
        """Config, counters and API time, as JSON-ready data."""
        return self._admin.state_json()

    def messages_json(self) -> list[dict[str, Any]]:
        """Accepted messages with their statuses now, as JSON-ready data."""
        return self._admin.messages_json()

    # -- steering ---------------------------------------------------------------

    def simulate_reply(self, message_id: int, text: str | None = None) -> None:
        """Make the recipient of a message reply now (POSTed to its callback URL).

        Raises:
            KeyError: No message with that ID.
            ValueError: The message has no callback URL.
            RuntimeError: The sandbox has not served a request yet, so it has
                no event loop to deliver from.
        """
        message = self.message(message_id)
        url = message.payload.get("callback_url")
        if not url:
            raise ValueError(f"message {message_id} has no callback_url")
        reply = text if text is not None else self._config.reply_text
        self._callbacks.reply_now(message, str(url), reply)

    async def aclose(self) -> None:
        """Stop delivering callbacks (call on the loop that served requests)."""
        await self._callbacks.aclose()

    # -- ASGI ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http`` or ``lifespan``; others are ignored)."""
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, on_shutdown=self.aclose)
            return
        if scope["type"] != "http":
            return
        if not self._callbacks.started:
            self._callbacks.start()
        path: str = scope["path"]
        body = await read_body(receive)
        try:
            if path.startswith("/__sandbox/"):
                await self.handle_admin(scope["method"], path, body, send)
            elif scope["method"] == "POST" and path == f"{API_PREFIX}/send-viber":
                await self._api(scope, body, send, sending=True)
            elif scope["method"] == "POST" and path == f"{API_PREFIX}/receive-viber":
                await self._api(scope, body, send, sending=False)
            else:
                # Not an API endpoint: answered at once, with no latency.
                call = _Call(send, path, None)
                await self._answer(call, "not_found", 404, error_reply("not_found"))
        except Dropped:
            pass

    async def handle_admin(
        self, method: str, path: str, body: bytes, send: Send
    ) -> None:
        """Answer a ``/__sandbox/`` request (see `Admin`)."""
        await self._admin.handle(method, path, body, send)

    async def _api(
        self, scope: Scope, raw: bytes, send: Send, *, sending: bool
    ) -> None:
        config = self._config
        _traceparent.set(header(scope, b"traceparent"))  # (this request's task)
        call = _Call(send, scope["path"], self._latency(config))
        key = authenticate(self._auth, scope)
        if key is None:
            await self._answer(call, "unauthorized", 401, error_reply("unauthorized"))
            return
        headers, allowed = self._state.rate_limit(key, config, self._wall_clock)
        call = attrs.evolve(call, key=key, headers=headers)
        if not allowed:
            await self._answer(call, "rate_limited", 429, error_reply("rate_limited"))
            return
        fault = pick_fault(config, self._rng)
        if fault in FAULT_STATUS:
            await self._answer(call, fault, FAULT_STATUS[fault], fault_reply(fault))
            return
        try:
            payload = json.loads(raw)
        except ValueError:
            await self._answer(call, "invalid", 400, error_reply("bad_json"))
            return
        if sending:
            await self._send_viber(call, key, payload, fault)
        else:
            await self._receive_viber(call, payload)

    async def _send_viber(
        self, call: _Call, key: str, payload: Any, fault: str | None
    ) -> None:
        try:
            message, notes = normalise_send(payload)
        except SandboxValidationError as error:
            invalid = invalid_reply(error.field)
            await self._answer(call, "invalid", 400, invalid, payload=payload)
            return
        accepted = self._accept(key, message)
        if accepted is None:
            no_balance = error_reply("no_balance")
            await self._answer(call, "no_balance", 402, no_balance, payload=payload)
            return
        # A fault after acceptance: the message is accepted, its answer lost.
        message_id = accepted.message_id
        await self._answer(
            call,
            fault or "accepted",
            None if fault else 200,
            ok_reply({"message_id": message_id}, fault),
            message_id=message_id,
            payload=payload,
            notes=notes,
        )

    async def _receive_viber(self, call: _Call, payload: Any) -> None:
        now = self.api_time()
        try:
            message = self._lookup(parse_message_id(payload), now)
        except SandboxValidationError as error:
            invalid = invalid_reply(error.field)
            await self._answer(call, "invalid", 400, invalid, payload=payload)
            return
        message_id = message.message_id
        status, sms_status = message.status_at(now)
        body: dict[str, Any] = {"message_id": message_id, "status": int(status)}
        if sms_status is not None:
            body["sms_message_id"] = message.timeline.sms_message_id
            body["sms_message_status"] = int(sms_status)
        with self._state.lock:
            self._state.status_lookups += 1
        await self._answer(
            call, "status", 200, ok_reply(body), message_id=message_id, payload=payload
        )

    async def _answer(
        self,
        call: _Call,
        outcome: str,
        status: int | None,
        reply: ReplyFor,
        *,
        message_id: int | None = None,
        payload: Any = None,
        notes: tuple[str, ...] = (),
    ) -> None:
        """Answer an API request: record it, wait out its latency, send *reply*.

        Args:
            call: The request.
            outcome: Its `RequestRecord.outcome`.
            status: The status it gets in the default profile (None when the
                connection is broken); the record shows the profile's.
            reply: The answer, decided once the latency is waited out.
            message_id: The message concerned, if any.
            payload: The JSON body, once it parsed.
            notes: What was accepted although the documentation is unclear.
        """
        config = self._config
        self._state.record_request(
            path=call.path,
            access_key=call.key,
            outcome=outcome,
            http_status=recorded_status(config, outcome, status),
            message_id=message_id,
            payload=payload,
            keep=config.record_requests,
            notes=notes,
            traceparent=_traceparent.get(),
        )
        if call.delay is not None:
            await asyncio.sleep(call.delay)
        await send_reply(call.send, reply(self._config), call.headers)

    # -- pieces ---------------------------------------------------------------

    def _lookup(self, message_id: int, now: float) -> AcceptedMessage:
        with self._state.lock:
            message = self._state.messages.get(message_id)
        if message is None or now - message.accepted_at > self._config.status_retention:
            raise SandboxValidationError("message_id")
        return message

    def _accept(self, key: str, payload: dict[str, Any]) -> AcceptedMessage | None:
        accepted = self._state.accept(
            key, payload, self._config, self._rng, self.api_time
        )
        if accepted is None:
            return None
        message, generation = accepted
        url = payload.get("callback_url")
        if url:
            self._callbacks.plan(message, str(url), generation)
        return message

    def _latency(self, config: SandboxConfig) -> float:
        delay, spiked = sample_latency(config, self._rng)
        if spiked:
            with self._state.lock:
                self._state.latency_spikes += 1
        return delay
