"""Typical user code against the public API, checked by ``mypy --strict``.

Never run, never collected: pytest only imports ``test_*.py`` files, and
every function here is defined, not called (no network at import). The
``assert_type`` checks make mypy fail when a public signature regresses:
a return type widened to ``Any`` or ``object``, a keyword renamed, an
option dropped, an error class no longer importable from the package.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
from redis.asyncio import Redis
from typing_extensions import assert_type

from decisiontelecom_viber import (
    APIConnectionError,
    APIError,
    AsyncViberClient,
    AuthenticationError,
    BulkSummary,
    CallbackError,
    CallbackEvent,
    CallbackReceiver,
    ClientClosedError,
    ClientMetrics,
    ConfigurationError,
    DeadlineExceededError,
    IncomingMessage,
    InsufficientBalanceError,
    InvalidParameterError,
    MessageReceipt,
    MessageStatus,
    MessageType,
    OutcomeUnknownError,
    RateLimit,
    RateLimitError,
    ReceiverStats,
    ResultStream,
    RetryDetails,
    RetryPolicy,
    SendOutcome,
    SendResult,
    ServerError,
    SmsStatus,
    SourceType,
    StatusCallback,
    StatusResult,
    StatusTimeoutError,
    SyncResultStream,
    Telemetry,
    ValidationError,
    ViberClient,
    ViberError,
    ViberMessage,
    parse_callback,
    signed_callback_url,
    verify_callback_token,
)
from decisiontelecom_viber.redis import (
    CallbackReconciler,
    PossibleDuplicateError,
    RedisLimiter,
    RedisUnavailableError,
    SendInProgressError,
    SendOnceGuard,
    SendOnceResult,
    SendRecord,
    SendState,
    SendUnresolvedError,
    SharedRateState,
)
from decisiontelecom_viber.sandbox import (
    AcceptedMessage,
    Sandbox,
    SandboxConfig,
    SandboxServer,
    SandboxStats,
    serve_sandbox,
)


SECRET = "callback-secret-0123456789abcdef"
log = logging.getLogger("app")


# -- messages -----------------------------------------------------------------


def messages() -> list[ViberMessage]:
    otp = ViberMessage.transactional(
        sender="Acme",
        receiver="380501234567",
        text="Your code is 4321",
        text_sms="Your code is 4321",
        validity_period=600,
    )
    promo = ViberMessage.promotional(
        sender="Acme",
        receiver=380501234567,
        text="Spring sale: 20% off everything",
        image_url="https://cdn.example.com/sale.png",
        button_caption="Shop now",
        button_action="https://shop.example.com/sale",
    )
    full = ViberMessage(
        sender="Acme",
        receiver="380501234567",
        message_type=MessageType.TEXT_IMAGE_BUTTON,
        source_type=SourceType.PROMOTIONAL,
        text="Spring sale",
        image_url="https://cdn.example.com/sale.png",
        button_caption="Shop now",
        button_action="https://shop.example.com/sale",
        validity_period=3600,
        callback_url="https://example.com/viber/callbacks",
    )
    parsed = ViberMessage.from_dict({"sender": "Acme", "receiver": "1", "text": "t"})
    assert_type(otp, ViberMessage)
    assert_type(promo, ViberMessage)
    assert_type(parsed, ViberMessage)
    assert_type(full.to_payload(), dict[str, Any])
    assert_type(full.callback_url, str | None)
    assert_type(full.message_type, MessageType)
    return [otp, promo, full, parsed]


def invalid_message_fields() -> str | None:
    try:
        ViberMessage.transactional(sender="Acme", receiver="1", text="a" * 1001)
    except ValidationError as error:
        assert_type(error.field, str)
        assert_type(error.reason, str)
        return error.field
    return None


# -- clients and their options --------------------------------------------------


def on_retry(details: RetryDetails) -> None:
    log.info("retry: %s", details)


def async_client() -> AsyncViberClient:
    policy = RetryPolicy(attempts=3, timeout=10.0, wait_initial=0.2, wait_max=2.0)
    client = AsyncViberClient(
        "access-key",
        base_url="https://api.example.test/v1/api",
        timeout=httpx.Timeout(10.0, connect=2.0),
        retry=policy,
        rate_limit=RateLimit(rate=200, burst=20),
        max_connections=32,
        on_retry=on_retry,
        callback_url="https://example.com/viber/callbacks",
        callback_secret=SECRET,
        callback_reference=lambda message: str(message.receiver),
        telemetry=Telemetry(http_spans=False),
    )
    assert_type(client.retry_policy, RetryPolicy)
    assert_type(client.retry_policy.attempts, int)
    assert_type(client.current_rate, float | None)
    assert_type(client.metrics, ClientMetrics)
    assert_type(client.metrics.retries, int)
    assert_type(client.callback_url_for("order-1"), str | None)
    assert_type(client.is_closed, bool)
    AsyncViberClient(rate_limit=None, retry=None, timeout=None, telemetry=None)
    AsyncViberClient(rate_limit=50.0, on_retry=[on_retry, on_retry])
    return client


async def send_one_and_wait(client: AsyncViberClient, message: ViberMessage) -> None:
    async with client:
        message_id = await client.send_message(message)
        assert_type(message_id, int)
        mapped = await client.send_message(
            {"sender": "Acme", "receiver": "380501234567", "text": "hi"},
            priority="normal",
        )
        assert_type(mapped, int)

        receipt = await client.get_message_status(message_id)
        assert_type(receipt, MessageReceipt)
        assert_type(receipt.status, MessageStatus)
        assert_type(receipt.sms_message_status, SmsStatus | None)
        assert_type(receipt.is_final, bool)

        final = await client.wait_for_status(
            message_id,
            timeout=60.0,
            poll_initial=0.5,
            poll_max=5.0,
            until=lambda r: r.status is MessageStatus.DELIVERED,
        )
        assert_type(final, MessageReceipt)


async def send_many(client: AsyncViberClient, items: list[ViberMessage]) -> int:
    def on_progress(summary: BulkSummary) -> None:
        log.info("%d at %.1f/s", summary.total, summary.rate)

    async def generated() -> AsyncIterator[ViberMessage]:
        for item in items:
            yield item

    sent = 0
    stream = client.send_messages(
        items, concurrency=16, ordered=True, on_progress=on_progress
    )
    assert_type(stream, ResultStream[SendResult])
    async with stream as results:
        async for result in results:
            assert_type(result, SendResult)
            assert_type(result.index, int)
            assert_type(result.message_id, int | None)
            assert_type(result.error, Exception | None)
            match result.outcome:
                case SendOutcome.SENT:
                    sent += 1
                case SendOutcome.FAILED:
                    log.warning("%d failed: %s", result.index, result.error)
                case SendOutcome.UNKNOWN:
                    log.warning("%d: check before resending", result.index)
    assert_type(stream.summary, BulkSummary)
    assert_type(stream.unconsumed, list[SendResult])

    async for result in client.send_messages(generated()):
        assert_type(result, SendResult)

    statuses = client.get_message_statuses([1, 2, 3], ordered=True)
    assert_type(statuses, ResultStream[StatusResult])
    async for status in statuses:
        assert_type(status.receipt, MessageReceipt | None)
    return sent


async def errors_caught_by_class(
    client: AsyncViberClient, message: ViberMessage
) -> str:
    try:
        await client.send_message(message)
    except ValidationError as error:
        return f"invalid {error.field}"
    except RateLimitError as error:
        assert_type(error.retry_after, float | None)
        return "slow down"
    except InvalidParameterError as error:
        return f"refused: {error.param}"
    except (AuthenticationError, InsufficientBalanceError) as error:
        assert_type(error.http_status, int)
        assert_type(error.code, int | None)
        return error.message
    except ServerError as error:
        return error.name
    except APIError as error:
        assert_type(error.body, str)
        return error.name
    except OutcomeUnknownError:
        return "maybe sent: reconcile"
    except DeadlineExceededError as error:
        assert_type(error.waited, str)
        return "not sent"
    except (APIConnectionError, ClientClosedError, ConfigurationError):
        return "not sent"
    except ViberError:
        return "other"
    try:
        await client.wait_for_status(1, timeout=1.0)
    except StatusTimeoutError as error:
        assert_type(error.message_id, int)
        if isinstance(error.receipt, MessageReceipt):
            return error.receipt.status.name
    assert_type(SendOutcome.of(None), SendOutcome)
    return "sent"


def sync_client(message: ViberMessage, guard: SendOnceGuard) -> None:
    with ViberClient(
        "access-key",
        base_url="https://api.example.test/v1/api",
        retry=RetryPolicy(attempts=2),
        rate_limit=RateLimit(rate=100, burst=10),
        timeout=5.0,
    ) as client:
        assert_type(client.async_client, AsyncViberClient)
        message_id = client.send_message(message)
        assert_type(message_id, int)
        assert_type(client.get_message_status(message_id), MessageReceipt)
        assert_type(client.wait_for_status(message_id, timeout=30.0), MessageReceipt)
        results = client.send_messages([message], concurrency=4)
        assert_type(results, SyncResultStream[SendResult])
        for result in results:
            assert_type(result, SendResult)
            assert_type(result.outcome, SendOutcome)
        statuses = client.get_message_statuses([message_id])
        assert_type(statuses, SyncResultStream[StatusResult])
        assert_type(results.summary, BulkSummary)
        guarded = client.call(guard.send, message, dedupe_key="order-1")
        assert_type(guarded, int)


# -- callbacks ------------------------------------------------------------------


async def on_status(event: StatusCallback) -> None:
    assert_type(event.message_id, int)
    assert_type(event.status, MessageStatus)
    assert_type(event.reference, str | None)
    assert_type(event.authenticated, bool)


async def on_message(event: IncomingMessage) -> None:
    assert_type(event.phone_number, str)
    assert_type(event.text, str | None)
    assert_type(event.reply_to_message_id, int | None)


def callbacks(body: bytes, query: str) -> None:
    receiver = CallbackReceiver(
        on_status=on_status, on_message=on_message, secret=SECRET, deduplicate=1000
    )
    assert_type(receiver.stats, ReceiverStats)
    assert_type(receiver.stats.received, int)
    assert_type(receiver.sign_url("https://example.com/cb"), str)
    CallbackReceiver(on_status=on_status, secret=[SECRET, "retired-secret"])

    url = signed_callback_url("https://example.com/cb", SECRET, reference="order-1")
    assert_type(url, str)
    assert_type(verify_callback_token(query, SECRET), bool)
    assert_type(verify_callback_token(httpx.URL(url).query, [SECRET]), bool)

    try:
        event = parse_callback(body)
    except CallbackError as error:
        assert_type(error.reason, str)
        return
    assert_type(event, CallbackEvent)
    match event:
        case StatusCallback(message_id=message_id, status=status):
            assert_type(message_id, int)
            assert_type(status, MessageStatus)
        case IncomingMessage(phone_number=phone):
            assert_type(phone, str)


# -- scaling out through Redis --------------------------------------------------


async def redis_guard_and_limiter(message: ViberMessage) -> None:
    redis = Redis.from_url("redis://localhost:6379/0")
    limiter = RedisLimiter(
        redis, RateLimit(rate=200, burst=20), key="viber:limiter:acme"
    )
    assert_type(limiter.key, str)
    assert_type(limiter.current_rate, float | None)
    assert_type(await limiter.shared_state(), SharedRateState | None)
    RedisLimiter(redis, on_unavailable="local", local_limit=RateLimit(rate=50))

    guard = SendOnceGuard(redis, namespace="viber:sent", ttl=86400.0, lease=60.0)
    async with AsyncViberClient(rate_limit=limiter) as client:
        try:
            message_id = await guard.send(client, message, dedupe_key="order-1")
            assert_type(message_id, int)
        except SendInProgressError:
            pass
        except (SendUnresolvedError, PossibleDuplicateError, RedisUnavailableError):
            pass

        async with guard.send_messages(client, [("order-2", message)]) as results:
            async for result in results:
                assert_type(result, SendOnceResult)
                assert_type(result.dedupe_key, str | None)
                assert_type(result.replayed, bool)
                assert_type(result.outcome, SendOutcome)

    record = await guard.lookup("order-1")
    assert_type(record, SendRecord | None)
    if record is not None and record.state is SendState.UNKNOWN:
        assert_type(await guard.resolve("order-1", 42), SendRecord)
    assert_type(await guard.forget("order-1"), bool)

    reconciler = guard.reconciler(then=on_status)
    assert_type(reconciler, CallbackReconciler)
    CallbackReceiver(on_status=reconciler, secret=SECRET)
    await guard.aclose()
    await limiter.aclose()


# -- the sandbox ----------------------------------------------------------------


async def sandbox(message: ViberMessage) -> None:
    async with serve_sandbox(SandboxConfig(rate_limit=50, burst=10)) as server:
        assert_type(server, SandboxServer)
        assert_type(server.base_url, str)
        assert_type(server.access_key, str)
        async with AsyncViberClient(
            server.access_key, base_url=server.base_url
        ) as client:
            message_id = await client.send_message(message)
        assert_type(server.sandbox, Sandbox)
        assert_type(server.sandbox.stats, SandboxStats)
        assert_type(server.sandbox.messages(), list[AcceptedMessage])
        accepted = server.sandbox.message(message_id)
        assert_type(accepted.payload, Mapping[str, Any])
        server.sandbox.advance(10)


def sandbox_from_sync_code() -> Iterator[str]:
    with (
        serve_sandbox() as server,
        ViberClient(server.access_key, base_url=server.base_url) as client,
    ):
        yield str(client.send_message(messages()[0]))
