"""`Sandbox`: the fake DecisionTelecom Viber API as a plain ASGI app.

Plain ASGI rather than a framework, for speed and because breaking a
connection needs uvicorn's own ``send`` callable (see `_http`), which
framework middleware would wrap.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._enums import MessageStatus, SmsStatus
from ._admin import AdminMixin
from ._buckets import answer_headers, make_bucket
from ._config import SandboxConfig
from ._faults import FAULT_STATUS, pick_fault, sample_latency
from ._http import (
    ERROR_BODIES,
    HTML_502,
    Dropped,
    Receive,
    Scope,
    Send,
    auth_table,
    drop,
    invalid_parameter,
    read_body,
    respond,
    to_json,
    truncated,
)
from ._lifecycle import plan_timeline
from ._requests import SandboxValidationError, normalise_send, parse_message_id
from ._scheduler import CallbackJob, CallbackScheduler, reply_job, status_jobs
from ._state import AcceptedMessage, SandboxState


__all__ = ["Sandbox"]


API_PREFIX = "/v1/api"


# What the vendor profile answers with HTTP 200 (see SandboxConfig.profile).
_BUSINESS_ERRORS = frozenset({"rate_limited", "no_balance"})

# The traceparent of the request being answered (each request is a task).
_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sandbox_traceparent", default=None
)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class Sandbox(AdminMixin):
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: CallbackScheduler | None = None

    # -- configuration and state -------------------------------------------

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
        self._wake_scheduler()
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
        self._wake_scheduler()

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
        loop = self._loop
        if loop is None:
            raise RuntimeError("the sandbox has not served any request yet")
        reply = text if text is not None else self._config.reply_text
        job = self._reply_job(message, str(url), reply)
        loop.call_soon_threadsafe(self._schedule, self.api_time(), job)

    async def aclose(self) -> None:
        """Stop delivering callbacks (call on the loop that served requests)."""
        if self._scheduler is not None:
            await self._scheduler.aclose()
            self._scheduler = None

    # -- ASGI ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._scheduler is None:
            self._start_scheduler()
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
                self._record(path, None, "not_found", 404, None, None)
                await self._error(send, "not_found", {})
        except Dropped:
            pass

    async def _api(
        self, scope: Scope, raw: bytes, send: Send, *, sending: bool
    ) -> None:
        config = self._config
        path = scope["path"]
        _traceparent.set(_header(scope, b"traceparent"))  # (this request's task)
        delay = self._latency(config)
        key = self._authenticate(scope)
        if key is None:
            self._record(path, None, "unauthorized", 401, None, None)
            await asyncio.sleep(delay)
            await self._error(send, "unauthorized", {})
            return
        headers, allowed = self._rate_limit(key, config)
        if not allowed:
            self._record(path, key, "rate_limited", 429, None, None)
            await asyncio.sleep(delay)
            await self._error(send, "rate_limited", headers)
            return
        fault = pick_fault(config, self._rng)
        if fault in FAULT_STATUS:
            self._record(path, key, fault, FAULT_STATUS[fault], None, None)
            await asyncio.sleep(delay)
            await self._fault(send, fault, headers)
            return
        try:
            payload = json.loads(raw)
        except ValueError:
            self._record(path, key, "invalid", 400, None, None)
            await asyncio.sleep(delay)
            await self._error(send, "bad_json", headers)
            return
        if sending:
            await self._send_viber(send, path, key, payload, headers, fault, delay)
        else:
            await self._receive_viber(send, path, key, payload, headers, delay)

    async def _send_viber(
        self,
        send: Send,
        path: str,
        key: str,
        payload: Any,
        headers: dict[str, str],
        fault: str | None,
        delay: float,
    ) -> None:
        try:
            message, notes = normalise_send(payload)
        except SandboxValidationError as error:
            self._record(path, key, "invalid", 400, None, payload)
            await asyncio.sleep(delay)
            await self._invalid(send, error.field, headers)
            return
        accepted = self._accept(key, message)
        if accepted is None:
            self._record(path, key, "no_balance", 402, None, payload)
            await asyncio.sleep(delay)
            await self._error(send, "no_balance", headers)
            return
        outcome = fault or "accepted"
        status = None if fault else 200
        self._record(path, key, outcome, status, accepted.message_id, payload, notes)
        await asyncio.sleep(delay)
        body = {"message_id": accepted.message_id}
        if fault == "fault_disconnect_after":
            await drop(send)
        if fault == "fault_truncated_body":
            await truncated(send, to_json(body))
        await respond(send, 200, to_json(body), headers)

    async def _receive_viber(
        self,
        send: Send,
        path: str,
        key: str,
        payload: Any,
        headers: dict[str, str],
        delay: float,
    ) -> None:
        now = self.api_time()
        try:
            message = self._lookup(parse_message_id(payload), now)
        except SandboxValidationError as error:
            self._record(path, key, "invalid", 400, None, payload)
            await asyncio.sleep(delay)
            await self._invalid(send, error.field, headers)
            return
        message_id = message.message_id
        status, sms_status = message.status_at(now)
        body: dict[str, Any] = {"message_id": message_id, "status": int(status)}
        if sms_status is not None:
            body["sms_message_id"] = message.timeline.sms_message_id
            body["sms_message_status"] = int(sms_status)
        with self._state.lock:
            self._state.status_lookups += 1
        self._record(path, key, "status", 200, message_id, payload)
        await asyncio.sleep(delay)
        await respond(send, 200, to_json(body), headers)

    # -- pieces ---------------------------------------------------------------

    def _lookup(self, message_id: int, now: float) -> AcceptedMessage:
        with self._state.lock:
            message = self._state.messages.get(message_id)
        if message is None or now - message.accepted_at > self._config.status_retention:
            raise SandboxValidationError("message_id")
        return message

    def _authenticate(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return self._auth.get(value.strip())
        return None

    def _rate_limit(
        self, key: str, config: SandboxConfig
    ) -> tuple[dict[str, str], bool]:
        if config.rate_limit is None:
            return {}, True
        now = self._wall_clock()
        with self._state.lock:
            bucket = self._state.buckets.get(key)
            if bucket is None:
                bucket = make_bucket(
                    config.rate_limit_dialect,
                    config.rate_limit,
                    config.burst,
                    config.rate_limit_window,
                    now,
                )
                self._state.buckets[key] = bucket
            verdict = bucket.take(now)
            headers = answer_headers(
                bucket,
                verdict,
                now,
                rate_limit_headers=bool(config.rate_limit_headers),
                retry_after=config.retry_after_header,
            )
        return headers, verdict[0]

    def _accept(self, key: str, payload: dict[str, Any]) -> AcceptedMessage | None:
        config = self._config
        state = self._state
        with state.lock:
            if config.balance is not None and state.spent >= config.balance:
                return None
            state.spent += 1
            message_id = state.next_message_id
            state.next_message_id += 1
            timeline = plan_timeline(payload, config, self._rng, state.next_sms_id)
            if timeline.sms_message_id is not None:
                state.next_sms_id += 1
            message = AcceptedMessage(
                message_id, payload, key, self.api_time(), timeline
            )
            state.messages[message_id] = message
            pair = (message.receiver, message.text)
            if state.seen_pairs[pair]:
                state.duplicates += 1
            state.seen_pairs[pair] += 1
            generation = state.generation
        url = payload.get("callback_url")
        if url:
            self._plan_callbacks(message, str(url), generation)
        return message

    def _record(
        self,
        path: str,
        key: str | None,
        outcome: str,
        status: int | None,
        message_id: int | None,
        payload: Any,
        notes: tuple[str, ...] = (),
    ) -> None:
        config = self._config
        # The status the answer goes out with (the profile decides).
        in_200 = config.errors_with_http_200 or (
            config.profile == "vendor" and outcome in ("invalid", *_BUSINESS_ERRORS)
        )
        if in_200 and status not in (None, 200) and outcome != "fault_502_html":
            status = 200
        self._state.record_request(
            path=path,
            access_key=key,
            outcome=outcome,
            http_status=status,
            message_id=message_id,
            payload=payload,
            keep=self._config.record_requests,
            notes=notes,
            traceparent=_traceparent.get(),
        )

    async def _error(self, send: Send, kind: str, headers: Mapping[str, str]) -> None:
        status, body = ERROR_BODIES[kind]
        if self._config.errors_with_http_200 or (
            self._config.profile == "vendor" and kind in _BUSINESS_ERRORS
        ):
            status = 200
        await respond(send, status, to_json(body), headers)

    async def _invalid(
        self, send: Send, field: str, headers: Mapping[str, str]
    ) -> None:
        config = self._config
        status = (
            200 if config.errors_with_http_200 or config.profile == "vendor" else 400
        )
        await respond(send, status, to_json(invalid_parameter(field)), headers)

    async def _fault(self, send: Send, fault: str, headers: Mapping[str, str]) -> None:
        if fault == "fault_500":
            await self._error(send, "fault_500", headers)
        elif fault == "fault_502_html":
            # A gateway's page: its own status and content type, whatever the mode.
            await respond(send, 502, HTML_502, {}, content_type=b"text/html")
        else:
            await drop(send)

    # -- callbacks -------------------------------------------------------------

    def _start_scheduler(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._scheduler = CallbackScheduler(
            self._state,
            self.api_time,
            lambda: self._config.time_scale,
            lambda: (self._config.callback_timeout, self._config.callback_attempts),
        )

    def _schedule(self, due: float, job: CallbackJob) -> None:
        if self._scheduler is not None:
            self._scheduler.schedule(due, job)

    def _wake_scheduler(self) -> None:
        loop, scheduler = self._loop, self._scheduler
        if loop is not None and scheduler is not None and not loop.is_closed():
            loop.call_soon_threadsafe(scheduler.wake)

    def _plan_callbacks(
        self, message: AcceptedMessage, url: str, generation: int
    ) -> None:
        for due, job in status_jobs(message, url, generation, self._is_current):
            self._schedule(due, job)
        if message.timeline.reply_at is not None:
            job = self._reply_job(message, url, self._config.reply_text)
            self._schedule(message.accepted_at + message.timeline.reply_at, job)

    def _reply_job(self, message: AcceptedMessage, url: str, text: str) -> CallbackJob:
        token = self._rng.randrange(10**13, 10**14)
        generation = self._state.generation
        return reply_job(message, url, text, token, generation, self._is_current)

    def _is_current(self, generation: int) -> bool:
        return generation == self._state.generation

    def _latency(self, config: SandboxConfig) -> float:
        delay, spiked = sample_latency(config, self._rng)
        if spiked:
            with self._state.lock:
                self._state.latency_spikes += 1
        return delay

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
