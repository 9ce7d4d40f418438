"""Sandbox lifecycle, callbacks, admin endpoints, in-process use, CLI and plugin."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from decisiontelecom_viber import (
    AsyncViberClient,
    MessageStatus,
    OutcomeUnknownError,
    SmsStatus,
    ViberMessage,
)
from decisiontelecom_viber.sandbox import Sandbox, SandboxConfig, SandboxServer
from decisiontelecom_viber.sandbox._faults import sample_latency

from .helpers import eventually
from .servers import Recorder, serve_in_thread


pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder()
    with serve_in_thread(recorder) as root:
        yield recorder, root


@pytest.fixture
def hook(receiver: tuple[Recorder, str]) -> tuple[Recorder, str]:
    recorder, root = receiver
    recorder.bodies.clear()
    recorder.paths.clear()
    return recorder, f"{root}/hooks/viber?token=abc"


def otp(**fields: Any) -> ViberMessage:
    return ViberMessage.transactional(
        sender="Acme", receiver="380501234567", text="code 1", **fields
    )


async def statuses(client: AsyncViberClient, message_id: int) -> tuple[Any, Any]:
    receipt = await client.get_message_status(message_id)
    return receipt.status, receipt.sms_message_status


class TestLifecycle:
    @pytest.mark.viber_sandbox(seen_fraction=1.0)
    async def test_pending_sent_delivered_seen(
        self, viber_client: AsyncViberClient, viber_sandbox: SandboxServer
    ) -> None:
        """API time drives pending -> sent -> delivered -> seen."""
        message_id = await viber_client.send_message(otp())
        seen = [(await viber_client.get_message_status(message_id)).status]
        for step in (1.0, 3.0, 5.0):
            viber_sandbox.sandbox.advance(step)
            seen.append((await viber_client.get_message_status(message_id)).status)

        assert [
            MessageStatus.PENDING,
            MessageStatus.SENT,
            MessageStatus.DELIVERED,
            MessageStatus.SEEN,
        ] == seen

    @pytest.mark.viber_sandbox(time_scale=1000.0, seen_fraction=0.0)
    async def test_time_scale_runs_the_lifecycle_fast(
        self, viber_client: AsyncViberClient
    ) -> None:
        """With time_scale=1000, the 3 s to delivery pass in a few milliseconds."""
        message_id = await viber_client.send_message(otp())
        for _ in range(200):
            receipt = await viber_client.get_message_status(message_id)
            if receipt.is_final:
                break
            await asyncio.sleep(0.005)

        assert MessageStatus.DELIVERED == receipt.status

    @pytest.mark.parametrize(
        ("knob", "final"),
        [
            ("rejected_fraction", MessageStatus.REJECTED),
            ("error_fraction", MessageStatus.ERROR),
            ("undelivered_fraction", MessageStatus.UNDELIVERED),
        ],
    )
    async def test_fates(
        self,
        viber_client: AsyncViberClient,
        viber_sandbox: SandboxServer,
        knob: str,
        final: MessageStatus,
    ) -> None:
        """Configured fractions end rejected, in error or undelivered."""
        viber_sandbox.sandbox.configure(**{knob: 1.0})
        message_id = await viber_client.send_message(otp())
        viber_sandbox.sandbox.advance(3600)

        assert final == (await viber_client.get_message_status(message_id)).status

    @pytest.mark.viber_sandbox(delivered_after=1000.0)
    async def test_expiry_after_validity_period(
        self, viber_client: AsyncViberClient, viber_sandbox: SandboxServer
    ) -> None:
        """Not delivered within validity_period: undelivered at expiry."""
        message_id = await viber_client.send_message(otp(validity_period=60))
        viber_sandbox.sandbox.advance(59)
        before = (await viber_client.get_message_status(message_id)).status
        viber_sandbox.sandbox.advance(2)
        after = (await viber_client.get_message_status(message_id)).status

        assert (MessageStatus.SENT, MessageStatus.UNDELIVERED) == (before, after)

    @pytest.mark.parametrize("enroute", [False, True])
    async def test_sms_fallback(
        self,
        viber_client: AsyncViberClient,
        viber_sandbox: SandboxServer,
        enroute: bool,
    ) -> None:
        """Undelivered transactional Viber + SMS falls back to an SMS.

        Its fields come with its outcome; the undocumented status 1 (SMPP's
        ENROUTE) in between only when asked for.
        """
        viber_sandbox.sandbox.reset(
            SandboxConfig(
                undelivered_fraction=1.0,
                undelivered_after=10,
                sms_enroute_status=enroute,
            )
        )
        with_sms = await viber_client.send_message(otp(text_sms="code 1"))
        without = await viber_client.send_message(otp())
        viber_sandbox.sandbox.advance(11)
        midway = await viber_client.get_message_status(with_sms)
        viber_sandbox.sandbox.advance(10)
        final = await viber_client.get_message_status(with_sms)
        plain = await viber_client.get_message_status(without)

        assert (
            MessageStatus.UNDELIVERED,
            SmsStatus.ENROUTE if enroute else None,
        ) == (midway.status, midway.sms_message_status)
        assert midway.is_final is not enroute
        assert SmsStatus.DELIVERED == final.sms_message_status
        assert final.sms_message_id is not None
        assert final.is_final
        assert (None, None) == (plain.sms_message_id, plain.sms_message_status)


async def undeliverable(
    client: AsyncViberClient,
    server: SandboxServer,
    caplog: pytest.LogCaptureFixture,
    url: str,
    count: int,
) -> None:
    """Send with a callback URL nobody serves; wait for *count* given up."""
    with caplog.at_level(logging.WARNING, "decisiontelecom_viber.sandbox"):
        await client.send_message(otp(callback_url=url))
        server.sandbox.advance(10)
        await eventually(lambda: server.sandbox.stats.callbacks_undelivered >= count)


class TestCallbacks:
    @pytest.mark.viber_sandbox(seen_fraction=1.0)
    async def test_each_status_change_is_posted(
        self,
        viber_client: AsyncViberClient,
        viber_sandbox: SandboxServer,
        hook: tuple[Recorder, str],
    ) -> None:
        """sent, delivered and seen are POSTed to the callback URL, in order."""
        recorder, url = hook
        message_id = await viber_client.send_message(otp(callback_url=url))
        viber_sandbox.sandbox.advance(100)

        bodies = await asyncio.to_thread(recorder.wait_for, 3)

        assert [
            {"message_id": message_id, "status": 0},
            {"message_id": message_id, "status": 1},
            {"message_id": message_id, "status": 6},
        ] == bodies
        assert all(path.endswith("?token=abc") for path in recorder.paths)
        await eventually(lambda: viber_sandbox.sandbox.stats.callbacks_sent == 3)

    @pytest.mark.viber_sandbox(reply_fraction=1.0, seen_fraction=0.0)
    async def test_scheduled_two_way_reply(
        self,
        viber_client: AsyncViberClient,
        viber_sandbox: SandboxServer,
        hook: tuple[Recorder, str],
    ) -> None:
        """A delivered 2Way message gets a reply in the documented shape."""
        recorder, url = hook
        message_id = await viber_client.send_message(
            ViberMessage(
                sender="Acme",
                receiver="972512222222",
                message_type=206,
                source_type=1,
                text="Want a callback?",
                callback_url=url,
            )
        )
        viber_sandbox.sandbox.advance(100)

        bodies = await asyncio.to_thread(recorder.wait_for, 3)
        reply = next(body for body in bodies if "message_token" in body)

        assert "972512222222" == reply["phone_number"]
        assert isinstance(reply["message_token"], int)
        assert isinstance(reply["time"], int)
        assert {
            "text": "Yes, please",
            "tracking_data": f"tracking_id:{message_id}",
        } == reply["message"]
        await eventually(lambda: viber_sandbox.sandbox.stats.replies_sent == 1)

    async def test_reply_on_demand_over_http(
        self,
        viber_client: AsyncViberClient,
        viber_sandbox: SandboxServer,
        hook: tuple[Recorder, str],
    ) -> None:
        """POST /__sandbox/reply makes the user answer now."""
        recorder, url = hook
        message_id = await viber_client.send_message(otp(callback_url=url))
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                f"{viber_sandbox.root_url}/__sandbox/reply",
                json={"message_id": message_id, "text": "STOP"},
            )

        bodies = await asyncio.to_thread(recorder.wait_for, 1)

        assert 200 == answer.status_code
        assert "STOP" == bodies[0]["message"]["text"]

    async def test_reset_drops_planned_callbacks(
        self,
        viber_client: AsyncViberClient,
        viber_sandbox: SandboxServer,
        hook: tuple[Recorder, str],
    ) -> None:
        """Callbacks planned before a reset never arrive."""
        recorder, url = hook
        await viber_client.send_message(otp(callback_url=url))
        viber_sandbox.sandbox.reset()
        viber_sandbox.sandbox.advance(1000)
        message_id = await viber_client.send_message(otp(callback_url=url))
        viber_sandbox.sandbox.advance(1000)

        bodies = await asyncio.to_thread(recorder.wait_for, 2)
        await asyncio.sleep(0.05)

        assert {message_id} == {body["message_id"] for body in recorder.bodies}
        assert bodies

    @pytest.mark.filterwarnings(
        "ignore::decisiontelecom_viber.sandbox.UndeliveredCallbackWarning"
    )
    async def test_unreachable_receiver_is_counted(
        self,
        viber_client: AsyncViberClient,
        viber_sandbox: SandboxServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Failed deliveries are recorded and logged as WARNINGs, not fatal."""
        await undeliverable(
            viber_client, viber_sandbox, caplog, "http://127.0.0.1:9/x?sig=s", 2
        )
        stats = viber_sandbox.sandbox.stats
        assert stats.callbacks_failed == stats.callbacks_undelivered  # 1 attempt
        assert all(not c.delivered for c in viber_sandbox.sandbox.callbacks())
        warned = [r for r in caplog.records if "not delivered" in r.message]
        assert warned
        assert {"WARNING"} == {r.levelname for r in warned}
        assert "http://127.0.0.1:9/x " in warned[0].message
        assert "sig=" not in warned[0].message  # (the query is left out)

    @pytest.mark.filterwarnings(
        "ignore::decisiontelecom_viber.sandbox.UndeliveredCallbackWarning"
    )
    async def test_user_info_is_not_logged(
        self,
        viber_client: AsyncViberClient,
        viber_sandbox: SandboxServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        await undeliverable(
            viber_client, viber_sandbox, caplog, "http://user:hunter2@127.0.0.1:9/x", 1
        )

        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "http://127.0.0.1:9/x" in logged
        assert "hunter2" not in logged
        assert "user" not in logged


class TestAdminEndpoints:
    async def test_state_config_reset_messages(
        self, viber_client: AsyncViberClient, viber_sandbox: SandboxServer
    ) -> None:
        """Read, reconfigure and reset the sandbox over HTTP."""
        message_id = await viber_client.send_message(otp())
        root = viber_sandbox.root_url
        async with httpx.AsyncClient() as http:
            state = (await http.get(f"{root}/__sandbox/state")).json()
            messages = (await http.get(f"{root}/__sandbox/messages")).json()
            requests = (await http.get(f"{root}/__sandbox/requests")).json()
            configured = await http.post(
                f"{root}/__sandbox/config", json={"rate_limit": 5}
            )
            bad = await http.post(f"{root}/__sandbox/config", json={"rate_limit": -1})
            unknown = await http.get(f"{root}/__sandbox/nope")
            advanced = await http.post(
                f"{root}/__sandbox/advance", json={"seconds": 10}
            )
            reset = await http.post(f"{root}/__sandbox/reset")

        assert 1 == state["stats"]["accepted"]
        assert [message_id] == [m["message_id"] for m in messages]
        assert "accepted" == requests[0]["outcome"]
        assert 5 == configured.json()["config"]["rate_limit"]
        assert 5 == viber_sandbox.sandbox.config.rate_limit
        assert (400, 404) == (bad.status_code, unknown.status_code)
        assert advanced.json()["api_time"] >= 10
        assert 0 == reset.json()["stats"]["requests"]
        assert [] == viber_sandbox.sandbox.messages()


class TestInProcess:
    async def test_asgi_transport_without_sockets(self) -> None:
        """The sandbox works in process through httpx.ASGITransport."""
        sandbox = Sandbox(SandboxConfig(access_key="k"))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox))
        async with AsyncViberClient(
            "k", base_url="http://127.0.0.1/v1/api", http_client=http
        ) as client:
            message_id = await client.send_message(otp())
            receipt = await client.get_message_status(message_id)
            sandbox.configure(fault_disconnect_after=1.0)
            with pytest.raises(OutcomeUnknownError):
                await client.send_message(otp())
        await http.aclose()
        await sandbox.aclose()

        assert MessageStatus.PENDING == receipt.status
        assert 2 == sandbox.stats.accepted


