"""pytest fixtures for testing an integration against the sandbox.

Registered automatically (entry point ``pytest11``) when decisiontelecom-viber
is installed; serving needs the ``[sandbox]`` extra and ``viber_client``
needs pytest-asyncio. Nothing heavy is imported until a fixture is used.

- ``viber_sandbox``: a running sandbox server (real HTTP on loopback), reset
  for every test. One server is started per test session. Configure it per
  test with ``@pytest.mark.viber_sandbox(rate_limit=5, fault_500=0.1, ...)``
  (any `SandboxConfig` knob). A test during which a callback could not be
  delivered ends with an `UndeliveredCallbackWarning`.
- ``viber_client``: an `AsyncViberClient` pointed at it, with retry waits cut
  to milliseconds so tests stay fast. Pass client options with
  ``@pytest.mark.viber_client(retry=None, ...)``.
- ``viber_sync_client``: the same as a `ViberClient`, for sync tests.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest


if TYPE_CHECKING:
    from decisiontelecom_viber import AsyncViberClient, ViberClient

    from ._server import SandboxServer


def pytest_configure(config: pytest.Config) -> None:
    """Declare the markers that configure the fixtures."""
    config.addinivalue_line(
        "markers",
        "viber_sandbox(**knobs): SandboxConfig knobs for the viber_sandbox fixture",
    )
    config.addinivalue_line(
        "markers",
        "viber_client(**options): AsyncViberClient options for viber_client",
    )


@pytest.fixture(scope="session")
def _viber_sandbox_server() -> Iterator[SandboxServer]:
    from ._server import serve_sandbox

    with serve_sandbox() as server:
        yield server


def _marker_kwargs(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(name))):
        kwargs.update(marker.kwargs)
    return kwargs


@pytest.fixture
def viber_sandbox(
    request: pytest.FixtureRequest, _viber_sandbox_server: SandboxServer
) -> Iterator[SandboxServer]:
    """A running sandbox, reset (and configured by the marker) for this test."""
    from ._config import SandboxConfig

    server = _viber_sandbox_server
    server.sandbox.reset(SandboxConfig(**_marker_kwargs(request, "viber_sandbox")))
    yield server
    undelivered = server.sandbox.stats.callbacks_undelivered
    server.sandbox.reset(SandboxConfig())
    if undelivered:
        from ._state import UndeliveredCallbackWarning

        warnings.warn(
            UndeliveredCallbackWarning(
                f"{undelivered} callback(s) of the sandbox were never delivered: "
                "see the decisiontelecom_viber.sandbox WARNING log lines"
            ),
            stacklevel=1,
        )


def fast_retry_policy() -> Any:
    """The retry policy of ``viber_client``: the default one, with tiny waits."""
    from decisiontelecom_viber import RetryPolicy

    return RetryPolicy(wait_initial=0.001, wait_max=0.01, max_retry_after=0.01)


def _client_options(
    request: pytest.FixtureRequest, server: SandboxServer
) -> dict[str, Any]:
    options: dict[str, Any] = {"retry": fast_retry_policy()}
    options.update(_marker_kwargs(request, "viber_client"))
    options.setdefault("access_key", server.access_key)
    options.setdefault("base_url", server.base_url)
    return options


@pytest.fixture
def viber_sync_client(
    request: pytest.FixtureRequest, viber_sandbox: SandboxServer
) -> Iterator[ViberClient]:
    """A `ViberClient` (the sync client) pointed at ``viber_sandbox``.

    Configured like ``viber_client`` (the ``viber_client`` marker applies);
    for sync tests, no event loop needed.
    """
    from decisiontelecom_viber import ViberClient

    with ViberClient(**_client_options(request, viber_sandbox)) as client:
        yield client


def _async_fixture(function: Callable[..., Any]) -> Any:
    """pytest-asyncio's fixture decorator, or a fixture saying it is missing."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - depends on the environment

        @pytest.fixture(name=function.__name__)
        def missing() -> None:
            pytest.fail(f"the {function.__name__} fixture needs pytest-asyncio")

        return missing
    return pytest_asyncio.fixture(function)


@_async_fixture
async def viber_client(
    request: pytest.FixtureRequest, viber_sandbox: SandboxServer
) -> AsyncIterator[AsyncViberClient]:
    """An `AsyncViberClient` pointed at ``viber_sandbox``."""
    from decisiontelecom_viber import AsyncViberClient

    async with AsyncViberClient(**_client_options(request, viber_sandbox)) as client:
        yield client
