"""Real HTTP over loopback against a small scripted ASGI app served by uvicorn."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from decisiontelecom_viber import (
    APIConnectionError,
    AsyncViberClient,
    InvalidParameterError,
    MessageStatus,
    OutcomeUnknownError,
    RetryPolicy,
    ServerError,
    ViberMessage,
)

from .helpers import ACCESS_KEY, DOCUMENTED_ERRORS, FakeClock
from .servers import serve_in_thread, unused_port


pytestmark = pytest.mark.integration


class ScriptedAPI:
    """Answers sends by the scenario named in the message text."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        payload = json.loads(body)
        if scope["path"].endswith("/receive-viber"):
            await self.reply(
                send, 200, {"message_id": payload["message_id"], "status": 6}
            )
            return
        scenario = payload["text"]
        self.requests[scenario] += 1
        count = self.requests[scenario]
        if scenario == "ok":
            await self.reply(send, 200, {"message_id": 1000 + count})
        elif scenario == "invalid":
            await self.reply(send, 400, DOCUMENTED_ERRORS["invalid_parameter"])
        elif scenario == "limited-once":
            if count == 1:
                await self.reply(
                    send, 429, DOCUMENTED_ERRORS["rate_limit"], {"retry-after": "2"}
                )
            else:
                await self.reply(send, 200, {"message_id": 7})
        elif scenario == "html-502":
            await self.raw(
                send, 502, b"<html><h1>502 Bad Gateway</h1></html>", b"text/html"
            )
        elif scenario == "broken-body":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"100"),
                    ],
                }
            )
            await send(
                {"type": "http.response.body", "body": b'{"message_', "more_body": True}
            )
            # Returning now makes uvicorn drop the connection mid-body.
        else:
            raise AssertionError(scenario)

    async def reply(
        self,
        send: Any,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await self.raw(
            send, status, json.dumps(payload).encode(), b"application/json", extra
        )

    async def raw(
        self,
        send: Any,
        status: int,
        body: bytes,
        content_type: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [(b"content-type", content_type), *(extra or [])]
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedAPI, str]]:
    app = ScriptedAPI()
    with serve_in_thread(app) as root:
        yield app, f"{root}/v1/api"


@pytest.fixture
def live(
    scripted: tuple[ScriptedAPI, str], make_client: Callable[..., AsyncViberClient]
) -> tuple[ScriptedAPI, AsyncViberClient]:
    app, base_url = scripted
    app.requests.clear()
    return app, make_client(base_url=base_url)


def text(scenario: str) -> ViberMessage:
    return ViberMessage.transactional(
        sender="Acme", receiver="380501234567", text=scenario
    )


async def test_success(live: tuple[ScriptedAPI, AsyncViberClient]) -> None:
    """A send and a status lookup over real HTTP."""
    _, client = live

    assert 1001 == await client.send_message(text("ok"))
    assert MessageStatus.SEEN == (await client.get_message_status(1001)).status


async def test_api_error(live: tuple[ScriptedAPI, AsyncViberClient]) -> None:
    """A real 400 with the documented body."""
    app, client = live

    with pytest.raises(InvalidParameterError) as info:
        await client.send_message(text("invalid"))

    assert "source_addr" == info.value.param
    assert 1 == app.requests["invalid"]


async def test_429_with_retry_after(
    live: tuple[ScriptedAPI, AsyncViberClient], clock: FakeClock
) -> None:
    """A real 429 with Retry-After: waited out (on the fake clock), then retried."""
    app, client = live

    assert 7 == await client.send_message(text("limited-once"))
    assert 2 == app.requests["limited-once"]
    assert 2.0 <= clock.sleeps[0] <= 2.5


async def test_html_502_is_a_server_error(
    live: tuple[ScriptedAPI, AsyncViberClient], clock: FakeClock
) -> None:
    """A proxy's HTML page is classified by status and retried up to the limit."""
    app, client = live

    with pytest.raises(ServerError) as info:
        await client.send_message(text("html-502"))

    assert 502 == info.value.http_status
    assert "502 Bad Gateway" in info.value.body
    assert 5 == app.requests["html-502"]


async def test_broken_body_is_an_unknown_outcome_after_one_request(
    live: tuple[ScriptedAPI, AsyncViberClient],
) -> None:
    """A response cut mid-body: OutcomeUnknownError, and exactly one request."""
    app, client = live

    with pytest.raises(OutcomeUnknownError):
        await client.send_message(text("broken-body"))

    assert 1 == app.requests["broken-body"]


async def test_connection_refused(
    make_client: Callable[..., AsyncViberClient], clock: FakeClock
) -> None:
    """Nothing listening: APIConnectionError after every attempt was tried."""
    client = make_client(
        base_url=f"http://127.0.0.1:{unused_port()}/v1/api",
        retry=RetryPolicy(attempts=3),
    )

    with pytest.raises(APIConnectionError):
        await client.send_message(text("ok"))

    assert 2 == len(clock.sleeps)


async def test_real_clock_client_without_fake(
    scripted: tuple[ScriptedAPI, str],
) -> None:
    """The default client (real clock, env-free) works end to end."""
    _, base_url = scripted
    async with AsyncViberClient(ACCESS_KEY, base_url=base_url) as client:
        results = [
            r async for r in client.send_messages([text("ok")] * 20, concurrency=5)
        ]

    assert 20 == sum(r.ok for r in results)