def test_python_m_sandbox_serves(tmp_path: Any) -> None:
    """`python -m decisiontelecom_viber.sandbox` serves with its flags."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "decisiontelecom_viber.sandbox",
            "--port",
            "0",
            "--access-key",
            "cli-key",
            "--rate",
            "50",
            "--burst",
            "10",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        base_url = first.rsplit(" ", 1)[-1].strip()
        token = base64.b64encode(b"cli-key").decode()
        response = httpx.post(
            f"{base_url}/send-viber",
            json={
                "source_addr": "A",
                "destination_addr": "1",
                "message_type": 106,
                "text": "t",
                "source_type": 2,
            },
            headers={"Authorization": f"Basic {token}"},
        )
        state = httpx.get(base_url.replace("/v1/api", "/__sandbox/state")).json()
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    assert base_url.startswith("http://127.0.0.1:")
    assert 200 == response.status_code
    assert (50, 10) == (state["config"]["rate_limit"], state["config"]["burst"])
    assert 0 == process.returncode


def test_pytest_plugin_in_a_users_suite(pytester: pytest.Pytester) -> None:
    """A user's own suite gets viber_sandbox and viber_client, marker included."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(
        """
        import pytest
        from decisiontelecom_viber import RateLimitError, ViberMessage

        MESSAGE = ViberMessage.transactional(
            sender="A", receiver="380501234567", text="t"
        )

        async def test_send(viber_client, viber_sandbox):
            message_id = await viber_client.send_message(MESSAGE)
            assert viber_sandbox.sandbox.message(message_id).text == "t"

        @pytest.mark.viber_sandbox(rate_limit=1, burst=1)
        @pytest.mark.viber_client(retry=None)
        async def test_marker(viber_client):
            await viber_client.send_message(MESSAGE)
            with pytest.raises(RateLimitError):
                await viber_client.send_message(MESSAGE)
        """
    )

    result = pytester.runpytest_subprocess("-p", "pytest_asyncio")

    result.assert_outcomes(passed=2)


