"""A raw HTTP/1.1 server on loopback that does exactly what a test scripts.

The sandbox is one fault model; real servers, proxies and CDNs are others.
This server has none of its own: each request it reads is answered by the
next *action* of the test's script (or the default action), byte for byte —
any status line, a malformed one, a body trickled byte by byte, a close or a
reset before or after reading the request, a compressed body, silence.

A request counts as ``received`` once its whole body has been read: from
then on the API "has" the message, and the SDK must never report it as
certainly not sent.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs


@attrs.frozen
class Received:
    """A request the server read in full."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Writer = asyncio.StreamWriter
# An action answers one request; it returns whether the connection stays open.
Act = Callable[[Writer, "Received | None"], Awaitable[bool]]


@attrs.frozen
class Action:
    """What the server does with one request.

    Attributes:
        act: Writes the answer (or does something else to the connection).
        read_request: Read the request first; False acts on the bare
            connection, before a byte of the request is read.
    """

    act: Act
    read_request: bool = True


def _head(status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def respond(
    status: int = 200,
    body: bytes | str | Any = b"",
    *,
    headers: Iterable[tuple[str, str]] = (),
    reason: str = "Whatever",
) -> Action:
    """A well-formed answer; *body* may be bytes, text, or JSON-able data."""
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        headers = [("Content-Type", "application/json"), *headers]
    data = body.encode() if isinstance(body, str) else body

    async def act(writer: Writer, _: Received | None) -> bool:
        head = _head(status, reason, [*headers, ("Content-Length", str(len(data)))])
        writer.write(head + data)
        await writer.drain()
        return True

    return Action(act)


def accepted(message_id: int = 4242, **kwargs: Any) -> Action:
    """The API's success answer to a send."""
    return respond(200, {"message_id": message_id}, **kwargs)


def raw(data: bytes, *, then_close: bool = True) -> Action:
    """Write *data* exactly as given (a malformed status line, say)."""

    async def act(writer: Writer, _: Received | None) -> bool:
        writer.write(data)
        await writer.drain()
        return not then_close

    return Action(act)


def trickle(status: int, body: bytes, *, every: float) -> Action:
    """A valid head, then the body one byte every *every* seconds."""

    async def act(writer: Writer, _: Received | None) -> bool:
        writer.write(_head(status, "OK", [("Content-Length", str(len(body)))]))
        await writer.drain()
        for byte in body:
            await asyncio.sleep(every)
            writer.write(bytes([byte]))
            await writer.drain()
        return True

    return Action(act)


def hang() -> Action:
    """Read the request, then never answer."""

    async def act(writer: Writer, _: Received | None) -> bool:
        await asyncio.Event().wait()
        return False  # pragma: no cover - cancelled when the server closes

    return Action(act)


def delayed(seconds: float, then: Action) -> Action:
    """Read the request, wait *seconds*, then do *then*."""

    async def act(writer: Writer, request: Received | None) -> bool:
        await asyncio.sleep(seconds)
        return await then.act(writer, request)

    return Action(act)


def hold(event: asyncio.Event, then: Action) -> Action:
    """Read the request, wait for *event*, then do *then*."""

    async def act(writer: Writer, request: Received | None) -> bool:
        await event.wait()
        return await then.act(writer, request)

    return Action(act)


def close(*, after_reading: bool = True) -> Action:
    """Close the connection (a FIN), before or after reading the request."""

    async def act(writer: Writer, _: Received | None) -> bool:
        return False

    return Action(act, read_request=after_reading)


def reset(*, after_reading: bool = True) -> Action:
    """Reset the connection (an RST), before or after reading the request."""

    async def act(writer: Writer, _: Received | None) -> bool:
        sock = writer.get_extra_info("socket")
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False

    return Action(act, read_request=after_reading)


def compressed(payload: Any, *, encoding: str = "gzip", status: int = 200) -> Action:
    """A JSON answer compressed with *encoding* (``gzip``, or any name: the
    body is then gzip bytes mislabelled, which a client must not have asked
    for)."""
    data = gzip.compress(json.dumps(payload).encode())
    return respond(
        status,
        data,
        headers=[("Content-Type", "application/json"), ("Content-Encoding", encoding)],
    )


class RawServer:
    """The scripted server. Use ``async with RawServer() as server``.

    Args:
        default: The action for requests the script has no action left for.
    """

    def __init__(self, default: Action | None = None) -> None:
        self.default = default if default is not None else accepted()
        self.script: collections.deque[Action] = collections.deque()
        self.received: list[Received] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[Writer] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/api"

    def then(self, *actions: Action) -> RawServer:
        """Answer the next requests with *actions*, in order."""
        self.script.extend(actions)
        return self

    async def __aenter__(self) -> RawServer:
        # A deep backlog: a burst of connects must not meet dropped SYNs.
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                action = self.script.popleft() if self.script else self.default
                request = None
                if action.read_request:
                    request = await _read_request(reader)
                    if request is None:
                        return  # the client closed the connection
                    self.received.append(request)
                if not await action.act(writer, request):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            if not writer.transport.is_closing():
                writer.transport.close()


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(method, path, headers, body)


class ThreadedRawServer:
    """A `RawServer` on an event loop of its own thread, for sync tests.

    ``with ThreadedRawServer() as server:`` — script it with ``then`` before
    the requests come; ``received`` is read from the test's thread.
    """

    def __init__(self, default: Action | None = None) -> None:
        self.server = RawServer(default)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RawServer:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.server.__aenter__())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the raw server did not start")
        return self.server

    def __exit__(self, *exc_info: object) -> None:
        future = asyncio.run_coroutine_threadsafe(self.server.aclose(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
