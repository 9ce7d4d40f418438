"""ASGI plumbing of the sandbox: answers, error bodies, broken connections.

To break a connection the way a crashing server does, the sandbox needs
uvicorn's transport, which it reaches through the ``send`` callable uvicorn
passes in (uvicorn's ``send`` is a bound method of its request/response cycle,
which holds the transport). In-process use through `httpx.ASGITransport` has
no connection to break: a dropped connection is raised there as
`ConnectionResetError`, which clients see as a broken connection too.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._config import SandboxConfig


__all__ = [
    "ERROR_BODIES",
    "HTML_502",
    "Dropped",
    "Receive",
    "Scope",
    "Send",
    "auth_table",
    "drop",
    "invalid_parameter",
    "read_body",
    "respond",
    "to_json",
    "truncated",
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ERROR_MESSAGE = "Empty parameter or parameter validation error"
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
ERROR_BODIES: dict[str, tuple[int, dict[str, Any]]] = {
    "unauthorized": (
        401,
        {
            "name": "Unauthorized",
            "message": "Your request was made with invalid credentials.",
            "code": 0,
            "status": 401,
        },
    ),
    "rate_limited": (
        429,
        {
            "name": "Too Many Requests",
            "message": "Rate limit exceeded",
            "code": 0,
            "status": 429,
        },
    ),
    "fault_500": (
        500,
        {
            "name": "Internal server error",
            "message": "The server encountered an unexpected condition which "
            "prevented it from fulfilling the request",
            "code": 2,
            "status": 500,
        },
    ),
    "no_balance": (
        402,
        {
            "name": "Topup balance is required",
            "message": "User balance is empty",
            "code": 3,
            "status": 402,
        },
    ),
    "bad_json": (
        400,
        {
            "name": "Bad Request",
            "message": "Invalid JSON data in request body: Syntax error.",
            "code": 0,
            "status": 400,
        },
    ),
    "not_found": (
        404,
        {"name": "Not Found", "message": "Page not found.", "code": 0, "status": 404},
    ),
}


class Dropped(Exception):
    """The connection was dropped on purpose; nothing more to send."""


def invalid_parameter(field: str) -> dict[str, Any]:
    """The documented body refusing *field*."""
    return {
        "name": f"Invalid Parameter: {field}",
        "message": ERROR_MESSAGE,
        "code": 1,
        "status": 400,
    }


def auth_table(config: SandboxConfig) -> dict[bytes, str]:
    """Accepted Authorization header values: base64(key), and curl's base64(key:)."""
    table: dict[bytes, str] = {}
    for key in config.access_keys:
        for raw in (key, f"{key}:"):
            token = base64.b64encode(raw.encode()).decode("ascii")
            table[f"Basic {token}".encode()] = key
    return table


def to_json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise Dropped
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    content_type: bytes = b"application/json; charset=UTF-8",
) -> None:
    raw_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": raw_headers}
    )
    await send({"type": "http.response.body", "body": body})


def _transport(send: Send) -> asyncio.Transport | None:
    # uvicorn's send is a bound method of its request/response cycle, which
    # holds the connection's transport.
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


async def drop(send: Send) -> None:
    """Break the connection without an answer, like a crashing server."""
    transport = _transport(send)
    if transport is None:
        raise ConnectionResetError("the sandbox dropped the connection")
    transport.abort()
    # Let uvicorn see the disconnect before the app returns, so it does not
    # try to answer on our behalf.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    raise Dropped


async def truncated(send: Send, body: bytes) -> None:
    """Start the answer, send half of it, then break the connection."""
    headers = [
        (b"content-type", b"application/json; charset=UTF-8"),
        (b"content-length", str(len(body) + 10).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send(
        {
            "type": "http.response.body",
            "body": body[: len(body) // 2],
            "more_body": True,
        }
    )
    await drop(send)
