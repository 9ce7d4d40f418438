"""Security: HTTPS and TLS by default; no key, phone number or text in the open.

The access key (and its base64 form, which is what travels) must not show in
any log record, whoever writes it (the SDK, httpx, httpcore, aiohttp), nor in
reprs, exceptions or tracebacks, whether the call succeeds, is retried or
fails, over the default transport or a user's `httpx.AsyncClient`. The SDK's
own log records never show a phone number or a message text, neither while
sending nor while receiving callbacks. The callback receiver refuses
forged, unsigned and oversized requests.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import traceback
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from decisiontelecom_viber import (
    AsyncViberClient,
    CallbackReceiver,
    ConfigurationError,
    IncomingMessage,
    RetryPolicy,
    StatusCallback,
    ViberError,
    ViberMessage,
    signed_callback_url,
)
from decisiontelecom_viber.sandbox import SandboxServer

from .servers import unused_port


ACCESS_KEY = "sk-live-7f3a9c1e5b2d48a6"
WRONG_KEY = "sk-live-0d9e8c7b6a5f4e3d"
PHONE = "380671234567"
OTHER_PHONE = "972512222222"
TEXT = "Your one-time code is 839104"
REPLY_TEXT = "Please call me back at home"
SECRET = "callback-secret-5f1e2d3c4b5a6978"


def forms(key: str) -> tuple[str, ...]:
    """A key as given, and base64-encoded as it travels (also curl's key: form)."""
    encoded = (base64.b64encode(raw.encode()).decode() for raw in (key, f"{key}:"))
    return (key, *encoded)


SECRETS = forms(ACCESS_KEY) + forms(WRONG_KEY)
# Loggers that could see a request, forced to DEBUG (root included).
LOGGERS = ("", "httpx", "httpcore", "aiohttp", "asyncio", "decisiontelecom_viber")
NO_FAULTS: dict[str, Any] = {
    "fault_500": 0.0,
    "fault_502_html": 0.0,
    "fault_disconnect_before": 0.0,
    "fault_disconnect_after": 0.0,
    "fault_truncated_body": 0.0,
    "latency": 0.0,
    "rate_limit": None,
}
FAULTS: list[dict[str, Any]] = [
    {"fault_500": 1.0},
    {"fault_502_html": 1.0},
    {"fault_disconnect_before": 1.0},
    {"fault_disconnect_after": 1.0},
    {"fault_truncated_body": 1.0},
    {"latency": 0.5},  # past the read timeout
    {"rate_limit": 0.001, "burst": 1},  # the bucket's one token, then 429s
]
MESSAGE = ViberMessage.transactional(sender="Acme", receiver=PHONE, text=TEXT)


def assert_absent(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def shown(error: BaseException) -> str:
    """Everything an error shows: str, repr, attributes, traceback, causes."""
    parts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(getattr(current, "__dict__", {}))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record, of every logger that could see a request, at DEBUG."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def logged(caplog: pytest.LogCaptureFixture, prefix: str = "") -> str:
    """The records (formatted, tracebacks included, and their raw fields)."""
    handler = caplog.handler
    return "\n".join(
        handler.format(record) + repr(record.__dict__)
        for record in caplog.records
        if record.name.startswith(prefix)
    )


# -- HTTPS and TLS ----------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://web.it-decision.com/v1/api",
        "http://10.0.0.5:8080/v1/api",
        "http://0.0.0.0/v1/api",
        "http://127.0.0.1.nip.io/v1/api",
        "http://localhost.example.com/v1/api",
        "http://127.0.0.1@example.com/v1/api",
        "http://example.com#@127.0.0.1/v1/api",
    ],
)
def test_plain_http_to_a_remote_host_is_refused(base_url: str) -> None:
    """The key would travel in clear text: refused unless explicitly allowed."""
    with pytest.raises(ConfigurationError, match="https://"):
        AsyncViberClient(ACCESS_KEY, base_url=base_url)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://web.it-decision.com/v1/api",
        "https://web.it-decision.com/v1/api",
        "http://127.0.0.1:8765/v1/api",
        "http://127.8.9.10/v1/api",
        "http://localhost/v1/api",
        "http://sandbox.localhost/v1/api",
        "http://[::1]:8765/v1/api",
    ],
)
async def test_https_loopback_or_explicit_opt_in_is_allowed(base_url: str) -> None:
    """https anywhere; http on loopback, or anywhere with allow_insecure_http."""
    remote_http = base_url.startswith("http://web.")

    async with AsyncViberClient(
        ACCESS_KEY, base_url=base_url, allow_insecure_http=remote_http
    ) as client:
        assert base_url == client.base_url


