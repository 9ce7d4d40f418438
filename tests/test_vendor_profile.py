"""The sandbox's vendor profile, and the vendor's own Python SDK against it.

Every test of the vendor's SDKs (Python, Node, Java) mocks API errors as HTTP
200 with the error body, a bad key as a real 401 and a 500 as a non-API
error: ``SandboxConfig(profile="vendor")`` answers that way. The vendor's
SDK (``decisiontelecom`` on PyPI, a thin ``requests`` wrapper with the real
API's URL built in) is pointed at the sandbox by rewriting its requests'
URL, and must see what its own tests encode.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import decisiontelecom.viber as vendor
import httpx
import pytest
import requests

from decisiontelecom_viber import (
    AsyncViberClient,
    InsufficientBalanceError,
    InvalidParameterError,
    RateLimit,
    SendOutcome,
    ViberMessage,
)
from decisiontelecom_viber.sandbox import SandboxConfig, SandboxServer, serve_sandbox


pytestmark = pytest.mark.integration

VENDOR_URL = "https://web.it-decision.com/v1/api"
VALID = {
    "source_addr": "Acme",
    "destination_addr": "380501234567",
    "message_type": 106,
    "text": "hi",
    "source_type": 2,
}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with serve_sandbox(SandboxConfig(profile="vendor")) as running:
        yield running


@pytest.fixture
def sandbox(server: SandboxServer) -> Iterator[SandboxServer]:
    server.sandbox.reset(SandboxConfig(profile="vendor"))
    yield server
    server.sandbox.reset(SandboxConfig(profile="vendor"))


def post(server: SandboxServer, path: str, body: Any, key: str | None = None) -> Any:
    return httpx.post(
        f"{server.base_url}/{path}",
        json=body,
        auth=(key or server.access_key, ""),
    )


class TestTheProfile:
    """What each kind of error is answered with."""

    def test_invalid_parameter_in_http_200(self, sandbox: SandboxServer) -> None:
        response = post(sandbox, "send-viber", {**VALID, "source_addr": ""})

        assert 200 == response.status_code
        body = response.json()
        assert ("Invalid Parameter: source_addr", 1, 400) == (
            body["name"],
            body["code"],
            body["status"],
        )

    def test_a_bad_key_is_a_real_401(self, sandbox: SandboxServer) -> None:
        response = httpx.post(
            f"{sandbox.base_url}/send-viber",
            json=VALID,
            headers={"Authorization": "Basic d3Jvbmc="},
        )

        assert 401 == response.status_code

    def test_server_faults_are_real_5xx(self, sandbox: SandboxServer) -> None:
        sandbox.sandbox.reset(SandboxConfig(profile="vendor", fault_500=1.0))

        assert 500 == post(sandbox, "send-viber", VALID).status_code

    def test_rate_limit_and_balance_in_http_200(self, sandbox: SandboxServer) -> None:
        sandbox.sandbox.reset(
            SandboxConfig(profile="vendor", rate_limit=1, burst=1, balance=2)
        )
        answers = [post(sandbox, "send-viber", VALID) for _ in range(2)]

        assert [200, 200] == [answer.status_code for answer in answers]
        assert 429 == answers[1].json()["status"]

        sandbox.sandbox.reset(SandboxConfig(profile="vendor", balance=0))
        empty = post(sandbox, "send-viber", VALID)
        assert (200, 3) == (empty.status_code, empty.json()["code"])

    def test_records_say_the_status_sent(self, sandbox: SandboxServer) -> None:
        sandbox.sandbox.reset(SandboxConfig(profile="vendor", rate_limit=1, burst=1))
        post(sandbox, "send-viber", VALID)
        post(sandbox, "send-viber", VALID)
        post(sandbox, "send-viber", {**VALID, "source_addr": ""})

        assert [200, 200, 200] == [r.http_status for r in sandbox.sandbox.requests()]

    def test_the_default_profile_is_unchanged(self, sandbox: SandboxServer) -> None:
        sandbox.sandbox.reset(SandboxConfig())

        assert (
            400 == post(sandbox, "send-viber", {**VALID, "source_addr": ""}).status_code
        )


@pytest.fixture
def vendor_sdk(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> vendor.ViberClient:
    """The vendor's client, its requests sent to the sandbox instead."""
    real_post = requests.post

    def to_sandbox(url: str, **kwargs: Any) -> requests.Response:
        return real_post(
            url.replace(VENDOR_URL, sandbox.base_url), timeout=10, **kwargs
        )

    monkeypatch.setattr(vendor.requests, "post", to_sandbox)
    return vendor.ViberClient(sandbox.access_key)


