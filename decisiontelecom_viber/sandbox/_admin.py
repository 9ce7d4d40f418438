"""Inspecting and steering the sandbox: from Python, and over HTTP at ``/__sandbox/``.

| Method and path | Does |
| --- | --- |
| ``GET /__sandbox/state`` | config, counters and API time |
| ``GET /__sandbox/messages`` | accepted messages with their current status |
| ``GET /__sandbox/requests`` | recorded requests |
| ``GET /__sandbox/callbacks`` | callback deliveries |
| ``POST /__sandbox/reset`` | forget everything; a JSON body replaces the config |
| ``POST /__sandbox/config`` | change some knobs (JSON object of knobs) |
| ``POST /__sandbox/advance`` | ``{"seconds": N}``: move API time forward |
| ``POST /__sandbox/reply`` | ``{"message_id": N, "text": "..."}``: a user replies |
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from ._state import CallbackRecord, RequestRecord, SandboxState, SandboxStats


if TYPE_CHECKING:
    from .._enums import MessageStatus, SmsStatus
    from ._config import SandboxConfig
    from ._state import AcceptedMessage


__all__ = ["AdminMixin"]

Send = Callable[[dict[str, Any]], Awaitable[None]]


class AdminMixin:
    """Read-only views of the state, and the ``/__sandbox/`` endpoints."""

    _state: SandboxState

    if TYPE_CHECKING:

        @property
        def config(self) -> SandboxConfig: ...
        def configure(self, **changes: Any) -> SandboxConfig: ...
        def reset(self, config: SandboxConfig | None = None) -> None: ...
        def api_time(self) -> float: ...
        def advance(self, seconds: float) -> None: ...
        def messages(self) -> list[AcceptedMessage]: ...
        def simulate_reply(self, message_id: int, text: str | None = None) -> None: ...
        def status_of(
            self, message_id: int
        ) -> tuple[MessageStatus, SmsStatus | None]: ...

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

    def state_json(self) -> dict[str, Any]:
        """Config, counters and API time, as JSON-ready data."""
        stats = attrs.asdict(self.stats)
        stats["faults"] = self.stats.faults
        stats["rate_limited"] = self.stats.rate_limited
        return {
            "config": self.config.to_dict(),
            "stats": stats,
            "api_time": self.api_time(),
        }

    def messages_json(self) -> list[dict[str, Any]]:
        """Accepted messages with their statuses now, as JSON-ready data."""
        now = self.api_time()
        rows = []
        for message in self.messages():
            status, sms_status = message.status_at(now)
            rows.append(
                {
                    "message_id": message.message_id,
                    "payload": dict(message.payload),
                    "accepted_at": message.accepted_at,
                    "status": int(status),
                    "sms_message_id": message.timeline.sms_message_id,
                    "sms_message_status": None
                    if sms_status is None
                    else int(sms_status),
                }
            )
        return rows

    async def handle_admin(
        self, method: str, path: str, body: bytes, send: Send
    ) -> None:
        """Answer a ``/__sandbox/`` request."""
        try:
            data = json.loads(body) if body.strip() else {}
            result = self._admin(method, path.removeprefix("/__sandbox/"), data)
        except LookupError as error:
            await _reply(send, 404, {"error": str(error)})
        except (ValueError, TypeError) as error:
            await _reply(send, 400, {"error": str(error)})
        else:
            await _reply(send, 200, result)

    def _admin(self, method: str, name: str, data: Any) -> Any:
        if method == "GET" and name == "state":
            return self.state_json()
        if method == "GET" and name == "messages":
            return self.messages_json()
        if method == "GET" and name == "requests":
            return [attrs.asdict(r) for r in self.requests()]
        if method == "GET" and name == "callbacks":
            return [
                {**attrs.asdict(c), "delivered": c.delivered} for c in self.callbacks()
            ]
        if method == "POST" and name == "reset":
            self.reset(self.config.replace(**data) if data else None)
            return self.state_json()
        if method == "POST" and name == "config":
            if not isinstance(data, dict):
                raise TypeError("expected a JSON object of knobs")
            self.configure(**data)
            return self.state_json()
        if method == "POST" and name == "advance":
            self.advance(float(data["seconds"]))
            return self.state_json()
        if method == "POST" and name == "reply":
            self.simulate_reply(int(data["message_id"]), data.get("text"))
            return {"scheduled": True}
        raise LookupError(f"no sandbox endpoint {method} /__sandbox/{name}")


async def _reply(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload, default=str).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
