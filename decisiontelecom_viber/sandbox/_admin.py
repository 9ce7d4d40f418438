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
from typing import Any, Protocol

import attrs

from .._asgi import Send
from ._config import SandboxConfig
from ._http import respond
from ._state import AcceptedMessage, CallbackRecord, RequestRecord, SandboxStats


__all__ = ["Admin"]


class Steered(Protocol):
    """What the admin endpoints use of a `Sandbox`: its public methods.

    (A protocol rather than the class: the sandbox holds its `Admin`, so
    the admin module must not import the sandbox's.)
    """

    @property
    def stats(self) -> SandboxStats: ...
    @property
    def config(self) -> SandboxConfig: ...
    def api_time(self) -> float: ...
    def messages(self) -> list[AcceptedMessage]: ...
    def requests(self) -> list[RequestRecord]: ...
    def callbacks(self) -> list[CallbackRecord]: ...
    def reset(self, config: SandboxConfig | None = None) -> None: ...
    def configure(self, **changes: Any) -> SandboxConfig: ...
    def advance(self, seconds: float) -> None: ...
    def simulate_reply(self, message_id: int, text: str | None = None) -> None: ...


class Admin:
    """The ``/__sandbox/`` endpoints of a sandbox, and its state as JSON.

    Works through the sandbox's public methods only, so the endpoints do
    exactly what a test calling those methods does.

    Args:
        sandbox: The sandbox inspected and steered.
    """

    __slots__ = ("_sandbox",)

    def __init__(self, sandbox: Steered) -> None:
        self._sandbox = sandbox

    def state_json(self) -> dict[str, Any]:
        """Config, counters and API time, as JSON-ready data."""
        sandbox = self._sandbox
        counters = sandbox.stats  # one snapshot, so that the three views agree
        stats = attrs.asdict(counters)
        stats["faults"] = counters.faults
        stats["rate_limited"] = counters.rate_limited
        return {
            "config": sandbox.config.to_dict(),
            "stats": stats,
            "api_time": sandbox.api_time(),
        }

    def messages_json(self) -> list[dict[str, Any]]:
        """Accepted messages with their statuses now, as JSON-ready data."""
        now = self._sandbox.api_time()
        rows = []
        for message in self._sandbox.messages():
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

    async def handle(self, method: str, path: str, body: bytes, send: Send) -> None:
        """Answer a ``/__sandbox/`` request."""
        try:
            data = json.loads(body) if body.strip() else {}
            result = self._endpoint(method, path.removeprefix("/__sandbox/"), data)
        except LookupError as error:
            await _reply(send, 404, {"error": str(error)})
        except (ValueError, TypeError) as error:
            await _reply(send, 400, {"error": str(error)})
        else:
            await _reply(send, 200, result)

    def _endpoint(self, method: str, name: str, data: Any) -> Any:
        sandbox = self._sandbox
        if method == "GET" and name == "state":
            return self.state_json()
        if method == "GET" and name == "messages":
            return self.messages_json()
        if method == "GET" and name == "requests":
            return [attrs.asdict(r) for r in sandbox.requests()]
        if method == "GET" and name == "callbacks":
            return [
                {**attrs.asdict(c), "delivered": c.delivered}
                for c in sandbox.callbacks()
            ]
        if method == "POST" and name == "reset":
            sandbox.reset(sandbox.config.replace(**data) if data else None)
            return self.state_json()
        if method == "POST" and name == "config":
            if not isinstance(data, dict):
                raise TypeError("expected a JSON object of knobs")
            sandbox.configure(**data)
            return self.state_json()
        if method == "POST" and name == "advance":
            sandbox.advance(float(data["seconds"]))
            return self.state_json()
        if method == "POST" and name == "reply":
            sandbox.simulate_reply(int(data["message_id"]), data.get("text"))
            return {"scheduled": True}
        raise LookupError(f"no sandbox endpoint {method} /__sandbox/{name}")


async def _reply(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload, default=str).encode()
    await respond(send, status, body, {}, content_type=b"application/json")
