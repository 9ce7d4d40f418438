"""The access key never shows on any failure path, however the error is looked at.

Each failure is provoked for real by `tests.rawhttp.RawServer` (a malformed
status line or header, timeouts, resets, closes, truncated and undecodable
bodies, gateway statuses...), over the default transport and a user's
`httpx.AsyncClient`. Each error is then scanned the ways users and their
tools look at errors: ``str``/``repr``/attributes of every exception in its
chain (causes and contexts), `traceback.format_exception`, logging with
``%r`` and ``logger.exception``, and a rich traceback with ``show_locals``
— aiohttp's exceptions and frames hold the request headers, so none of
them may be reachable from the SDK's errors.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from rich.console import Console
from rich.traceback import Traceback

from decisiontelecom_viber import (
    AsyncViberClient,
    ConfigurationError,
    RateLimit,
    RetryPolicy,
    ViberClient,
    ViberError,
    ViberMessage,
)

from . import rawhttp as raw
from .servers import unused_port
from .test_security import LOGGERS, assert_absent, forms, logged, shown
from .test_sync_client import interrupt_main_soon


pytestmark = pytest.mark.integration

KEY = "sk-live-2b7d9e4f1a3c5e80"
SECRETS = forms(KEY)
MESSAGE = ViberMessage.transactional(sender="Acme", receiver="380501234567", text="x")
TIMEOUT = httpx.Timeout(2.0, read=0.3)

# name -> what the server does with the request
SCRIPTS: dict[str, raw.Action] = {
    "malformed status line": raw.raw(b"HTTP/1.1 ABC Not A Status\r\n\r\n"),
    "malformed header": raw.raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nno colon here\r\n\r\n{}"
    ),
    "bad chunked body": raw.raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n"
    ),
    "truncated body": raw.raw(
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"message_id'
    ),
    "undecodable body": raw.compressed({"message_id": 1}, encoding="zstd"),
    "read timeout": raw.hang(),
    "reset after reading": raw.reset(after_reading=True),
    "reset before reading": raw.reset(after_reading=False),
    "closed after reading": raw.close(after_reading=True),
    "closed before reading": raw.close(after_reading=False),
    "gateway timeout": raw.respond(504, "<html>504</html>"),
    "cloudflare 524": raw.respond(524, "origin timed out"),
    "not found": raw.respond(404, "<html>404</html>"),
    "garbled 2xx": raw.respond(200, "<html>hi</html>"),
    "refused": raw.respond(
        401, {"name": "Unauthorized", "message": "", "code": 0, "status": 401}
    ),
}


def rich_text(error: BaseException) -> str:
    """A rich traceback of *error* with every frame's locals, nothing truncated."""
    console = Console(file=io.StringIO(), width=240, color_system=None)
    console.print(
        Traceback.from_exception(
            type(error),
            error,
            error.__traceback__,
            show_locals=True,
            locals_max_length=10_000,
            locals_max_string=100_000,
            max_frames=1_000,
        )
    )
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()