async def test_serve_sandbox_async_form() -> None:
    """`async with serve_sandbox(...)` starts and stops without blocking the loop."""
    from decisiontelecom_viber.sandbox import serve_sandbox

    async with serve_sandbox(SandboxConfig(access_key="async-key")) as server:
        async with AsyncViberClient("async-key", base_url=server.base_url) as client:
            message_id = await client.send_message(otp())
        port = server.port

    assert message_id == server.sandbox.messages()[0].message_id
    assert port > 0
    with pytest.raises(RuntimeError):
        _ = server.port


@pytest.mark.parametrize(
    ("distribution", "low_median", "high_median", "spread"),
    [
        ("fixed", 0.1, 0.1, False),
        ("uniform", 0.08, 0.12, True),
        ("exponential", 0.055, 0.085, True),
        ("lognormal", 0.09, 0.11, True),
    ],
)
def test_latency_distributions(
    distribution: str, low_median: float, high_median: float, spread: bool
) -> None:
    """Latency samples follow the configured distribution around 0.1 s."""
    config = SandboxConfig(latency=0.1, latency_distribution=distribution, seed=1)  # type: ignore[arg-type]
    rng = random.Random(1)
    samples = sorted(sample_latency(config, rng)[0] for _ in range(4000))

    median = samples[len(samples) // 2]
    assert low_median <= median <= high_median
    assert spread == (samples[-1] - samples[0] > 0.05)
