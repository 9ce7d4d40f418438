"""The sandbox's pieces behind issue 19: the shared ASGI lifespan loop, the
answers its one responder sends, its composed `Admin`, and its 2Way rule
(`MessageType.is_two_way`). In process, no server: pure or `ASGITransport`."""

from __future__ import annotations

import json
import random
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest

from decisiontelecom_viber import MessageType
from decisiontelecom_viber._asgi import serve_lifespan
from decisiontelecom_viber.sandbox import Sandbox, SandboxConfig
from decisiontelecom_viber.sandbox._http import (
    error_reply,
    fault_reply,
    invalid_reply,
    ok_reply,
    recorded_status,
    send_reply,
)
from decisiontelecom_viber.sandbox._lifecycle import plan_timeline


KEY = "answers-key"
DEFAULT = SandboxConfig()
VENDOR = SandboxConfig(profile="vendor")
IN_200 = SandboxConfig(errors_with_http_200=True)


class Lifespan:
    """The server side of a lifespan connection: startup, then shutdown."""

    def __init__(self) -> None:
        self.incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        self.log: list[str] = []

    async def receive(self) -> MutableMapping[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.log.append(message["type"])


class TestLifespan:
    async def test_acknowledges_both_events_then_returns(self) -> None:
        """Startup and shutdown are acknowledged in order, then the loop ends."""
        lifespan = Lifespan()

        await serve_lifespan(lifespan.receive, lifespan.send)

        assert [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ] == lifespan.log

    async def test_shutdown_work_runs_before_the_acknowledgement(self) -> None:
        """The server may stop once shutdown is acknowledged: the work is done."""
        lifespan = Lifespan()

        async def on_shutdown() -> None:
            lifespan.log.append("closed")

        await serve_lifespan(lifespan.receive, lifespan.send, on_shutdown=on_shutdown)

        assert [
            "lifespan.startup.complete",
            "closed",
            "lifespan.shutdown.complete",
        ] == lifespan.log

    async def test_the_sandbox_stops_its_callbacks_at_shutdown(self) -> None:
        """A served sandbox (callbacks started) ends its lifespan cleanly."""
        sandbox = Sandbox(SandboxConfig(access_key=KEY))
        transport = httpx.ASGITransport(app=sandbox)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
            assert 200 == (await http.get("/__sandbox/state")).status_code
        lifespan = Lifespan()

        await sandbox({"type": "lifespan"}, lifespan.receive, lifespan.send)

        assert [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ] == lifespan.log


class TestReplies:
    @pytest.mark.parametrize(
        ("config", "kind", "status"),
        [
            (DEFAULT, "rate_limited", 429),
            (DEFAULT, "no_balance", 402),
            (DEFAULT, "bad_json", 400),
            (VENDOR, "rate_limited", 200),
            (VENDOR, "no_balance", 200),
            (VENDOR, "unauthorized", 401),
            (VENDOR, "bad_json", 400),
            (IN_200, "unauthorized", 200),
            (IN_200, "fault_500", 200),
        ],
    )
    def test_error_status_follows_the_profile(
        self, config: SandboxConfig, kind: str, status: int
    ) -> None:
        """Only business errors go out in 200 under the vendor profile."""
        assert status == error_reply(kind)(config).status

    @pytest.mark.parametrize(
        ("config", "status"), [(DEFAULT, 400), (VENDOR, 200), (IN_200, 200)]
    )
    def test_invalid_parameter_names_the_field(
        self, config: SandboxConfig, status: int
    ) -> None:
        reply = invalid_reply("source_addr")(config)

        assert status == reply.status
        assert "Invalid Parameter: source_addr" == json.loads(reply.body)["name"]

    def test_a_gateway_page_is_html_without_the_apis_headers(self) -> None:
        """Whatever the mode: 502, text/html, no rate-limit headers."""
        reply = fault_reply("fault_502_html")(IN_200)

        assert (502, b"text/html", False) == (
            reply.status,
            reply.content_type,
            reply.api_headers,
        )

    def test_disconnects_send_nothing(self) -> None:
        """Before acceptance or after it, a disconnect answers nothing."""
        assert fault_reply("fault_disconnect_before")(DEFAULT).status is None
        reply = ok_reply({"message_id": 7}, "fault_disconnect_after")(DEFAULT)
        assert reply.status is None

    def test_a_truncated_body_is_the_accepted_answer_cut(self) -> None:
        reply = ok_reply({"message_id": 7}, "fault_truncated_body")(DEFAULT)

        assert (200, b'{"message_id":7}', True) == (
            reply.status,
            reply.body,
            reply.truncate,
        )

    @pytest.mark.parametrize(
        ("config", "outcome", "status", "recorded"),
        [
            (DEFAULT, "invalid", 400, 400),
            (VENDOR, "invalid", 400, 200),  # a body that is not JSON among them
            (VENDOR, "rate_limited", 429, 200),
            (VENDOR, "unauthorized", 401, 401),
            (IN_200, "fault_502_html", 502, 502),
            (IN_200, "fault_disconnect_before", None, None),
        ],
    )
    def test_the_record_shows_the_profiles_status(
        self,
        config: SandboxConfig,
        outcome: str,
        status: int | None,
        recorded: int | None,
    ) -> None:
        assert recorded == recorded_status(config, outcome, status)

    async def test_headers_go_with_an_api_answer(self) -> None:
        sent: list[MutableMapping[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await send_reply(send, ok_reply({"a": 1})(DEFAULT), {"Retry-After": "1"})

        assert (b"retry-after", b"1") in sent[0]["headers"]
        assert b'{"a":1}' == sent[1]["body"]


class TestAdmin:
    def test_the_sandbox_holds_its_admin_instead_of_inheriting_it(self) -> None:
        assert (Sandbox, object) == Sandbox.__mro__

    async def test_json_views_match_the_endpoints(self) -> None:
        """`state_json`/`messages_json` are what ``/__sandbox/`` serves."""
        sandbox = Sandbox(SandboxConfig(access_key=KEY, seed=1))
        transport = httpx.ASGITransport(app=sandbox)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
            sent = await http.post(
                "/v1/api/send-viber",
                auth=(KEY, ""),
                json={
                    "source_addr": "Brand",
                    "destination_addr": "380501234567",
                    "message_type": 106,
                    "text": "hi",
                    "source_type": 2,
                },
            )
            messages = (await http.get("/__sandbox/messages")).json()
            state = (await http.get("/__sandbox/state")).json()
        await sandbox.aclose()

        assert 200 == sent.status_code
        assert sandbox.messages_json() == messages
        assert {"message_id"} == set(sent.json())
        assert sandbox.state_json()["stats"] == state["stats"]
        assert 1 == state["stats"]["accepted"]
        assert sandbox.accepted_ids() == {sent.json()["message_id"]}


@pytest.mark.parametrize("message_type", [106, 108, 206, 208, 222, 225, 301, 304])
def test_only_two_way_types_get_a_reply(message_type: int) -> None:
    """The sandbox's 2Way rule is the enum's."""
    config = SandboxConfig(reply_fraction=1.0, seen_fraction=0.0)
    payload = {"message_type": message_type, "source_type": 2}

    timeline = plan_timeline(payload, config, random.Random(0), 1)

    two_way = MessageType(message_type).is_two_way
    assert two_way == (timeline.reply_at is not None)
    assert two_way == (message_type in (206, 208))
