"""One Redis boundary: `_scripts` alone turns redis-py's errors into ours."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

import decisiontelecom_viber.redis
from decisiontelecom_viber.redis import RedisUnavailableError
from decisiontelecom_viber.redis._scripts import (
    GuardScripts,
    LimiterParams,
    LimiterScripts,
)

from .servers import unused_port


PACKAGE = Path(decisiontelecom_viber.redis.__file__).parent
PARAMS = LimiterParams(
    rate=10.0, burst=1, adaptive=True, initial_rate=50.0, headroom=0.0, state_ttl=60.0
)


def redis_names(tree: ast.AST) -> set[str]:
    """What a module takes from redis-py's errors, or of the boundary's tuple."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "redis.exceptions"
        ):
            names.update(alias.name for alias in node.names)
        if isinstance(node, ast.Name) and node.id == "REDIS_ERRORS":
            names.add(node.id)
    return names


def test_only_the_boundary_catches_redis_errors() -> None:
    """The errors are named in `_errors`, caught in `_scripts`, nowhere else."""
    users = {
        path.name: redis_names(ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.glob("*.py"))
    }

    assert {
        "_errors.py": {"RedisError", "REDIS_ERRORS"},
        "_scripts.py": {"REDIS_ERRORS"},
    } == {name: used for name, used in users.items() if used}


@pytest.fixture
async def unreachable() -> AsyncIterator[Redis]:
    client = Redis(host="127.0.0.1", port=unused_port(), socket_connect_timeout=1)
    yield client
    await client.aclose()


Call = Callable[[Redis], Awaitable[object]]
CALLS: list[tuple[str, Call]] = [
    (
        "rate limit",
        lambda r: LimiterScripts(r).acquire("k", PARAMS, want=1, horizon=0.1),
    ),
    ("rate limit count", lambda r: LimiterScripts(r).flush("k", PARAMS, accepted=1)),
    (
        "rate limit report",
        lambda r: LimiterScripts(r).report(
            "k", PARAMS, sent_at=1.0, received_at=1.0, retry_after=None, max_pause=1.0
        ),
    ),
    ("rate limit state", lambda r: LimiterScripts(r).read_state("k")),
    ("rate limit reset", lambda r: LimiterScripts(r).delete("k")),
    ("claim", lambda r: GuardScripts(r).claim("k", owner="o", lease=1.0, ttl=9.0)),
    (
        "lookup",
        lambda r: GuardScripts(r).claim("k", owner="", lease=1.0, ttl=9.0, peek=True),
    ),
    ("mark", lambda r: GuardScripts(r).mark("k", owner="o", ttl=9.0)),
    ("unmark", lambda r: GuardScripts(r).mark("k", owner="o", ttl=9.0, unmark=True)),
    ("settle", lambda r: GuardScripts(r).settle("k", owner="o", action="sent", ttl=9)),
    (
        "resolve",
        lambda r: GuardScripts(r).settle(
            "k", owner="", action="sent", message_id=1, ttl=9.0, operation="resolve"
        ),
    ),
    (
        "reconcile",
        lambda r: GuardScripts(r).settle(
            "k", owner="", action="reconcile", message_id=1, ttl=9.0
        ),
    ),
    ("forget", lambda r: GuardScripts(r).forget("k")),
]


@pytest.mark.parametrize(("operation", "call"), CALLS, ids=[op for op, _ in CALLS])
async def test_every_call_translates_an_unavailable_redis(
    unreachable: Redis, operation: str, call: Call
) -> None:
    with pytest.raises(RedisUnavailableError) as raised:
        await call(unreachable)

    assert operation == raised.value.operation
    assert isinstance(raised.value.__cause__, RedisConnectionError)
    assert "nothing was sent" in str(raised.value)