def vendor_message(sender: str = "Acme", receiver: str = "380501234567") -> Any:
    return vendor.ViberMessage(
        sender,
        receiver,
        vendor.ViberMessageType.TextOnly,
        "hi",
        vendor.ViberMessageSourceType.Transactional,
    )


class TestTheVendorSDK:
    """The expectations the vendor's own tests encode."""

    def test_an_empty_message_is_its_viber_error(
        self, vendor_sdk: vendor.ViberClient
    ) -> None:
        with pytest.raises(vendor.ViberError) as caught:
            vendor_sdk.send_message(vendor_message(sender="", receiver=""))

        error = caught.value
        assert ("Invalid Parameter: source_addr", 1, 400) == (
            error.name,
            error.code,
            error.status,
        )

    def test_a_valid_message_gets_an_id_whose_status_parses(
        self, vendor_sdk: vendor.ViberClient, sandbox: SandboxServer
    ) -> None:
        message_id = vendor_sdk.send_message(vendor_message())
        receipt = vendor_sdk.get_message_status(message_id)

        assert isinstance(message_id, int)
        assert message_id == receipt.message_id
        assert isinstance(receipt.status, vendor.ViberMessageStatus)
        assert "hi" == sandbox.sandbox.message(message_id).text

    def test_a_bad_key_is_an_http_401(
        self, sandbox: SandboxServer, monkeypatch: Any
    ) -> None:
        real_post = requests.post
        monkeypatch.setattr(
            vendor.requests,
            "post",
            lambda url, **kw: real_post(
                url.replace(VENDOR_URL, sandbox.base_url), **kw
            ),
        )

        with pytest.raises(requests.HTTPError) as caught:
            vendor.ViberClient("wrong key").send_message(vendor_message())

        response = caught.value.response
        assert response is not None
        assert 401 == response.status_code


class TestOurSDK:
    """This SDK reads the vendor profile's errors-in-200 for what they are."""

    async def test_errors_in_200(self, sandbox: SandboxServer) -> None:
        async with AsyncViberClient(
            sandbox.access_key, base_url=sandbox.base_url, retry=None
        ) as client:
            with pytest.raises(InvalidParameterError) as invalid:
                await client.get_message_status(987_654_321)  # never sent
            sandbox.sandbox.reset(SandboxConfig(profile="vendor", balance=0))
            with pytest.raises(InsufficientBalanceError):
                await client.send_message(
                    ViberMessage.transactional(
                        sender="Acme", receiver="380501234567", text="hi"
                    )
                )

        assert "message_id" in str(invalid.value)

    async def test_429s_in_200_are_retried_and_paced(
        self, sandbox: SandboxServer
    ) -> None:
        sandbox.sandbox.reset(SandboxConfig(profile="vendor", rate_limit=50, burst=5))
        messages = [
            ViberMessage.transactional(
                sender="Acme", receiver="380501234567", text=f"{n}"
            )
            for n in range(60)
        ]

        async with AsyncViberClient(
            sandbox.access_key, base_url=sandbox.base_url, rate_limit=RateLimit()
        ) as client:
            results = [r async for r in client.send_messages(messages)]

        assert 60 * [SendOutcome.SENT] == [r.outcome for r in results]
        assert 60 == sandbox.sandbox.stats.accepted
        assert 0 == sandbox.sandbox.stats.duplicates
