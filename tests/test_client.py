"""AsyncViberClient against respx, wired into the default transport."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import aiohttp
import httpx
import pytest
import respx

from decisiontelecom_viber import (
    AmbiguousServerError,
    APIConnectionError,
    APIError,
    AsyncViberClient,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    GatewayTimeoutError,
    InsufficientBalanceError,
    InvalidParameterError,
    MessageStatus,
    OutcomeUnknownError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SmsStatus,
    UnexpectedResponseError,
    ValidationError,
    ViberMessage,
)

from .helpers import (
    ACCESS_KEY,
    BASE_URL,
    DOCUMENTED_ERRORS,
    SEND_URL,
    STATUS_URL,
    FakeClock,
    json_response,
    waits,
)


MakeClient = Callable[..., AsyncViberClient]


def otp(receiver: str = "380501234567") -> ViberMessage:
    return ViberMessage.transactional(
        sender="Acme", receiver=receiver, text="Your code is 1234"
    )


class TestSendMessage:
    async def test_posts_the_documented_request_and_returns_the_id(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """A send is one POST with Basic auth of the raw key and the wire JSON."""
        route = api.post("/send-viber").mock(json_response(200, {"message_id": 429}))

        message_id = await client.send_message(otp())

        assert 429 == message_id
        assert 1 == route.call_count
        request = route.calls.last.request
        token = base64.b64encode(ACCESS_KEY.encode()).decode()
        assert f"Basic {token}" == request.headers["authorization"]
        assert "application/json" == request.headers["content-type"]
        assert "application/json" == request.headers["accept"]
        assert {
            "source_addr": "Acme",
            "destination_addr": "380501234567",
            "message_type": 106,
            "text": "Your code is 1234",
            "source_type": 2,
        } == json.loads(request.content)

    async def test_accepts_a_mapping_of_field_names(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """Mappings of ViberMessage field names are validated and sent."""
        route = api.post("/send-viber").mock(json_response(200, {"message_id": 7}))

        message_id = await client.send_message(
            {
                "sender": "Acme",
                "receiver": "380501234567",
                "text": "hi",
                "message_type": 106,
                "source_type": 2,
            }
        )

        assert 7 == message_id
        assert "hi" == json.loads(route.calls.last.request.content)["text"]

    async def test_string_message_id_is_accepted(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """The vendor's Python tests mock message_id as a string; both work."""
        api.post("/send-viber").mock(
            json_response(200, {"message_id": "5024173481", "extra": True})
        )

        assert 5024173481 == await client.send_message(otp())

    async def test_invalid_message_fails_before_any_request(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """A bad mapping raises ValidationError naming the field; nothing is sent."""
        route = api.post("/send-viber").mock(json_response(200, {"message_id": 1}))

        with pytest.raises(ValidationError) as info:
            await client.send_message(
                {
                    "sender": "Acme",
                    "receiver": "380501234567",
                    "text": "x" * 1001,
                    "message_type": 106,
                    "source_type": 2,
                }
            )

        assert "text" == info.value.field
        assert 0 == route.call_count

    @pytest.mark.parametrize(
        "http_status", [200, None], ids=["http-200", "real-status"]
    )
    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("invalid_parameter", InvalidParameterError),
            ("balance", InsufficientBalanceError),
        ],
    )
    async def test_definitive_errors_are_raised_without_retry(
        self,
        api: respx.MockRouter,
        client: AsyncViberClient,
        kind: str,
        expected: type[APIError],
        http_status: int | None,
    ) -> None:
        """400 and 402 are raised at once, with HTTP 200 and with their own status."""
        body = DOCUMENTED_ERRORS[kind]
        route = api.post("/send-viber").mock(
            json_response(http_status or int(body["status"]), body)
        )

        with pytest.raises(expected) as info:
            await client.send_message(otp())

        assert 1 == route.call_count
        assert body["code"] == info.value.code
        assert body["name"] == info.value.name

    async def test_invalid_parameter_names_the_wire_field(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """InvalidParameterError.param is parsed from 'Invalid Parameter: X'."""
        api.post("/send-viber").mock(
            json_response(200, DOCUMENTED_ERRORS["invalid_parameter"])
        )

        with pytest.raises(InvalidParameterError) as info:
            await client.send_message(otp())

        assert "source_addr" == info.value.param
        assert 200 == info.value.http_status
        assert 400 == info.value.status

    @pytest.mark.parametrize("status", [401, 403])
    async def test_authentication_errors_are_not_retried(
        self, api: respx.MockRouter, client: AsyncViberClient, status: int
    ) -> None:
        """A refused key is raised at once, whatever the body."""
        route = api.post("/send-viber").mock(httpx.Response(status, text="nope"))

        with pytest.raises(AuthenticationError):
            await client.send_message(otp())

        assert 1 == route.call_count

    @pytest.mark.parametrize("http_status", [200, 429])
    async def test_rate_limit_is_retried_then_succeeds(
        self,
        api: respx.MockRouter,
        client: AsyncViberClient,
        clock: FakeClock,
        http_status: int,
    ) -> None:
        """429 (or its body with HTTP 200) is retried; Retry-After sets the wait.

        (The limiter pauses every sender for it; the retry itself goes at once.)
        """
        route = api.post("/send-viber").mock(
            side_effect=[
                json_response(
                    http_status,
                    DOCUMENTED_ERRORS["rate_limit"],
                    headers={"Retry-After": "2"},
                ),
                json_response(200, {"message_id": 11}),
            ]
        )

        assert 11 == await client.send_message(otp())
        assert 2 == route.call_count
        assert [2.0] == waits(clock)

    async def test_rate_limit_honours_yii2_reset_header(
        self, api: respx.MockRouter, client: AsyncViberClient, clock: FakeClock
    ) -> None:
        """Without Retry-After, X-Rate-Limit-Reset is only an upper bound.

        Reset 3 on a 429 is what Yii2 says for a 3-second window; tokens come
        back at the server's next whole second, so the retry goes sooner.
        """
        api.post("/send-viber").mock(
            side_effect=[
                json_response(
                    429,
                    DOCUMENTED_ERRORS["rate_limit"],
                    headers={"X-Rate-Limit-Limit": "10", "X-Rate-Limit-Reset": "3"},
                ),
                json_response(200, {"message_id": 1}),
            ]
        )

        await client.send_message(otp())

        assert 0 < sum(clock.sleeps) <= 1.0

    async def test_rate_limit_retries_give_up_after_the_attempts(
        self, api: respx.MockRouter, make_client: MakeClient, clock: FakeClock
    ) -> None:
        """After the last attempt the RateLimitError is raised, retry_after set."""
        client = make_client(retry=RetryPolicy(attempts=3))
        route = api.post("/send-viber").mock(
            json_response(
                429, DOCUMENTED_ERRORS["rate_limit"], headers={"Retry-After": "1"}
            )
        )

        with pytest.raises(RateLimitError) as info:
            await client.send_message(otp())

        assert 3 == route.call_count
        assert [1.0, 1.0] == waits(clock)
        assert 1.0 == info.value.retry_after

    @pytest.mark.parametrize(
        "response",
        [
            httpx.Response(502, text="<html><body>Bad Gateway</body></html>"),
            httpx.Response(503, text=""),
            httpx.Response(500, text="Internal Server Error"),
        ],
        ids=["html-502", "empty-503", "text-500"],
    )
    async def test_a_gateways_500_502_503_is_unknown_for_a_send(
        self, api: respx.MockRouter, client: AsyncViberClient, response: httpx.Response
    ) -> None:
        """Without the API's body, a gateway said it: the API may have the message."""
        route = api.post("/send-viber").mock(
            side_effect=[response, json_response(200, {"message_id": 5})]
        )

        with pytest.raises(AmbiguousServerError):
            await client.send_message(otp())

        assert 1 == route.call_count

    @pytest.mark.parametrize(
        "response",
        [
            json_response(500, DOCUMENTED_ERRORS["server_error"]),
            json_response(200, DOCUMENTED_ERRORS["server_error"]),
            json_response(502, {**DOCUMENTED_ERRORS["server_error"], "status": 502}),
            json_response(503, {**DOCUMENTED_ERRORS["server_error"], "status": 503}),
        ],
        ids=["500", "500-body-http-200", "502", "503"],
    )
    async def test_server_errors_are_retried(
        self,
        api: respx.MockRouter,
        client: AsyncViberClient,
        clock: FakeClock,
        response: httpx.Response,
    ) -> None:
        """The API's own 500/502/503: it did not take the message, so retried."""
        route = api.post("/send-viber").mock(
            side_effect=[response, json_response(200, {"message_id": 5})]
        )

        assert 5 == await client.send_message(otp())
        assert 2 == route.call_count
        assert 1 == len(clock.sleeps)
        assert 0.375 <= clock.sleeps[0] <= 0.5

    async def test_server_error_exhausts_attempts_with_backoff(
        self, api: respx.MockRouter, client: AsyncViberClient, clock: FakeClock
    ) -> None:
        """Five attempts by default, waits doubling from 0.5 s (minus jitter)."""
        route = api.post("/send-viber").mock(
            json_response(502, {**DOCUMENTED_ERRORS["server_error"], "status": 502})
        )

        with pytest.raises(ServerError) as info:
            await client.send_message(otp())

        assert 5 == route.call_count
        assert 502 == info.value.http_status
        for expected, slept in zip([0.5, 1.0, 2.0, 4.0], clock.sleeps, strict=True):
            assert expected * 0.75 <= slept <= expected

    async def test_gateway_timeout_on_send_is_an_unknown_outcome(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """A 504 may hide a processed send: not retried, reported as unknown."""
        route = api.post("/send-viber").mock(httpx.Response(504, text="timeout"))

        with pytest.raises(GatewayTimeoutError) as info:
            await client.send_message(otp())

        assert 1 == route.call_count
        assert isinstance(info.value, ServerError)
        assert isinstance(info.value, OutcomeUnknownError)

    @pytest.mark.parametrize(
        "side_effect",
        [
            httpx.ConnectError("refused"),
            httpx.ConnectTimeout("connect timed out"),
            httpx.PoolTimeout("pool timed out"),
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey(
                    "api.example.test", 443, True, True, None, None, None
                ),
                ConnectionRefusedError(111, "refused"),
            ),
            aiohttp.ConnectionTimeoutError("connect timed out"),
        ],
        ids=[
            "httpx-connect",
            "httpx-connect-timeout",
            "httpx-pool-timeout",
            "aiohttp-connector",
            "aiohttp-connect-timeout",
        ],
    )
    async def test_never_sent_failures_are_retried(
        self,
        api: respx.MockRouter,
        client: AsyncViberClient,
        side_effect: Exception,
    ) -> None:
        """A request that never reached the API is safe to send again."""
        route = api.post("/send-viber").mock(
            side_effect=[side_effect, json_response(200, {"message_id": 3})]
        )

        assert 3 == await client.send_message(otp())
        assert 2 == route.call_count

    async def test_connection_errors_end_in_api_connection_error(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """When every attempt fails to connect, APIConnectionError is raised."""
        route = api.post("/send-viber").mock(side_effect=httpx.ConnectError("down"))

        with pytest.raises(APIConnectionError) as info:
            await client.send_message(otp())

        assert 5 == route.call_count
        # Not chained (a foreign error carries the request headers): named.
        assert info.value.__cause__ is None
        assert "ConnectError" == info.value.cause_type

    @pytest.mark.parametrize(
        "side_effect",
        [
            httpx.ReadTimeout("read timed out"),
            httpx.RemoteProtocolError("server disconnected"),
            httpx.ReadError("connection reset"),
            aiohttp.ServerDisconnectedError(),
            aiohttp.SocketTimeoutError("read timed out"),
            aiohttp.ClientPayloadError("response payload is not completed"),
            aiohttp.ClientOSError(104, "Connection reset by peer"),
        ],
        ids=[
            "httpx-read-timeout",
            "httpx-disconnect",
            "httpx-read-error",
            "aiohttp-disconnect",
            "aiohttp-read-timeout",
            "aiohttp-payload",
            "aiohttp-reset",
        ],
    )
    async def test_ambiguous_failures_are_not_retried_for_sends(
        self,
        api: respx.MockRouter,
        client: AsyncViberClient,
        side_effect: Exception,
    ) -> None:
        """After the request may have been received, a send is never repeated."""
        route = api.post("/send-viber").mock(
            side_effect=[side_effect, json_response(200, {"message_id": 3})]
        )

        with pytest.raises(OutcomeUnknownError):
            await client.send_message(otp())

        assert 1 == route.call_count

    async def test_server_disconnect_mapped_to_connect_timeout_is_still_unknown(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """httpx-aiohttp calls a disconnect ConnectTimeout; the cause decides."""
        api.post("/send-viber").mock(side_effect=aiohttp.ServerDisconnectedError())

        with pytest.raises(OutcomeUnknownError) as info:
            await client.send_message(otp())

        assert "ServerDisconnectedError" == info.value.cause_type

    async def test_unknown_outcome_is_retried_when_the_policy_opts_in(
        self, api: respx.MockRouter, make_client: MakeClient
    ) -> None:
        """retry_unknown_outcome=True trades possible duplicates for delivery."""
        client = make_client(retry=RetryPolicy(retry_unknown_outcome=True))
        route = api.post("/send-viber").mock(
            side_effect=[
                httpx.ReadTimeout("slow"),
                json_response(200, {"message_id": 9}),
            ]
        )

        assert 9 == await client.send_message(otp())
        assert 2 == route.call_count

    @pytest.mark.parametrize(
        "response",
        [
            httpx.Response(200, text="<html>maintenance</html>"),
            httpx.Response(200, text=""),
            json_response(200, {"id": 4}),
            json_response(200, [1, 2]),
            json_response(200, {"message_id": "abc"}),
        ],
        ids=["html", "empty", "no-message-id", "list", "non-numeric-id"],
    )
    async def test_unparseable_2xx_is_an_unknown_outcome(
        self,
        api: respx.MockRouter,
        client: AsyncViberClient,
        response: httpx.Response,
    ) -> None:
        """A 2xx the SDK cannot read may still mean the message was sent."""
        route = api.post("/send-viber").mock(response)

        with pytest.raises(UnexpectedResponseError) as info:
            await client.send_message(otp())

        assert 1 == route.call_count
        assert 200 == info.value.http_status

    async def test_retry_none_makes_one_attempt(
        self, api: respx.MockRouter, make_client: MakeClient, clock: FakeClock
    ) -> None:
        """retry=None turns retries off."""
        client = make_client(retry=None)
        route = api.post("/send-viber").mock(httpx.Response(500, text=""))

        with pytest.raises(ServerError):
            await client.send_message(otp())

        assert 1 == route.call_count
        assert [] == clock.sleeps

    async def test_total_deadline_stops_retries(
        self, api: respx.MockRouter, make_client: MakeClient, clock: FakeClock
    ) -> None:
        """No retry starts if its wait would end past the call's deadline."""
        client = make_client(
            retry=RetryPolicy(attempts=10, timeout=5.0, max_retry_after=60)
        )
        route = api.post("/send-viber").mock(
            json_response(
                429, DOCUMENTED_ERRORS["rate_limit"], headers={"Retry-After": "3"}
            )
        )

        with pytest.raises(RateLimitError):
            await client.send_message(otp())

        # One wait of >= 3 s fits in 5 s; a second would not.
        assert 2 == route.call_count
        assert [3.0] == waits(clock)

    async def test_attempt_timeouts_are_cut_to_the_deadline(
        self, api: respx.MockRouter, make_client: MakeClient, clock: FakeClock
    ) -> None:
        """Each attempt's timeouts never run past the total deadline.

        Getting a connection must even end a second earlier (the write-by
        time), so that no request is written with no time left for its answer.
        """
        client = make_client(retry=RetryPolicy(timeout=6.0), timeout=20.0)
        route = api.post("/send-viber").mock(
            side_effect=[
                json_response(
                    429, DOCUMENTED_ERRORS["rate_limit"], headers={"Retry-After": "4"}
                ),
                json_response(200, {"message_id": 1}),
            ]
        )

        await client.send_message(otp())

        first, second = (call.request.extensions["timeout"] for call in route.calls)
        assert 6.0 == first["read"]
        assert 5.0 == first["connect"]
        assert 5.0 == first["pool"]
        assert pytest.approx(6.0 - sum(clock.sleeps)) == second["read"]
        assert pytest.approx(5.0 - sum(clock.sleeps)) == second["connect"]

    async def test_a_users_client_gets_pool_and_connect_that_add_up_in_time(
        self, clock: FakeClock
    ) -> None:
        """httpx waits for the pool, then connects: the two share the write-by time."""
        with respx.mock(base_url=BASE_URL) as router:
            route = router.post("/send-viber").mock(
                json_response(200, {"message_id": 1})
            )
            async with (
                httpx.AsyncClient(timeout=20.0) as user,
                AsyncViberClient(
                    ACCESS_KEY,
                    base_url=BASE_URL,
                    http_client=user,
                    retry=RetryPolicy(timeout=4.0),
                    clock=clock,
                ) as client,
            ):
                await client.send_message(otp())

        timeouts = route.calls[0].request.extensions["timeout"]
        assert 3.2 == pytest.approx(timeouts["pool"] + timeouts["connect"])
        assert 4.0 == timeouts["read"]


class TestGetMessageStatus:
    async def test_returns_a_receipt(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """The receipt carries the status, including 6 (seen)."""
        route = api.post("/receive-viber").mock(
            json_response(200, {"message_id": 429, "status": 6})
        )

        receipt = await client.get_message_status(429)

        assert MessageStatus.SEEN == receipt.status
        assert receipt.is_final
        assert {"message_id": 429} == json.loads(route.calls.last.request.content)

    async def test_viber_plus_sms_fields(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """SMS fallback fields are parsed when present."""
        api.post("/receive-viber").mock(
            json_response(
                200,
                {
                    "message_id": 429,
                    "status": 4,
                    "sms_message_id": 36478,
                    "sms_message_status": 2,
                },
            )
        )

        receipt = await client.get_message_status(429)

        assert 36478 == receipt.sms_message_id
        assert SmsStatus.DELIVERED == receipt.sms_message_status

    async def test_unknown_status_code_does_not_crash(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """A status code the SDK does not know is kept, and not final."""
        api.post("/receive-viber").mock(
            json_response(200, {"message_id": 1, "status": 42})
        )

        receipt = await client.get_message_status(1)

        assert 42 == receipt.status
        assert not receipt.is_final

    async def test_docs_example_with_trailing_comma(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """The documented example body has a trailing comma; it still parses."""
        api.post("/receive-viber").mock(
            httpx.Response(200, content=b'{"message_id":429,"status":1,}')
        )

        assert MessageStatus.DELIVERED == (await client.get_message_status(429)).status

    @pytest.mark.parametrize(
        "failure",
        [
            httpx.ReadTimeout("slow"),
            httpx.Response(200, text="<html/>"),
            httpx.Response(504, text=""),
        ],
        ids=["read-timeout", "garbled-2xx", "504"],
    )
    async def test_lookups_retry_ambiguous_failures(
        self,
        api: respx.MockRouter,
        client: AsyncViberClient,
        failure: Exception | httpx.Response,
    ) -> None:
        """Status lookups are read-only: unknown outcomes are retried too."""
        route = api.post("/receive-viber").mock(
            side_effect=[failure, json_response(200, {"message_id": 1, "status": 1})]
        )

        assert MessageStatus.DELIVERED == (await client.get_message_status(1)).status
        assert 2 == route.call_count

    @pytest.mark.parametrize("bad", [-1, "12", 1.5, True, None])
    async def test_bad_message_id_is_refused_before_any_request(
        self, api: respx.MockRouter, client: AsyncViberClient, bad: object
    ) -> None:
        """message_id must be a non-negative int."""
        route = api.post("/receive-viber").mock(json_response(200, {}))

        with pytest.raises(ValidationError) as info:
            await client.get_message_status(bad)  # type: ignore[arg-type]

        assert "message_id" == info.value.field
        assert 0 == route.call_count


class TestLifecycle:
    def test_missing_key_says_how_to_set_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a key or the environment variable, construction fails clearly."""
        monkeypatch.delenv("DECISIONTELECOM_ACCESS_KEY", raising=False)

        with pytest.raises(ConfigurationError, match="DECISIONTELECOM_ACCESS_KEY"):
            AsyncViberClient()

    async def test_key_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter
    ) -> None:
        """The key falls back to DECISIONTELECOM_ACCESS_KEY."""
        monkeypatch.setenv("DECISIONTELECOM_ACCESS_KEY", "env-key")
        route = api.post("/send-viber").mock(json_response(200, {"message_id": 1}))

        async with AsyncViberClient(base_url=BASE_URL) as client:
            await client.send_message(otp())

        token = base64.b64encode(b"env-key").decode()
        assert f"Basic {token}" == route.calls.last.request.headers["authorization"]

    def test_base_url_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """DECISIONTELECOM_BASE_URL points every client at a sandbox or proxy."""
        monkeypatch.setenv("DECISIONTELECOM_BASE_URL", "http://127.0.0.1:9/v1/api")

        assert "http://127.0.0.1:9/v1/api" == AsyncViberClient("k").base_url
        assert BASE_URL == AsyncViberClient("k", base_url=BASE_URL).base_url

    async def test_closed_client_refuses_calls(self, make_client: MakeClient) -> None:
        """After aclose, every call raises ClientClosedError; closing twice is fine."""
        client = make_client()
        await client.aclose()
        await client.aclose()

        assert client.is_closed
        with pytest.raises(ClientClosedError):
            await client.send_message(otp())
        with pytest.raises(ClientClosedError):
            await client.get_message_status(1)
        with pytest.raises(ClientClosedError):
            client.send_messages([otp()])
        with pytest.raises(ClientClosedError):
            async with client:
                pass

    @pytest.mark.parametrize(
        "base_url",
        ["http://api.example.com/v1/api", "ftp://x/v1", "not a url", ""],
    )
    def test_bad_base_urls_are_refused(self, base_url: str) -> None:
        """Only https (or http on loopback) base URLs are accepted."""
        with pytest.raises(ConfigurationError):
            AsyncViberClient("k", base_url=base_url)

    @pytest.mark.parametrize(
        "base_url",
        [
            "http://127.0.0.1:8000/v1/api",
            "http://localhost:8000/v1/api",
            "http://[::1]:8000/v1/api",
        ],
    )
    def test_plain_http_is_allowed_on_loopback(self, base_url: str) -> None:
        """Sandboxes on loopback need no TLS."""
        assert AsyncViberClient("k", base_url=base_url).base_url.startswith("http://")

    def test_plain_http_elsewhere_needs_an_explicit_opt_in(self) -> None:
        """allow_insecure_http=True lets a user send to a plain-HTTP proxy."""
        client = AsyncViberClient(
            "k", base_url="http://proxy.internal/v1/api", allow_insecure_http=True
        )

        assert "http://proxy.internal/v1/api" == client.base_url

    async def test_user_http_client_is_used_and_left_open(self) -> None:
        """A given httpx.AsyncClient is used as is, and not closed by the SDK."""
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={"message_id": 77})

        http = httpx.AsyncClient(
            transport=httpx.MockTransport(handler), headers={"X-Trace": "abc"}
        )
        async with AsyncViberClient("k", base_url=BASE_URL, http_client=http) as client:
            assert 77 == await client.send_message(otp())

        assert not http.is_closed
        assert "abc" == seen[0].headers["x-trace"]
        assert SEND_URL == str(seen[0].url)
        await http.aclose()

    def test_transport_options_conflict_with_a_user_client(self) -> None:
        """proxy/verify configure the default transport only."""
        with pytest.raises(ConfigurationError):
            AsyncViberClient("k", http_client=httpx.AsyncClient(), verify=False)

    async def test_status_url(
        self, api: respx.MockRouter, client: AsyncViberClient
    ) -> None:
        """Status lookups go to receive-viber under the base URL."""
        route = api.post("/receive-viber").mock(
            json_response(200, {"message_id": 1, "status": 0})
        )

        await client.get_message_status(1)

        assert STATUS_URL == str(route.calls.last.request.url)
