"""Test helpers: constants, a fake clock, and respx wired to the default transport."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import httpx
import respx
import respx.mocks
from httpx_aiohttp.transport import map_aiohttp_exceptions


BASE_URL = "https://api.example.test/v1/api"
SEND_URL = f"{BASE_URL}/send-viber"
STATUS_URL = f"{BASE_URL}/receive-viber"
ACCESS_KEY = "s3cr3t-access-key-4242"


class AiohttpTransportMocker(respx.mocks.AbstractRequestMocker):
    """respx mocker that patches the SDK's default transport (httpx over aiohttp).

    Mocked side effects that raise aiohttp exceptions go through
    httpx-aiohttp's own exception mapping, exactly as a real failure would.
    """

    name = "httpx-aiohttp"
    targets = ["httpx_aiohttp.transport.AiohttpTransport"]
    target_methods = ["handle_async_request"]

    @classmethod
    def to_httpx_request(cls, **kwargs: Any) -> httpx.Request:
        request: httpx.Request = kwargs["request"]
        return request

    @classmethod
    async def _send_async_request(
        cls, httpx_request: httpx.Request, *, target_spec: Any, instance: Any, **kw: Any
    ) -> Any:
        with map_aiohttp_exceptions():
            # respx's AbstractRequestMocker leaves this classmethod unannotated.
            return await super()._send_async_request(  # type: ignore[no-untyped-call]
                httpx_request, target_spec=target_spec, instance=instance, **kw
            )

    @classmethod
    async def from_async_httpx_response(
        cls, httpx_response: httpx.Response, target: Any, **kwargs: Any
    ) -> httpx.Response:
        return httpx_response


class FakeClock:
    """A clock whose sleep advances virtual time at once and records the waits."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall = wall
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def waits(clock: FakeClock) -> list[float]:
    """The waits a *clock* slept, rounded to 10 ms, without the zero ones."""
    return [round(slept, 2) for slept in clock.sleeps if slept > 0.001]


def json_response(
    status: int = 200, payload: Any = None, **kwargs: Any
) -> httpx.Response:
    return httpx.Response(status, json=payload, **kwargs)


class ErrorBody(TypedDict):
    """An API error body, as the API's documentation shows it."""

    name: str
    message: str
    code: int
    status: int


DOCUMENTED_ERRORS: dict[str, ErrorBody] = {
    "rate_limit": {
        "name": "Too Many Requests",
        "message": "Rate limit exceeded",
        "code": 0,
        "status": 429,
    },
    "invalid_parameter": {
        "name": "Invalid Parameter: source_addr",
        "message": "Empty parameter or parameter validation error",
        "code": 1,
        "status": 400,
    },
    "server_error": {
        "name": "Internal server error",
        "message": (
            "The server encountered an unexpected condition which prevented it "
            "from fulfilling the request"
        ),
        "code": 2,
        "status": 500,
    },
    "balance": {
        "name": "Topup balance is required",
        "message": "User balance is empty",
        "code": 3,
        "status": 402,
    },
}


async def eventually(predicate: Any, timeout: float = 10.0) -> None:
    """Wait until *predicate()* is true: work done by another thread or process.

    This waits for real concurrent work (a server thread answering), never to
    let simulated time pass: tests drive time with fake clocks instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)
