"""Callbacks through a real app: the docs' way of serving the receiver works,
and a way that loses every callback is loud about it.

Starlette's ``Mount("/viber/callbacks", ...)`` answers the exact path with a
307 to ``/viber/callbacks/``; the sandbox (like the API) follows no
redirects, so every callback was dropped without a word.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from decisiontelecom_viber import (
    AsyncViberClient,
    CallbackReceiver,
    OutcomeUnknownError,
    StatusCallback,
    ViberMessage,
)
from decisiontelecom_viber.sandbox import SandboxConfig, SandboxServer

from .helpers import eventually
from .rawhttp import RawServer, delayed, respond
from .servers import serve_in_thread


pytestmark = pytest.mark.integration


class App:
    """A Starlette app with a receiver served one way or the other."""

    def __init__(self, how: str) -> None:
        self.events: list[StatusCallback] = []

        async def on_status(event: StatusCallback) -> None:
            self.events.append(event)

        self.receiver = CallbackReceiver(on_status=on_status)
        self.app = Starlette()
        if how == "route":
            # What docs/callbacks.md says. (Starlette serves an endpoint that is
            # not a function as an ASGI app, but annotates only request handlers.)
            self.app.add_route(
                "/viber/callbacks",
                self.receiver,  # type: ignore[arg-type]
                methods=["POST"],
            )
        else:
            self.app.router.routes.append(Mount("/viber/callbacks", self.receiver))


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[App, str]]:
    app = App(request.param)
    with serve_in_thread(app.app) as root:
        yield app, f"{root}/viber/callbacks"


def otp(callback_url: str) -> ViberMessage:
    return ViberMessage.transactional(
        sender="Acme", receiver="380501234567", text="code", callback_url=callback_url
    )


@pytest.mark.parametrize("served", ["route"], indirect=True)
async def test_the_documented_route_receives_every_status(
    served: tuple[App, str],
    viber_client: AsyncViberClient,
    viber_sandbox: SandboxServer,
) -> None:
    app, url = served
    message_id = await viber_client.send_message(otp(url))
    viber_sandbox.sandbox.advance(10)

    await eventually(lambda: len(app.events) >= 2)
    assert {message_id} == {event.message_id for event in app.events}
    assert 0 == viber_sandbox.sandbox.stats.callbacks_undelivered
    assert app.receiver.stats.received >= 2


@pytest.mark.parametrize("fault", ["fault_disconnect_after", "fault_truncated_body"])
@pytest.mark.parametrize("served", ["route"], indirect=True)
async def test_a_message_whose_answer_was_broken_still_gets_its_callbacks(
    served: tuple[App, str], viber_sandbox: SandboxServer, fault: str
) -> None:
    """The API accepted it, so its status callbacks follow (reconciliation's proof)."""
    app, url = served
    faults: dict[str, Any] = {fault: 1.0}
    viber_sandbox.sandbox.reset(SandboxConfig(**faults))
    async with AsyncViberClient(
        viber_sandbox.access_key, base_url=viber_sandbox.base_url
    ) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.send_message(otp(url))
    (accepted,) = viber_sandbox.sandbox.messages()
    viber_sandbox.sandbox.advance(10)

    await eventually(lambda: len(app.events) >= 2)
    assert {accepted.message_id} == {event.message_id for event in app.events}


@pytest.mark.filterwarnings(
    "ignore::decisiontelecom_viber.sandbox.UndeliveredCallbackWarning"
)
@pytest.mark.parametrize("served", ["mount"], indirect=True)
async def test_a_mount_redirects_and_the_sandbox_says_so(
    served: tuple[App, str],
    viber_client: AsyncViberClient,
    viber_sandbox: SandboxServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, url = served
    with caplog.at_level(logging.WARNING, "decisiontelecom_viber.sandbox"):
        await viber_client.send_message(otp(url))
        viber_sandbox.sandbox.advance(10)
        await eventually(lambda: viber_sandbox.sandbox.stats.callbacks_undelivered >= 2)
        await asyncio.sleep(0)

    assert [] == app.events
    assert {307} == {c.http_status for c in viber_sandbox.sandbox.callbacks()}
    warned = [r.message for r in caplog.records if "not delivered" in r.message]
    assert warned
    assert "HTTP 307 (a redirect" in warned[0]
    assert "add_route" in warned[0]


def test_the_plugin_warns_about_undelivered_callbacks(
    pytester: pytest.Pytester,
) -> None:
    """A user's test whose callbacks went nowhere ends with a warning."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(
        """
        import asyncio
        from decisiontelecom_viber import ViberMessage

        async def test_send(viber_client, viber_sandbox):
            await viber_client.send_message(ViberMessage.transactional(
                sender="A", receiver="380501234567", text="t",
                callback_url="http://127.0.0.1:9/hooks"))
            viber_sandbox.sandbox.advance(10)
            for _ in range(500):
                if viber_sandbox.sandbox.stats.callbacks_undelivered:
                    break
                await asyncio.sleep(0.01)
        """
    )

    result = pytester.runpytest_subprocess("-p", "pytest_asyncio")

    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*UndeliveredCallbackWarning*never delivered*"])


@pytest.mark.filterwarnings(
    "ignore::decisiontelecom_viber.sandbox.UndeliveredCallbackWarning"
)
@pytest.mark.viber_sandbox(callback_timeout=2.0, delivered_after=1000)
async def test_a_burst_beyond_the_connection_pool_waits_for_connections(
    viber_client: AsyncViberClient, viber_sandbox: SandboxServer
) -> None:
    """250 callbacks at once to a receiver answering each in 1.5 s: the
    sandbox's client has 100 connections, so the third wave waits 3 s for
    one, past callback_timeout (2 s: room for a connect's SYN retry on a
    loaded runner). That wait is no fault of the receiver (no byte has
    left): it used to end in PoolTimeout and count as undelivered (the demo
    lost 40-300 callbacks on a loaded machine)."""
    hooks = RawServer(default=delayed(1.5, respond(200, b"ok")))
    async with hooks:
        url = f"http://127.0.0.1:{hooks.port}/hooks"
        messages = [otp(url) for _ in range(250)]
        async with viber_client.send_messages(messages) as stream:
            assert 250 == len([r async for r in stream if r.message_id])
        viber_sandbox.sandbox.advance(1.5)  # "sent" (one callback each)

        def settled() -> bool:
            stats = viber_sandbox.sandbox.stats  # (a snapshot)
            return 250 <= stats.callbacks_sent + stats.callbacks_undelivered

        await eventually(settled, timeout=30)
        stats = viber_sandbox.sandbox.stats

    # No callback waited out its timeout in the pool. (A loaded CI runner
    # may still time out a few connects to this one-loop server: 2-8 of 250
    # there, a fault of the receiver's side, not of the pool.)
    errors = [c.error or "" for c in viber_sandbox.sandbox.callbacks()]
    assert not [e for e in errors if "PoolTimeout" in e]
    assert {e.split(":")[0] for e in errors if e} <= {"ConnectTimeout"}
    assert stats.callbacks_undelivered <= 25
    assert stats.callbacks_sent == len(hooks.received)