def scan(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """Every way of looking at *error*: none shows the key."""
    log = logging.getLogger("app")
    log.error("send failed: %r", error)
    log.error("send failed: %s", error)
    log.error("send failed", exc_info=error)
    assert_absent(shown(error), *SECRETS)
    for linked in chain(error):
        assert_absent(rich_text(linked), *SECRETS)
        assert_absent(
            "".join(
                traceback.TracebackException.from_exception(
                    linked, capture_locals=True
                ).format()
            ),
            *SECRETS,
        )
    assert_absent(logged(caplog), *SECRETS)
    assert_absent(caplog.live.text, *SECRETS)  # type: ignore[attr-defined]
    # No exception of the HTTP stack is reachable from it (they hold the
    # request headers): not as a cause, not as a context.
    assert [] == [
        type(linked).__module__
        for linked in chain(error)
        if type(linked).__module__.split(".")[0] in HTTP_STACK
    ]


HTTP_STACK = {"aiohttp", "httpx", "httpcore", "httpx_aiohttp", "h11", "anyio"}


def chain(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        todo += [current.__cause__, current.__context__]
    return found


class LiveLog:
    """Log records as a handler writes them at once (no later scrubbing helps)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(name)s %(message)s"))

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def live_log() -> Iterator[LiveLog]:
    log = LiveLog()
    root = logging.getLogger()
    root.addHandler(log.handler)
    try:
        yield log
    finally:
        root.removeHandler(log.handler)


@pytest.fixture
def debug_logs(
    caplog: pytest.LogCaptureFixture, live_log: LiveLog
) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.live = live_log  # type: ignore[attr-defined]
    return caplog


@pytest.fixture(params=["default-transport", "user-http-client"])
async def http_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "default-transport":
        yield None
    else:
        async with httpx.AsyncClient(timeout=TIMEOUT) as user:
            yield user


async def failure(
    call: Callable[[], Awaitable[object]],
) -> BaseException:
    try:
        await call()
    except ViberError as error:
        return error
    raise AssertionError("the call did not fail")


@pytest.mark.parametrize("name", sorted(SCRIPTS), ids=str)
async def test_no_failure_of_the_exchange_shows_the_key(
    name: str, http_client: Any, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Each failure the server can cause: the error and every log stay clean."""
    async with raw.RawServer(default=SCRIPTS[name]) as server:
        options: dict[str, Any] = {"http_client": http_client}
        if http_client is None:
            options["timeout"] = TIMEOUT
        async with AsyncViberClient(
            KEY, base_url=server.base_url, rate_limit=None, retry=None, **options
        ) as client:
            error = await failure(lambda: client.send_message(MESSAGE))

    scan(error, debug_logs)


async def test_an_unreachable_api_does_not_show_the_key(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Connection refused (never sent): the same scans."""
    async with AsyncViberClient(
        KEY, base_url=f"http://127.0.0.1:{unused_port()}/v1/api", retry=None
    ) as client:
        error = await failure(lambda: client.send_message(MESSAGE))

    scan(error, debug_logs)


async def test_deadlines_and_closing_do_not_show_the_key(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """A trickled answer past the deadline, a deadline in the limiter, aclose."""
    async with raw.RawServer(
        default=raw.trickle(200, b'{"message_id": 1}', every=0.1)
    ) as server:
        client = AsyncViberClient(
            KEY,
            base_url=server.base_url,
            rate_limit=RateLimit(rate=1, adaptive=False),
            retry=RetryPolicy(timeout=0.6),
        )
        sends = [asyncio.create_task(client.send_message(MESSAGE)) for _ in "abc"]
        errors = [
            outcome
            for outcome in await asyncio.gather(*sends, return_exceptions=True)
            if isinstance(outcome, BaseException)
        ]
        later = asyncio.create_task(client.send_message(MESSAGE))
        await asyncio.sleep(0.05)
        await client.aclose()
        errors.append(await failure(lambda: later))

    kinds = {type(error).__name__ for error in errors}
    assert {"OutcomeUnknownError", "DeadlineExceededError"} <= kinds
    for error in errors:
        scan(error, debug_logs)


async def caught(awaitable: Awaitable[object]) -> BaseException:
    try:
        await awaitable
    except BaseException as error:
        return error
    raise AssertionError("the call did not fail")


async def test_cancelling_a_send_on_the_wire_does_not_show_the_key(
    http_client: Any, debug_logs: pytest.LogCaptureFixture
) -> None:
    """wait_for, asyncio.timeout-like cancellation, task.cancel: no aiohttp frame."""
    async with raw.RawServer(default=raw.hang()) as server:
        options: dict[str, Any] = {"http_client": http_client}
        async with AsyncViberClient(
            KEY, base_url=server.base_url, rate_limit=None, **options
        ) as client:
            errors = [await caught(asyncio.wait_for(client.send_message(MESSAGE), 0.2))]
            task = asyncio.create_task(client.send_message(MESSAGE))
            await asyncio.sleep(0.2)
            task.cancel()
            errors.append(await caught(task))

    assert {"TimeoutError", "CancelledError"} <= {type(e).__name__ for e in errors}
    for error in errors:
        scan(error, debug_logs)


def echo_page(request: raw.Received | None) -> str:
    assert request is not None
    return "you sent: " + " ".join(f"{k}: {v}" for k, v in request.headers.items())


def echoing(
    status: int, *, as_api_error: bool = False, in_header: bool = False
) -> raw.Action:
    """A server (or gateway) that quotes the request, its credentials included."""

    async def act(writer: raw.Writer, request: raw.Received | None) -> bool:
        page = echo_page(request)
        body: Any = page
        headers: list[tuple[str, str]] = []
        if as_api_error:
            body = {"name": "Bad Request", "message": page, "code": 1, "status": 400}
        if in_header:
            assert request is not None
            headers.append(("X-Echo", request.headers["authorization"]))
            body = "<html>Bad Gateway</html>"
        return await raw.respond(status, body, headers=headers).act(writer, request)

    return raw.Action(act)


@pytest.mark.parametrize(
    "action",
    [
        echoing(404),
        echoing(400, as_api_error=True),
        echoing(200),
        echoing(502, in_header=True),
    ],
    ids=["404-page", "400-api-error", "garbled-2xx", "502-header"],
)
async def test_an_answer_quoting_the_request_does_not_show_the_key(
    action: raw.Action, http_client: Any, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Error pages that echo the request: body, headers and message scrubbed."""
    async with (
        raw.RawServer(default=action) as server,
        AsyncViberClient(
            KEY, base_url=server.base_url, rate_limit=None, http_client=http_client
        ) as client,
    ):
        error = await failure(lambda: client.send_message(MESSAGE))

    assert "[secret]" in shown(error)
    scan(error, debug_logs)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param({"env": KEY + "\n"}, id="key-with-newline"),
        pytest.param({"env": KEY, "base_url": "http://api.example.com/v1"}, id="http"),
        pytest.param({"env": KEY, "max_connections": 0}, id="no-connections"),
        pytest.param({"env": KEY, "retry": "five"}, id="bad-retry"),
    ],
)
def test_a_configuration_error_does_not_show_the_key(
    make: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Raised while the key is being read: no frame of the SDK holds it."""
    monkeypatch.setenv("DECISIONTELECOM_ACCESS_KEY", make.pop("env"))

    with pytest.raises(ConfigurationError) as info:
        AsyncViberClient(**make)

    scan(info.value, debug_logs)


def echoed_malformed(kind: str) -> raw.Action:
    """A malformed answer quoting the credentials: parsers quote the bad line."""

    async def act(writer: raw.Writer, request: raw.Received | None) -> bool:
        assert request is not None
        secret = request.headers["authorization"].encode()
        data = {
            "header": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Echo "
            + secret
            + b"\r\n\r\n{}",
            "status": b"HTTP/1.1 2x0 " + secret + b"\r\n\r\n",
            "chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + secret
            + b"\r\n{}\r\n",
        }[kind]
        writer.write(data)
        await writer.drain()
        return False

    return raw.Action(act)


@pytest.mark.parametrize("kind", ["header", "status", "chunk"])
async def test_a_malformed_answer_quoting_the_key_is_logged_scrubbed(
    kind: str, http_client: Any, debug_logs: pytest.LogCaptureFixture
) -> None:
    """The SDK's DEBUG line about the failure is written already scrubbed."""
    async with (
        raw.RawServer(default=echoed_malformed(kind)) as server,
        AsyncViberClient(
            KEY, base_url=server.base_url, rate_limit=None, http_client=http_client
        ) as client,
    ):
        error = await failure(lambda: client.send_message(MESSAGE))

    scan(error, debug_logs)


async def test_a_cookie_quoting_the_key_is_logged_scrubbed(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """aiohttp logs an illegal cookie name verbatim (aiohttp.internal, WARNING)."""

    async def cookie(writer: raw.Writer, request: raw.Received | None) -> bool:
        assert request is not None
        name = request.headers["authorization"]
        action = raw.accepted(7, headers=[("Set-Cookie", f"{name}=1")])
        return await action.act(writer, request)

    async with raw.RawServer(default=raw.Action(cookie)) as server:
        url = server.base_url.replace("127.0.0.1", "localhost")
        async with AsyncViberClient(KEY, base_url=url, rate_limit=None) as client:
            assert 7 == await client.send_message(MESSAGE)

    assert_absent(debug_logs.live.text, *SECRETS)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name", ["read timeout", "reset after reading", "gateway timeout", "refused"]
)
def test_the_sync_client_shows_the_key_nowhere(
    name: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    """`ViberClient`: its errors come through its loop's thread, just as clean."""
    with (
        raw.ThreadedRawServer(default=SCRIPTS[name]) as server,
        ViberClient(
            KEY, base_url=server.base_url, rate_limit=None, retry=None, timeout=TIMEOUT
        ) as client,
        pytest.raises(ViberError) as info,
    ):
        client.send_message(MESSAGE)

    scan(info.value, debug_logs)


def test_a_sync_configuration_error_does_not_show_the_key(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ViberClient(KEY, base_url="ftp://api.example.com")

    scan(info.value, debug_logs)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signals reach the main thread only",
)
def test_an_interrupted_sync_send_does_not_show_the_key(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Ctrl-C after the write: the interrupt and its cause, scanned."""
    with (
        raw.ThreadedRawServer(default=raw.hang()) as server,
        ViberClient(KEY, base_url=server.base_url, rate_limit=None) as client,
    ):
        interrupt_main_soon(lambda: len(server.received) == 1)
        with pytest.raises(KeyboardInterrupt) as info:
            client.send_message(MESSAGE)

    assert info.value.__cause__ is not None
    scan(info.value, debug_logs)