async def test_tls_is_verified_by_default() -> None:
    """The default transport checks the certificate chain and the host name."""
    async with AsyncViberClient(ACCESS_KEY) as client:
        context = client._exchange._transport.ssl_context  # type: ignore[attr-defined]

    assert ssl.CERT_REQUIRED == context.verify_mode
    assert context.check_hostname


async def test_turning_tls_verification_off_is_explicit() -> None:
    """verify=False is the only way to skip verification (for tests only)."""
    async with AsyncViberClient(ACCESS_KEY, verify=False) as client:
        context = client._exchange._transport.ssl_context  # type: ignore[attr-defined]

    assert ssl.CERT_NONE == context.verify_mode


# -- the access key ---------------------------------------------------------------


@pytest.fixture(params=["default-transport", "httpx-client"])
async def make_client(
    request: pytest.FixtureRequest, viber_sandbox: SandboxServer
) -> AsyncIterator[Any]:
    """Clients aimed at the sandbox, through the SDK's transport or httpx's."""
    made: list[AsyncViberClient] = []
    http = httpx.AsyncClient() if request.param == "httpx-client" else None

    def make(access_key: str = ACCESS_KEY, **kwargs: Any) -> AsyncViberClient:
        kwargs.setdefault("base_url", viber_sandbox.base_url)
        client = AsyncViberClient(
            access_key,
            timeout=httpx.Timeout(5.0, read=0.25),
            retry=RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.01),
            rate_limit=None,
            http_client=http,
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
    if http is not None:
        await http.aclose()


async def send_through_everything(
    client: AsyncViberClient, sandbox: Any
) -> list[BaseException]:
    """Succeed, retry and fail every way the sandbox can; return the errors."""
    errors: list[BaseException] = []

    async def attempt(call: Any) -> Any:
        try:
            return await call
        except ViberError as error:
            errors.append(error)
            return None

    message_id = await client.send_message(MESSAGE)
    await client.get_message_status(message_id)
    for faults in FAULTS:
        sandbox.configure(**{**NO_FAULTS, **faults})
        await attempt(client.send_message(MESSAGE))
        await attempt(client.send_message(MESSAGE))
    sandbox.configure(**{**NO_FAULTS, "fault_500": 0.3, "fault_truncated_body": 0.3})
    items: list[Any] = [MESSAGE] * 8 + [{"sender": "Acme", "receiver": PHONE}]
    async with client.send_messages(items) as results:
        errors += [result.error async for result in results if result.error]
    sandbox.configure(**NO_FAULTS)
    await attempt(client.get_message_status(10**9))
    return errors


