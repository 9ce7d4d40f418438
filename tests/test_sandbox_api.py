"""Sandbox conformance over real HTTP, raw httpx: auth, validation, limits, faults."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from decisiontelecom_viber.sandbox import SandboxConfig, SandboxServer


pytestmark = pytest.mark.integration

KEY = "sandbox-access-key"

VALID = {
    "source_addr": "Acme",
    "destination_addr": "380501234567",
    "message_type": 106,
    "text": "hello",
    "source_type": 2,
}
PROMO = {
    **VALID,
    "message_type": 108,
    "source_type": 1,
    "image": "https://cdn.example.com/a.png",
    "button_caption": "Go",
    "button_action": "https://example.com",
}


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}


@pytest.fixture
def server(viber_sandbox: SandboxServer) -> SandboxServer:
    return viber_sandbox


@pytest.fixture
async def http(server: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        yield client


async def send(http: httpx.AsyncClient, payload: Any, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", auth())
    return await http.post("/send-viber", json=payload, headers=headers, **kwargs)


class TestAuth:
    async def test_valid_key_gets_an_integer_id(self, http: httpx.AsyncClient) -> None:
        """The documented success body: {"message_id": <int>}."""
        response = await send(http, VALID)

        assert 200 == response.status_code
        assert isinstance(response.json()["message_id"], int)

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            auth("wrong"),
            {"Authorization": "Bearer x"},
            {"Authorization": "Basic !!"},
        ],
        ids=["missing", "wrong-key", "bearer", "garbage"],
    )
    async def test_bad_credentials_get_401(
        self, http: httpx.AsyncClient, server: SandboxServer, headers: dict[str, str]
    ) -> None:
        """No or wrong key: 401 with a Yii2-style body; nothing accepted."""
        response = await send(http, VALID, headers=headers)

        assert 401 == response.status_code
        assert "Unauthorized" == response.json()["name"]
        assert 0 == server.sandbox.stats.accepted

    async def test_curl_form_of_the_key_works(self, http: httpx.AsyncClient) -> None:
        """The PHP/curl example sends base64("key:"); that is accepted too."""
        response = await send(http, VALID, headers=auth(KEY + ":"))

        assert 200 == response.status_code

    @pytest.mark.viber_sandbox(extra_access_keys=("second-key",))
    async def test_extra_keys(self, http: httpx.AsyncClient) -> None:
        """extra_access_keys are accepted as well."""
        assert 200 == (await send(http, VALID, headers=auth("second-key"))).status_code


INVALID = [
    ({"source_addr": ""}, "source_addr"),
    ({"source_addr": "x" * 21}, "source_addr"),
    ({"source_addr": None}, "source_addr"),
    ({"destination_addr": "+380501234567"}, "destination_addr"),
    ({"destination_addr": "1" * 21}, "destination_addr"),
    ({"destination_addr": None}, "destination_addr"),
    ({"message_type": 107}, "message_type"),
    ({"message_type": None}, "message_type"),
    ({"source_type": 3}, "source_type"),
    ({"text": ""}, "text"),
    ({"text": "x" * 1001}, "text"),
    ({"validity_period": 39}, "validity_period"),
    ({"validity_period": 21601}, "validity_period"),
    ({"callback_url": "not a url"}, "callback_url"),
    ({"callback_url": "http://127.0.0.1:abc/cb"}, "callback_url"),
    ({"callback_url": "http://127.0.0.1:99999/cb"}, "callback_url"),
    ({"callback_url": " http://example.com/cb"}, "callback_url"),
    ({"destination_addr": "38050123456²"}, "destination_addr"),
    (
        {"destination_addr": "".join(chr(0xFF10 + int(d)) for d in "380501234567")},
        "destination_addr",
    ),
    ({"message_type": "¹⁰⁶"}, "message_type"),
    ({"validity_period": "9" * 5000}, "validity_period"),
    ({"text_sms": "é" * 161}, "text_sms"),
    ({"text_sms": "{" * 81}, "text_sms"),
    ({"text_sms": "x" * 161}, "text_sms"),
    ({"text_sms": "ю" * 71}, "text_sms"),
]
INVALID_PROMO = [
    ({"image": None}, "image"),
    ({"image": "ftp://cdn.example.com/a.png"}, "image"),
    ({"button_caption": "x" * 31}, "button_caption"),
    ({"button_action": ""}, "button_action"),
]


class TestValidation:
    @pytest.mark.parametrize(
        ("change", "field"),
        [*((c, f) for c, f in INVALID)],
        ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID)],
    )
    async def test_documented_error_body(
        self, http: httpx.AsyncClient, change: dict[str, Any], field: str
    ) -> None:
        """Every refused field is named: "Invalid Parameter: <field>", code 1, 400."""
        response = await send(http, {**VALID, **change})

        assert 400 == response.status_code
        assert {
            "name": f"Invalid Parameter: {field}",
            "message": "Empty parameter or parameter validation error",
            "code": 1,
            "status": 400,
        } == response.json()

    @pytest.mark.parametrize(
        ("change", "field"), INVALID_PROMO, ids=[f for _, f in INVALID_PROMO]
    )
    async def test_image_type_rules(
        self, http: httpx.AsyncClient, change: dict[str, Any], field: str
    ) -> None:
        """Types 108/208 need a valid image and button."""
        response = await send(http, {**PROMO, **change})

        assert f"Invalid Parameter: {field}" == response.json()["name"]

    @pytest.mark.parametrize(
        ("payload", "note"),
        [
            ({**PROMO, "image": "https://example.com/img?id=5"}, "image: "),
            ({**PROMO, "image": "https://cdn.example.com/a.gif"}, "image: "),
            ({**VALID, "source_type": 1, "text_sms": "hi"}, "text_sms: "),
        ],
        ids=["image-without-suffix", "gif", "text_sms-promotional"],
    )
    async def test_what_the_docs_do_not_forbid_is_accepted_with_a_note(
        self,
        http: httpx.AsyncClient,
        server: SandboxServer,
        payload: dict[str, Any],
        note: str,
    ) -> None:
        """The documentation is vague here: accepted, and the doubt recorded."""
        response = await send(http, payload)

        assert 200 == response.status_code
        [record] = server.sandbox.requests()
        assert 1 == len(record.notes)
        assert record.notes[0].startswith(note)

    @pytest.mark.parametrize(
        "text_sms", ["é£" * 80, "€{" * 40, "ю" * 70], ids=["gsm", "extended", "ucs2"]
    )
    async def test_one_sms_is_accepted(
        self, http: httpx.AsyncClient, text_sms: str
    ) -> None:
        """160 GSM-7 septets (an extension character is two), or 70 in UCS-2."""
        assert 200 == (await send(http, {**VALID, "text_sms": text_sms})).status_code

    async def test_a_clean_request_has_no_notes(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        assert 200 == (await send(http, PROMO)).status_code

        assert [()] == [record.notes for record in server.sandbox.requests()]

    async def test_missing_fields(self, http: httpx.AsyncClient) -> None:
        """A body without the required fields names the first one missing."""
        response = await send(http, {})

        assert "Invalid Parameter: source_addr" == response.json()["name"]

    async def test_non_json_body(self, http: httpx.AsyncClient) -> None:
        """A body that is not JSON gets Yii2's 400 Bad Request."""
        response = await http.post(
            "/send-viber",
            content=b"{not json",
            headers={**auth(), "Content-Type": "application/json"},
        )

        assert 400 == response.status_code
        assert "Bad Request" == response.json()["name"]

    @pytest.mark.parametrize(
        "vendor_quirks",
        [
            # Python SDK: null for every unset optional field.
            {
                "image": None,
                "button_caption": None,
                "button_action": None,
                "callback_url": None,
                "validity_period": None,
            },
            # Go SDK: empty strings and a zero TTL.
            {
                "image": "",
                "button_caption": "",
                "button_action": "",
                "callback_url": "",
                "validity_period": 0,
            },
            # Java SDK: enums as numeric strings.
            {"message_type": "106", "source_type": "2"},
            # The docs: destination_addr as a number.
            {"destination_addr": 380501234567},
        ],
        ids=["python-nulls", "go-empties", "java-strings", "docs-number"],
    )
    async def test_vendor_sdk_requests_are_accepted(
        self, http: httpx.AsyncClient, vendor_quirks: dict[str, Any]
    ) -> None:
        """Whatever the vendor SDKs send is accepted, as the real API evidently does."""
        response = await send(http, {**VALID, **vendor_quirks})

        assert 200 == response.status_code, response.text

    @pytest.mark.viber_sandbox(errors_with_http_200=True)
    async def test_errors_with_http_200_mode(self, http: httpx.AsyncClient) -> None:
        """The mode the vendor SDKs assume: error bodies with HTTP 200."""
        invalid = await send(http, {**VALID, "text": ""})
        unauthorized = await send(http, VALID, headers=auth("nope"))

        assert (200, 1) == (invalid.status_code, invalid.json()["code"])
        assert (200, 401) == (unauthorized.status_code, unauthorized.json()["status"])


