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
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._asgi import Receive, Scope, Send
from ._config import SandboxConfig


__all__ = [
    "Dropped",
    "ReplyFor",
    "auth_table",
    "authenticate",
    "error_reply",
    "fault_reply",
    "header",
    "invalid_reply",
    "ok_reply",
    "read_body",
    "recorded_status",
    "respond",
    "send_reply",
]

JSON_UTF8 = b"application/json; charset=UTF-8"
# What the vendor profile answers with HTTP 200 (see SandboxConfig.profile).
BUSINESS_ERRORS = frozenset({"rate_limited", "no_balance"})
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


@attrs.frozen
class Reply:
    """An answer to an API request, ready to send.

    Attributes:
        status: The HTTP status sent; None breaks the connection instead.
        body: The body.
        content_type: Its content type.
        api_headers: Whether the API's headers (rate limits) go with it; a
            gateway's page has none of them.
        truncate: Send half of the body, then break the connection.
    """

    status: int | None
    body: bytes = b""
    content_type: bytes = JSON_UTF8
    api_headers: bool = True
    truncate: bool = False


DROP = Reply(None)
"""Break the connection without an answer."""

ReplyFor = Callable[[SandboxConfig], Reply]
"""An answer decided by the config in force once the latency is waited out
(a profile changed meanwhile applies to it)."""


def error_reply(kind: str) -> ReplyFor:
    """The answer with the `ERROR_BODIES` body of *kind*."""

    def decide(config: SandboxConfig) -> Reply:
        status, body = ERROR_BODIES[kind]
        if config.errors_with_http_200 or (
            config.profile == "vendor" and kind in BUSINESS_ERRORS
        ):
            status = 200
        return Reply(status, to_json(body))

    return decide


def invalid_reply(field: str) -> ReplyFor:
    """The answer refusing *field* (``Invalid Parameter: <field>``)."""

    def decide(config: SandboxConfig) -> Reply:
        in_200 = config.errors_with_http_200 or config.profile == "vendor"
        return Reply(200 if in_200 else 400, to_json(invalid_parameter(field)))

    return decide


def fault_reply(fault: str) -> ReplyFor:
    """The answer of a fault that strikes before acceptance (`FAULT_STATUS`)."""
    if fault == "fault_500":
        return error_reply("fault_500")
    if fault == "fault_502_html":
        # A gateway's page: its own status and content type, whatever the mode.
        page = Reply(502, HTML_502, content_type=b"text/html", api_headers=False)
        return lambda config: page
    return lambda config: DROP


def ok_reply(body: Mapping[str, Any], fault: str | None = None) -> ReplyFor:
    """The answer 200 with *body*, unless a fault after acceptance breaks it."""
    if fault == "fault_disconnect_after":
        return lambda config: DROP
    reply = Reply(200, to_json(body), truncate=fault == "fault_truncated_body")
    return lambda config: reply


def recorded_status(
    config: SandboxConfig, outcome: str, status: int | None
) -> int | None:
    """The status a request's record shows, given its default-profile *status*.

    Decided from the outcome, apart from the answer: under the vendor
    profile a body that is not JSON is recorded 200 (outcome ``invalid``)
    though it is answered 400 (kind ``bad_json``).
    """
    in_200 = config.errors_with_http_200 or (
        config.profile == "vendor" and outcome in ("invalid", *BUSINESS_ERRORS)
    )
    if in_200 and status not in (None, 200) and outcome != "fault_502_html":
        return 200
    return status


def auth_table(config: SandboxConfig) -> dict[bytes, str]:
    """Accepted Authorization header values: base64(key), and curl's base64(key:)."""
    table: dict[bytes, str] = {}
    for key in config.access_keys:
        for raw in (key, f"{key}:"):
            token = base64.b64encode(raw.encode()).decode("ascii")
            table[f"Basic {token}".encode()] = key
    return table


def authenticate(table: Mapping[bytes, str], scope: Scope) -> str | None:
    """The access key the request's Authorization header names (see `auth_table`)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return table.get(value.strip())
    return None


def header(scope: Scope, name: bytes) -> str | None:
    """The request's first header called *name* (lowercase), if any."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def to_json(payload: Any) -> bytes:
    """Compact JSON, as the API writes it."""
    return json.dumps(payload, separators=(",", ":")).encode()


async def read_body(receive: Receive) -> bytes:
    """The whole request body (`Dropped` if the client went away)."""
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
    content_type: bytes = JSON_UTF8,
) -> None:
    """Send a whole answer: *status*, *body* and *headers*."""
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
        (b"content-type", JSON_UTF8),
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


async def send_reply(send: Send, reply: Reply, headers: Mapping[str, str]) -> None:
    """Send *reply*, with the API's *headers* unless it has none of them."""
    if reply.status is None:
        await drop(send)
    elif reply.truncate:
        await truncated(send, reply.body)
    else:
        await respond(
            send,
            reply.status,
            reply.body,
            headers if reply.api_headers else {},
            content_type=reply.content_type,
        )
