"""HTTPS for real: the sandbox under uvicorn with a certificate from a test CA.

Production traffic is HTTPS with the certificate verified. Here a CA made
for the test (trustme) signs the sandbox's certificate; the SDK trusts it
through ``verify=`` (a CA bundle's path, or an `ssl.SSLContext`), and
refuses a certificate of an unknown CA or for another host name — before a
byte of the request leaves (`APIConnectionError`: certainly not sent).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from decisiontelecom_viber import (
    APIConnectionError,
    AsyncViberClient,
    ConfigurationError,
    RateLimit,
    SendOutcome,
    ViberMessage,
)
from decisiontelecom_viber.sandbox import SandboxServer, serve_sandbox


pytestmark = pytest.mark.integration

MESSAGE = ViberMessage.transactional(sender="Acme", receiver="380501234567", text="hi")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_bundle(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def serve_with(ca: trustme.CA, directory: Path, *names: str) -> SandboxServer:
    pem = directory / "server.pem"
    ca.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(str(pem))
    return serve_sandbox(ssl_certfile=str(pem))


@pytest.fixture(scope="module")
def https_sandbox(
    ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxServer]:
    with serve_with(ca, tmp_path_factory.mktemp("tls"), "127.0.0.1") as server:
        yield server


@pytest.fixture
def sandbox(https_sandbox: SandboxServer) -> SandboxServer:
    https_sandbox.sandbox.reset()
    return https_sandbox


def test_the_sandbox_serves_https(sandbox: SandboxServer) -> None:
    assert sandbox.base_url.startswith("https://127.0.0.1:")


async def test_verified_with_a_ca_bundle(
    sandbox: SandboxServer, ca_bundle: str
) -> None:
    async with AsyncViberClient(
        sandbox.access_key, base_url=sandbox.base_url, verify=ca_bundle
    ) as client:
        message_id = await client.send_message(MESSAGE)
        receipt = await client.get_message_status(message_id)

    assert message_id == receipt.message_id
    assert "hi" == sandbox.sandbox.message(message_id).text


async def test_verified_with_an_ssl_context(
    sandbox: SandboxServer, ca: trustme.CA
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)

    async with AsyncViberClient(
        sandbox.access_key,
        base_url=sandbox.base_url,
        verify=context,
        rate_limit=RateLimit(rate=500, burst=50),
    ) as client:
        results = [r async for r in client.send_messages([MESSAGE] * 50)]

    assert 50 * [SendOutcome.SENT] == [r.outcome for r in results]
    assert 50 == sandbox.sandbox.stats.accepted


async def test_an_unknown_ca_is_refused_before_sending(sandbox: SandboxServer) -> None:
    """The system's CAs do not know the test CA: nothing reaches the API."""
    async with AsyncViberClient(
        sandbox.access_key, base_url=sandbox.base_url, retry=None
    ) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.send_message(MESSAGE)
        results = [r async for r in client.send_messages([MESSAGE] * 3)]

    assert "certificate" in str(caught.value).lower()
    assert SendOutcome.FAILED == SendOutcome.of(caught.value)
    assert 3 * [SendOutcome.FAILED] == [r.outcome for r in results]
    assert 0 == sandbox.sandbox.stats.requests


async def test_a_certificate_for_another_host_is_refused(
    ca: trustme.CA, ca_bundle: str, tmp_path: Path
) -> None:
    """Signed by the trusted CA, but for example.org: refused, not sent."""
    with serve_with(ca, tmp_path, "example.org") as server:
        async with AsyncViberClient(
            server.access_key, base_url=server.base_url, verify=ca_bundle, retry=None
        ) as client:
            with pytest.raises(APIConnectionError) as caught:
                await client.send_message(MESSAGE)

        assert 0 == server.sandbox.stats.requests
    assert SendOutcome.FAILED == SendOutcome.of(caught.value)


def test_plain_http_off_loopback_is_refused() -> None:
    """The access key never travels in clear text unless the user says so."""
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        AsyncViberClient("key", base_url="http://api.example.com/v1/api")


def test_a_missing_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    """Named at construction, not as a connection error on the first send."""
    missing = str(tmp_path / "no-such-ca.pem")

    with pytest.raises(ConfigurationError, match="verify") as caught:
        AsyncViberClient(
            "key", base_url="https://api.example.com/v1/api", verify=missing
        )

    assert caught.value.__cause__ is None


@pytest.mark.parametrize("verify", [b"", "", 0, 1.5])
def test_verify_of_another_kind_is_a_configuration_error(verify: object) -> None:
    with pytest.raises(ConfigurationError, match="verify"):
        AsyncViberClient(
            "key",
            base_url="https://example.com/v1/api",
            verify=verify,  # type: ignore[arg-type]
        )


async def test_a_ca_bundle_as_a_path_object(
    sandbox: SandboxServer, ca_bundle: str
) -> None:
    async with AsyncViberClient(
        sandbox.access_key,
        base_url=sandbox.base_url,
        verify=Path(ca_bundle),  # type: ignore[arg-type]
    ) as client:
        assert await client.send_message(MESSAGE)