class TestStatusEndpoint:
    async def test_lookup(self, http: httpx.AsyncClient) -> None:
        """receive-viber answers {message_id, status} for a known message."""
        message_id = (await send(http, VALID)).json()["message_id"]

        response = await http.post(
            "/receive-viber", json={"message_id": str(message_id)}, headers=auth()
        )

        assert {"message_id": message_id, "status": 5} == response.json()

    @pytest.mark.parametrize("body", [{"message_id": 999999}, {"message_id": "x"}, {}])
    async def test_unknown_ids(
        self, http: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        """Unknown or malformed IDs are an invalid message_id."""
        response = await http.post("/receive-viber", json=body, headers=auth())

        assert "Invalid Parameter: message_id" == response.json()["name"]

    @pytest.mark.viber_sandbox(status_retention=100)
    async def test_only_recent_messages(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """Statuses are kept for the retention period (5 days by default)."""
        message_id = (await send(http, VALID)).json()["message_id"]
        server.sandbox.advance(101)

        response = await http.post(
            "/receive-viber", json={"message_id": message_id}, headers=auth()
        )

        assert 400 == response.status_code


class TestRateLimit:
    @pytest.mark.viber_sandbox(rate_limit=2, burst=5, retry_after_header=True)
    async def test_burst_then_429_with_documented_body(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """The bucket allows *burst* at once, then answers the documented 429."""
        responses = [await send(http, VALID) for _ in range(8)]

        statuses = [r.status_code for r in responses]
        assert 5 <= statuses.count(200) <= 6
        limited = next(r for r in responses if r.status_code == 429)
        assert {
            "name": "Too Many Requests",
            "message": "Rate limit exceeded",
            "code": 0,
            "status": 429,
        } == limited.json()
        assert "1" == limited.headers["retry-after"]
        assert statuses.count(429) == server.sandbox.stats.rate_limited

    @pytest.mark.viber_sandbox(rate_limit=10, burst=3, rate_limit_headers="full-reset")
    async def test_full_reset_headers(self, http: httpx.AsyncClient) -> None:
        """Full-reset: Limit is the bucket size; Remaining counts down; Reset in s.

        Every dialect, Yii2's (the default) included: test_sandbox_ratelimit.py.
        """
        first = await send(http, VALID)
        second = await send(http, VALID)

        assert "3" == first.headers["x-rate-limit-limit"]
        assert "2" == first.headers["x-rate-limit-remaining"]
        assert "1" == second.headers["x-rate-limit-remaining"]
        assert second.headers["x-rate-limit-reset"].isdigit()

    @pytest.mark.viber_sandbox(rate_limit=1, burst=1, extra_access_keys=("other",))
    async def test_limits_are_per_key(self, http: httpx.AsyncClient) -> None:
        """Each key has its own bucket."""
        assert 200 == (await send(http, VALID)).status_code
        assert 429 == (await send(http, VALID)).status_code
        assert 200 == (await send(http, VALID, headers=auth("other"))).status_code


class TestFaults:
    @pytest.mark.viber_sandbox(fault_500=1.0)
    async def test_500(self, http: httpx.AsyncClient, server: SandboxServer) -> None:
        """A 500 with the documented body; the message is not accepted."""
        response = await send(http, VALID)

        assert (500, 2) == (response.status_code, response.json()["code"])
        assert 0 == server.sandbox.stats.accepted

    @pytest.mark.viber_sandbox(fault_502_html=1.0)
    async def test_html_502(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """A gateway's HTML page; the message is not accepted."""
        response = await send(http, VALID)

        assert 502 == response.status_code
        assert response.headers["content-type"].startswith("text/html")
        assert "<h1>502 Bad Gateway</h1>" in response.text
        assert 0 == server.sandbox.stats.accepted

    @pytest.mark.viber_sandbox(fault_disconnect_before=1.0)
    async def test_disconnect_before_acceptance(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """The connection breaks without an answer; nothing was accepted."""
        with pytest.raises(httpx.RemoteProtocolError):
            await send(http, VALID)

        assert 0 == server.sandbox.stats.accepted
        assert {"fault_disconnect_before": 1} == server.sandbox.stats.faults

    @pytest.mark.viber_sandbox(fault_disconnect_after=1.0)
    async def test_disconnect_after_acceptance(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """The ambiguous case: the message is accepted, the answer never comes."""
        with pytest.raises(httpx.RemoteProtocolError):
            await send(http, VALID)

        assert 1 == server.sandbox.stats.accepted
        assert [None] == [r.http_status for r in server.sandbox.requests()]

    @pytest.mark.viber_sandbox(fault_truncated_body=1.0)
    async def test_truncated_body(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """Accepted, then the answer is cut mid-body."""
        with pytest.raises(httpx.RemoteProtocolError):
            await send(http, VALID)

        assert 1 == server.sandbox.stats.accepted

    @pytest.mark.viber_sandbox(latency=0.2)
    async def test_latency(self, http: httpx.AsyncClient) -> None:
        """Answers are delayed by the configured latency."""
        start = time.monotonic()
        await send(http, VALID)

        assert 0.2 <= time.monotonic() - start < 2.0

    @pytest.mark.viber_sandbox(latency_spike_probability=1.0, latency_spike=0.5)
    async def test_latency_spike_provokes_read_timeouts(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """A spike longer than the client's read timeout: accepted, but timed out."""
        with pytest.raises(httpx.ReadTimeout):
            await send(http, VALID, timeout=httpx.Timeout(5, read=0.1))

        assert 1 == server.sandbox.stats.latency_spikes
        assert 1 == server.sandbox.stats.accepted

    @pytest.mark.viber_sandbox(balance=2)
    async def test_balance_runs_out(self, http: httpx.AsyncClient) -> None:
        """After *balance* messages, 402 with code 3."""
        statuses = [(await send(http, VALID)).status_code for _ in range(3)]
        last = await send(http, VALID)

        assert [200, 200, 402] == statuses
        assert {
            "name": "Topup balance is required",
            "message": "User balance is empty",
            "code": 3,
            "status": 402,
        } == last.json()

    @pytest.mark.viber_sandbox(fault_500=0.3, fault_disconnect_after=0.2, seed=7)
    async def test_faults_follow_their_probabilities(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """Over many requests the injected mix matches the configured one."""
        for _ in range(300):
            with contextlib.suppress(httpx.RemoteProtocolError):
                await send(http, VALID)

        faults = server.sandbox.stats.faults
        assert 60 <= faults["fault_500"] <= 120
        assert 35 <= faults["fault_disconnect_after"] <= 85
        assert 300 - faults["fault_500"] == server.sandbox.stats.accepted


class TestDuplicates:
    async def test_same_receiver_and_text_twice_is_counted(
        self, http: httpx.AsyncClient, server: SandboxServer
    ) -> None:
        """The sandbox counts (receiver, text) pairs accepted more than once."""
        await send(http, VALID)
        await send(http, VALID)
        await send(http, {**VALID, "text": "other"})

        assert 1 == server.sandbox.stats.duplicates


def test_config_validation() -> None:
    """Nonsense knobs fail when built."""
    for bad in (
        {"fault_500": 1.5},
        {"burst": 0},
        {"time_scale": 0},
        {"latency": -1},
        {"fault_500": 0.6, "fault_502_html": 0.6},
    ):
        with pytest.raises(ValueError):
            SandboxConfig(**bad)


def test_requests_are_recorded(server: SandboxServer) -> None:
    """Every request is recorded with its outcome (sync client works too)."""
    with httpx.Client(base_url=server.base_url) as client:
        client.post("/send-viber", json=VALID, headers=auth())
        client.post("/send-viber", json={}, headers=auth())

    records = server.sandbox.requests()
    assert ["accepted", "invalid"] == [r.outcome for r in records]
    assert VALID == records[0].payload
    assert json.loads(json.dumps(server.sandbox.state_json()))


@pytest.fixture
def fresh_server() -> Iterator[SandboxServer]:
    from decisiontelecom_viber.sandbox import serve_sandbox

    with serve_sandbox(SandboxConfig(access_key="k2")) as server:
        yield server


def test_serve_sandbox_sync_form(fresh_server: SandboxServer) -> None:
    """The sync context manager serves on a free port; base_url ends in /v1/api."""
    assert fresh_server.base_url.endswith("/v1/api")
    with httpx.Client() as client:
        response = client.post(
            f"{fresh_server.base_url}/send-viber", json=VALID, headers=auth("k2")
        )
    assert 200 == response.status_code


def test_the_sandbox_does_not_use_the_sdks_validators() -> None:
    """Its request rules are its own (from the spec): an SDK validation bug
    must show up against the sandbox, not be copied into it. (The enums are
    shared: they are the API's numbers, not rules; so are the ASGI types,
    which are plumbing.)"""
    import ast
    from pathlib import Path

    import decisiontelecom_viber.sandbox as sandbox_package

    allowed = {"_asgi", "_enums", "_public"}
    imported = set()
    for path in Path(sandbox_package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                imported.add(node.module)
            if (
                isinstance(node, ast.ImportFrom)
                and node.module is not None
                and node.module.startswith("decisiontelecom_viber._")
            ):
                imported.add(node.module.removeprefix("decisiontelecom_viber."))

    assert imported <= allowed, imported - allowed
