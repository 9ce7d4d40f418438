"""A real Redis for the tests: Debian's ``redis-server`` on a free loopback port.

A pytest plugin: test modules load it with ``pytest_plugins =
["tests.redis_server"]`` (and do not import it otherwise, so that pytest can
rewrite its asserts). A missing ``redis-server`` fails the tests with a hint
rather than skipping them: CI installs it. When ``DECISIONTELECOM_TEST_REDIS_PORT``
names a loopback port where a Redis already runs (``.ci/run`` starts one),
the session uses that server instead of starting its own.
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


REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
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


def _executable() -> str:
    if os.access(REDIS_SERVER, os.X_OK):
        return REDIS_SERVER
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(
            f"redis-server not found at {REDIS_SERVER} nor on PATH: these tests "
            "need a real Redis. Install Debian's package "
            "(apt-get install -y redis-server) or set REDIS_SERVER to its path.",
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
    executable = _executable()
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