@pytest.mark.viber_sandbox(access_key=ACCESS_KEY, seed=5)
async def test_access_key_never_logged_shown_or_raised(
    make_client: Any, viber_sandbox: SandboxServer, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Successes, retries and every failure, all loggers at DEBUG: no key anywhere."""
    client = make_client()
    errors = await send_through_everything(client, viber_sandbox.sandbox)
    wrong = make_client(WRONG_KEY)
    unreachable = make_client(base_url=f"http://127.0.0.1:{unused_port()}/v1/api")
    for other in (wrong, unreachable):
        try:
            await other.send_message(MESSAGE)
        except ViberError as error:
            errors.append(error)

    kinds = {type(error).__name__ for error in errors}
    assert {
        "AuthenticationError",
        "APIConnectionError",
        "InvalidParameterError",
        "OutcomeUnknownError",
        "RateLimitError",
        "ServerError",
        "ValidationError",
    } <= kinds
    assert any(r.levelno == logging.DEBUG for r in debug_logs.records)
    assert_absent(logged(debug_logs), *SECRETS)
    for caught in errors:
        assert_absent(shown(caught), *SECRETS)
    for each in (client, wrong, unreachable):
        assert_absent(f"{each!r} {each} {each.metrics!r}", *SECRETS)


@pytest.mark.viber_sandbox(access_key=ACCESS_KEY, seed=6)
async def test_sdk_logs_never_show_phone_numbers_or_texts(
    make_client: Any, viber_sandbox: SandboxServer, debug_logs: pytest.LogCaptureFixture
) -> None:
    """The SDK's own records, at DEBUG, through sends, retries and failures."""
    client = make_client()

    await send_through_everything(client, viber_sandbox.sandbox)

    assert any(r.name.startswith("decisiontelecom_viber") for r in debug_logs.records)
    assert_absent(logged(debug_logs, "decisiontelecom_viber"), PHONE, TEXT)


# -- callbacks ------------------------------------------------------------------------


async def post(app: Any, url: str, body: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://app") as http:
        return await http.post(url, content=body)


REPLY = {
    "message_token": 44444444444444,
    "phone_number": OTHER_PHONE,
    "time": 2121212121,
    "message": {"text": REPLY_TEXT, "tracking_data": "tracking_id:100035"},
}


async def test_receiving_callbacks_never_logs_phone_numbers_or_texts(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Replies handled, failing, repeated and malformed: masked in the SDK's logs."""
    calls: list[Any] = []

    async def on_message(event: IncomingMessage) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("the handler failed")

    receiver = CallbackReceiver(on_message=on_message, secret=SECRET, deduplicate=8)
    url = receiver.sign_url("https://app/viber/callbacks", reference="order-1")
    body = json.dumps(REPLY).encode()
    malformed = json.dumps({**REPLY, "time": "at noon"}).encode()

    statuses = [
        (await post(receiver, url, payload)).status_code
        for payload in (body, body, body, malformed)
    ]
    statuses.append((await post(receiver, url.split("?")[0], body)).status_code)

    assert [500, 200, 200, 400, 403] == statuses
    assert 2 == len(calls)
    assert any(r.name.startswith("decisiontelecom_viber") for r in debug_logs.records)
    assert_absent(logged(debug_logs, "decisiontelecom_viber"), OTHER_PHONE, REPLY_TEXT)


async def test_receiver_refuses_forged_unsigned_and_oversized_requests() -> None:
    """Only a request signed with the secret, of an acceptable size, is handled."""
    handled: list[StatusCallback] = []

    async def on_status(event: StatusCallback) -> None:
        handled.append(event)

    receiver = CallbackReceiver(on_status=on_status, secret=SECRET, max_body_bytes=512)
    base = "https://app/viber/callbacks"
    signed = receiver.sign_url(base, reference="order-1")
    forged = signed_callback_url(base, "not-the-secret", reference="order-1")
    replayed = signed.replace("ref=order-1", "ref=order-2")
    status = json.dumps({"message_id": 1, "status": 1}).encode()
    padded = json.dumps({"message_id": 1, "status": 1, "pad": "x" * 600}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 100

    answers = {
        "unsigned": await post(receiver, base, status),
        "forged": await post(receiver, forged, status),
        "other reference": await post(receiver, replayed, status),
        "oversized": await post(receiver, signed, padded),
        "oversized, streamed": await post(receiver, signed, chunks()),
        "genuine": await post(receiver, signed, status),
    }

    assert {
        "unsigned": 403,
        "forged": 403,
        "other reference": 403,
        "oversized": 413,
        "oversized, streamed": 413,
        "genuine": 200,
    } == {name: answer.status_code for name, answer in answers.items()}
    assert 1 == len(handled)
    assert "order-1" == handled[0].reference
