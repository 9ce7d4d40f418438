"""Shared fixtures: a fake clock, respx wired to the default transport, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import respx

from decisiontelecom_viber import AsyncViberClient, RetryPolicy

from .helpers import ACCESS_KEY, BASE_URL, AiohttpTransportMocker, FakeClock


pytest_plugins = ["pytester"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """respx router patched into the default transport, for unit tests."""
    with respx.mock(
        base_url=BASE_URL, using=AiohttpTransportMocker.name, assert_all_called=False
    ) as router:
        yield router


@pytest.fixture
async def make_client(
    clock: FakeClock,
) -> AsyncIterator[Callable[..., AsyncViberClient]]:
    """Build clients on the fake clock; every one is closed after the test."""
    made: list[AsyncViberClient] = []

    def make(**kwargs: Any) -> AsyncViberClient:
        kwargs.setdefault("access_key", ACCESS_KEY)
        kwargs.setdefault("base_url", BASE_URL)
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("retry", RetryPolicy())
        viber = AsyncViberClient(**kwargs)
        made.append(viber)
        return viber

    yield make
    for viber in made:
        await viber.aclose()


@pytest.fixture
async def client(
    make_client: Callable[..., AsyncViberClient],
) -> AsyncIterator[AsyncViberClient]:
    async with make_client() as viber:
        yield viber
