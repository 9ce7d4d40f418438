"""`serve_sandbox`: the sandbox under uvicorn, on a free loopback port, in a thread.

A thread of its own keeps the sandbox's event loop independent of the test's
(or the demo's): a busy client cannot stall the server it measures, and the
same server works from synchronous and asynchronous code alike.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType
from typing import Any, TypeVar

from ._app import API_PREFIX, Sandbox
from ._config import SandboxConfig


__all__ = ["AppServer", "SandboxServer", "serve_app", "serve_sandbox"]

_START_TIMEOUT = 15.0

_S = TypeVar("_S", bound="AppServer")


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "serving the sandbox needs uvicorn: "
            "pip install 'decisiontelecom-viber[sandbox]'"
        ) from error
    return uvicorn


class AppServer:
    """An ASGI app served by uvicorn in a thread; a (sync or async) context manager.

    Attributes:
        app: The ASGI app served.
        host: The interface served on.
        tls: Whether it serves HTTPS (given a certificate).
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ):
        self.app = app
        self.host = host
        self.tls = ssl_certfile is not None
        self._ssl = (ssl_certfile, ssl_keyfile)
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The TCP port (known once started)."""
        if self._port is None:
            raise RuntimeError("the sandbox server is not running")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` (``https://`` with TLS), where ``/__sandbox/`` lives."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self: _S) -> _S:
        """Start serving in a background thread (returns when ready)."""
        self._launch()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sandbox server did not start in time")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_START_TIMEOUT)
            self._thread = None
        self._port = None

    async def astart(self: _S) -> _S:
        """Like `start`, without blocking the running event loop."""
        self._launch()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._ready():
            if time.monotonic() > deadline:
                await self.astop()
                raise RuntimeError("the sandbox server did not start in time")
            await asyncio.sleep(0.005)
        return self

    async def astop(self) -> None:
        """Like `stop`, without blocking the running event loop."""
        if self._server is not None:
            self._server.should_exit = True
        thread = self._thread
        if thread is not None:
            deadline = time.monotonic() + _START_TIMEOUT
            while thread.is_alive() and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread, not a task
                await asyncio.sleep(0.005)
            self._thread = None
        self._port = None

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self: _S) -> _S:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        where = self.root_url if self._port is not None else "not running"
        return f"<{type(self).__name__} {where}>"

    def _launch(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the sandbox server is already running")
        uvicorn = _uvicorn()
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self._requested_port,
            loop="asyncio",
            lifespan="off",
            access_log=False,
            log_level="warning",
            # Longer than clients keep idle connections, so the server never
            # closes one under a request in flight.
            timeout_keep_alive=30,
            # (TLS connections kept alive idle would hold a stop for it all.)
            timeout_graceful_shutdown=1 if self.tls else 5,
            ssl_certfile=self._ssl[0],
            ssl_keyfile=self._ssl[1],
        )
        self._server = uvicorn.Server(config)
        self._error = None
        self._thread = threading.Thread(
            target=self._serve, name="viber-sandbox", daemon=True
        )
        self._thread.start()

    def _ready(self) -> bool:
        if self._error is not None or (
            self._thread is not None and not self._thread.is_alive()
        ):
            raise RuntimeError(
                f"the sandbox server failed to start: {self._error!r}"
            ) from self._error
        server = self._server
        if not server.started:
            return False
        self._port = int(server.servers[0].sockets[0].getsockname()[1])
        return True

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._server.serve())
            loop.run_until_complete(self._after_serving())
        except BaseException as error:  # noqa: BLE001 - reported to the starter
            self._error = error
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _after_serving(self) -> None:
        """Clean up on the server's loop once it stopped serving."""


class SandboxServer(AppServer):
    """A sandbox served by uvicorn; use it as a (sync or async) context manager.

    Attributes:
        sandbox: The `Sandbox` app, to inspect and steer.
        host: The interface served on.
    """

    def __init__(self, sandbox: Sandbox, **serving: Any):
        super().__init__(sandbox, **serving)
        self.sandbox = sandbox

    @property
    def base_url(self) -> str:
        """The API base URL to give `AsyncViberClient` (ends in ``/v1/api``)."""
        return f"{self.root_url}{API_PREFIX}"

    @property
    def access_key(self) -> str:
        """The access key the sandbox accepts."""
        return self.sandbox.config.access_key

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not running"
        return f"<SandboxServer {where}>"

    async def _after_serving(self) -> None:
        await self.sandbox.aclose()


def serve_app(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> AppServer:
    """Serve any ASGI app (a `CallbackReceiver`, say) under uvicorn in a thread.

    Use the result as ``with serve_app(app) as server:`` (or ``async with``);
    ``server.root_url`` is where it listens. With *ssl_certfile* (a PEM file
    with the certificate chain, and the key unless *ssl_keyfile* has it) it
    serves HTTPS.
    """
    return AppServer(
        app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile
    )


def serve_sandbox(
    config: SandboxConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    sandbox: Sandbox | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> SandboxServer:
    """Serve a sandbox under uvicorn on loopback (a free port by default).

    Use the result as ``with serve_sandbox(...) as server:`` or ``async with``;
    it has ``.base_url`` (ending in ``/v1/api``), ``.access_key`` and
    ``.sandbox``.

    Args:
        config: The knobs (ignored when *sandbox* is given).
        host: Interface to listen on.
        port: TCP port; 0 picks a free one.
        sandbox: An existing `Sandbox` to serve.
        ssl_certfile: Serve HTTPS with this certificate chain (PEM; with
            the key unless *ssl_keyfile* is given).
        ssl_keyfile: The certificate's private key (PEM).
    """
    app = sandbox if sandbox is not None else Sandbox(config)
    return SandboxServer(
        app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile
    )
