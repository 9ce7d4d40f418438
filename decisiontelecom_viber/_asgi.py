"""ASGI 3 types and the lifespan loop, shared by `CallbackReceiver` and the sandbox.

The types are mappings of ``Any`` rather than the spec's TypedDicts
(``asgiref.typing``), which would be a dependency for no runtime gain; they
are the ones httpx's ``ASGITransport`` and Starlette use, so both apps
type-check there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias


__all__ = ["Message", "Receive", "Scope", "Send", "serve_lifespan"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]


async def serve_lifespan(
    receive: Receive,
    send: Send,
    *,
    on_shutdown: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Answer a ``lifespan`` connection until the server shuts down.

    Answering (rather than ignoring the scope) lets ``uvicorn module:app``
    run with its default ``lifespan="auto"`` without a warning.

    Args:
        receive: The connection's ``receive``.
        send: The connection's ``send``.
        on_shutdown: Awaited on ``lifespan.shutdown``, before it is
            acknowledged; nothing is needed at startup.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown is not None:
                await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
