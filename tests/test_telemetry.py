"""OpenTelemetry: spans and measurements, seen through the SDK's in-memory
exporter and reader, against raw servers and the sandbox.

Each client gets its own providers (``Telemetry(tracer_provider=...,
meter_provider=...)``): no global state is set, so the rest of the suite runs
with the API's no-op defaults, as an application without an SDK would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from decisiontelecom_viber import (
    AsyncViberClient,
    InvalidParameterError,
    OutcomeUnknownError,
    RateLimit,
    RetryPolicy,
    Telemetry,
    ViberClient,
    ViberError,
    ViberMessage,
)
from decisiontelecom_viber.sandbox import SandboxConfig, serve_sandbox

from . import rawhttp as raw
from .helpers import eventually


pytestmark = pytest.mark.integration

KEY = "telemetry-test-key"
PHONE = "380501234567"
TEXT = "your code is 918273"
SERVER_ERROR = {"name": "Internal", "message": "Oops", "code": 2, "status": 500}
FAST = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02, wait_jitter=0)


@attrs.define
class Otel:
    """Providers of one test, and what they collected."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    telemetry: Telemetry

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name in (None, s.name)]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def total(self, name: str, **attributes: Any) -> float:
        total: float = sum(
            p.value
            for p in self.points(name)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )
        return total


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(
        exporter,
        reader,
        Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider),
    )
    meter_provider.shutdown()
    tracer_provider.shutdown()


@pytest.fixture
async def server() -> AsyncIterator[raw.RawServer]:
    async with raw.RawServer() as running:
        yield running


def message(n: int = 0) -> ViberMessage:
    return ViberMessage.transactional(
        sender="Shop", receiver=str(int(PHONE) + n), text=TEXT
    )


def first_line_of(script: str) -> str:
    """Run *script* in a fresh interpreter (warnings as errors); its first line."""
    done = subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[0]


def traceparent_of(span: ReadableSpan) -> str:
    """The header's version, trace and parent IDs (its flags may vary)."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}"


def as_text(value: object) -> str:
    """An attribute's value as text: bytes decoded, so a secret in them shows."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def ids(traceparent: str | None) -> str | None:
    return None if traceparent is None else traceparent.rsplit("-", 1)[0]


@pytest.mark.parametrize("own_client", [False, True], ids=["default", "http_client"])
async def test_a_sent_message_has_a_call_span_and_an_http_span_that_reaches_the_api(
    otel: Otel, own_client: bool
) -> None:
    """The sandbox, through the default transport and a user's client: the
    SDK's span under the caller's, the HTTP client span under it, and the API
    sees that span's traceparent."""
    tracer = otel.telemetry.tracer_provider.get_tracer("app")
    with serve_sandbox(SandboxConfig(access_key=KEY)) as api:
        async with (
            httpx.AsyncClient() as http_client,
            AsyncViberClient(
                KEY,
                base_url=api.base_url,
                telemetry=otel.telemetry,
                http_client=http_client if own_client else None,
            ) as client,
        ):
            with tracer.start_as_current_span("handler") as handler:
                message_id = await client.send_message(message())
        received = api.sandbox.requests()
        base_url = api.base_url
        port = httpx.URL(base_url).port

    (call,) = otel.spans("viber.send_message")
    (http,) = otel.spans("POST")
    assert call.parent is not None
    assert call.parent.span_id == handler.get_span_context().span_id
    assert call.kind is trace.SpanKind.INTERNAL
    assert dict(call.attributes or {}) == {
        "server.address": "127.0.0.1",
        "viber.operation": "send_message",
        "viber.message_type": "text",
        "viber.outcome": "sent",
        "viber.attempts": 1,
        "viber.retries": 0,
        "viber.message_id": message_id,
    }
    assert http.parent is not None
    assert http.parent.span_id == call.context.span_id
    assert http.kind is trace.SpanKind.CLIENT
    assert dict(http.attributes or {}) == {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.full": f"{base_url}/send-viber",
        "http.response.status_code": 200,
    }
    assert [ids(r.traceparent) for r in received] == [traceparent_of(http)]


@pytest.mark.parametrize("own_client", [False, True], ids=["default", "http_client"])
async def test_a_retried_send_has_one_http_span_per_attempt(
    otel: Otel, server: raw.RawServer, own_client: bool
) -> None:
    """429, then 500, then accepted: three client spans (resend counts 1 and
    2, the refusals marked as errors), one call span with 2 retries."""
    server.then(
        raw.respond(429, {"error": "Too many requests"}),
        raw.respond(500, SERVER_ERROR),
        raw.accepted(77),
    )
    http_client = httpx.AsyncClient() if own_client else None
    async with AsyncViberClient(
        KEY,
        base_url=server.base_url,
        retry=FAST,
        rate_limit=None,
        http_client=http_client,
        telemetry=otel.telemetry,
    ) as client:
        assert await client.send_message(message()) == 77
    if http_client is not None:
        await http_client.aclose()

    attempts = sorted(otel.spans("POST"), key=lambda s: s.start_time or 0)
    assert [
        (s.attributes or {}).get("http.response.status_code") for s in attempts
    ] == [
        429,
        500,
        200,
    ]
    assert [
        (s.attributes or {}).get("http.request.resend_count") for s in attempts
    ] == [
        None,
        1,
        2,
    ]
    assert [(s.attributes or {}).get("error.type") for s in attempts] == [
        "429",
        "500",
        None,
    ]
    assert [s.status.status_code for s in attempts] == [
        trace.StatusCode.ERROR,
        trace.StatusCode.ERROR,
        trace.StatusCode.UNSET,
    ]
    (call,) = otel.spans("viber.send_message")
    assert (call.attributes or {})["viber.retries"] == 2
    assert (call.attributes or {})["viber.outcome"] == "sent"
    assert [ids(r.headers["traceparent"]) for r in server.received] == [
        traceparent_of(s) for s in attempts
    ]
    assert otel.total("viber.client.attempts") == 3
    assert otel.total("viber.client.retries") == 2
    assert otel.total("viber.client.rate_limited") == 1
    assert otel.total("viber.client.messages", **{"viber.outcome": "sent"}) == 1


@pytest.mark.parametrize("own_client", [False, True], ids=["default", "http_client"])
async def test_a_refused_send_is_failed_and_a_lost_answer_unknown(
    otel: Otel, server: raw.RawServer, own_client: bool
) -> None:
    """An API refusal (400) is ``failed``; a connection closed after the
    request was read is ``unknown``: the span, the counter and
    ``client.metrics`` all say so, with the error's class and no message."""
    server.then(
        raw.respond(400, {"name": "Invalid Parameter: source_addr", "status": 0}),
        raw.close(after_reading=True),
    )
    async with (
        httpx.AsyncClient() as http_client,
        AsyncViberClient(
            KEY,
            base_url=server.base_url,
            rate_limit=None,
            telemetry=otel.telemetry,
            http_client=http_client if own_client else None,
        ) as client,
    ):
        with pytest.raises(InvalidParameterError):
            await client.send_message(message(1))
        with pytest.raises(OutcomeUnknownError):
            await client.send_message(message(2))
        metrics = client.metrics

    failed, unknown = sorted(
        otel.spans("viber.send_message"), key=lambda s: s.start_time or 0
    )
    assert (failed.attributes or {})["viber.outcome"] == "failed"
    assert (failed.attributes or {})["error.type"] == "InvalidParameterError"
    assert (unknown.attributes or {})["viber.outcome"] == "unknown"
    assert (unknown.attributes or {})["error.type"] == "OutcomeUnknownError"
    assert failed.status.description == "InvalidParameterError"
    assert "viber.message_id" not in (failed.attributes or {})
    refused, lost = sorted(otel.spans("POST"), key=lambda s: s.start_time or 0)
    assert (refused.attributes or {})["error.type"] == "400"
    assert (lost.attributes or {})["error.type"] == "OutcomeUnknownError"
    assert "http.response.status_code" not in (lost.attributes or {})
    for outcome in ("failed", "unknown"):
        assert otel.total("viber.client.messages", **{"viber.outcome": outcome}) == 1
    assert metrics.outcomes == {"sent": 0, "failed": 1, "unknown": 1}
    assert metrics.send_latency is not None
    assert metrics.send_latency.count == 2


async def test_httpx_instrumented_and_http_spans_false_make_one_client_span(
    otel: Otel, server: raw.RawServer
) -> None:
    """A user's ``http_client`` instrumented by opentelemetry-instrumentation-
    httpx, and ``Telemetry(http_spans=False)``: httpx's span is the only client
    span, a child of the SDK's call span, and its traceparent is the one sent."""
    provider = otel.telemetry.tracer_provider
    http_client = httpx.AsyncClient()
    HTTPXClientInstrumentor.instrument_client(http_client, tracer_provider=provider)
    try:
        async with AsyncViberClient(
            KEY,
            base_url=server.base_url,
            rate_limit=None,
            http_client=http_client,
            telemetry=attrs.evolve(otel.telemetry, http_spans=False),
        ) as client:
            await client.send_message(message())
    finally:
        HTTPXClientInstrumentor.uninstrument_client(http_client)
        await http_client.aclose()

    clients = [s for s in otel.spans() if s.kind is trace.SpanKind.CLIENT]
    (call,) = otel.spans("viber.send_message")
    assert len(clients) == 1
    assert clients[0].parent is not None
    assert clients[0].parent.span_id == call.context.span_id
    assert ids(server.received[0].headers["traceparent"]) == traceparent_of(clients[0])


async def test_bulk_items_have_a_span_each_under_the_callers_span(otel: Otel) -> None:
    """``send_messages`` of 20: 20 call spans, each a child of the span
    current where the stream is iterated."""
    tracer = otel.telemetry.tracer_provider.get_tracer("app")
    with serve_sandbox(SandboxConfig(access_key=KEY)) as api:
        async with AsyncViberClient(
            KEY, base_url=api.base_url, telemetry=otel.telemetry
        ) as client:
            with tracer.start_as_current_span("campaign") as campaign:
                results = [
                    r async for r in client.send_messages(map(message, range(20)))
                ]
    assert all(r.ok for r in results)
    calls = otel.spans("viber.send_message")
    assert len(calls) == 20
    assert {c.parent.span_id for c in calls if c.parent} == {
        campaign.get_span_context().span_id
    }
    assert {(c.attributes or {})["viber.message_id"] for c in calls} == {
        r.message_id for r in results
    }


def test_the_sync_clients_spans_have_the_calling_threads_span_as_parent(
    otel: Otel,
) -> None:
    """``ViberClient`` runs calls on its own loop thread: the caller's span is
    carried over, for single sends, lookups and streams."""
    tracer = otel.telemetry.tracer_provider.get_tracer("app")
    with (
        serve_sandbox(SandboxConfig(access_key=KEY)) as api,
        ViberClient(KEY, base_url=api.base_url, telemetry=otel.telemetry) as client,
        tracer.start_as_current_span("view") as view,
    ):
        message_id = client.send_message(message())
        client.get_message_status(message_id)
        with client.send_messages([message(1), message(2)]) as results:
            assert all(r.ok for r in results)
    spans = otel.spans("viber.send_message") + otel.spans("viber.get_message_status")
    assert len(spans) == 4
    assert {s.parent.span_id for s in spans if s.parent} == {
        view.get_span_context().span_id
    }
    (lookup,) = otel.spans("viber.get_message_status")
    assert (lookup.attributes or {})["viber.outcome"] == "ok"
    assert (lookup.attributes or {})["viber.message_id"] == message_id


async def test_metrics_after_a_campaign_against_a_faulty_sandbox_match_its_results(
    otel: Otel,
) -> None:
    """300 sends through 500s, dropped connections and a 50/s limit: the
    outcome counter, ``client.metrics`` and the stream's summary agree; the
    attempt, retry and 429 counters match the client's; the limiter's rate
    is observed; every send has a duration."""
    config = SandboxConfig(
        access_key=KEY,
        rate_limit=50,
        burst=10,
        fault_500=0.05,
        fault_disconnect_after=0.02,
        fault_disconnect_before=0.02,
        seed=7,
    )
    with serve_sandbox(config) as api:
        async with AsyncViberClient(
            KEY,
            base_url=api.base_url,
            retry=RetryPolicy(wait_initial=0.01, wait_max=0.05),
            telemetry=otel.telemetry,
        ) as client:
            stream = client.send_messages(map(message, range(300)))
            results = [r async for r in stream]
            summary = stream.summary
            metrics = client.metrics
            rates = otel.points("viber.client.limiter.rate")

    assert len(results) == 300
    assert summary.unknown > 0
    assert summary.sent > 0
    for outcome in ("sent", "failed", "unknown"):
        counted = otel.total("viber.client.messages", **{"viber.outcome": outcome})
        assert counted == summary.outcomes.get(outcome, 0) == metrics.outcomes[outcome]
    assert otel.total("viber.client.attempts") == metrics.attempts
    assert otel.total("viber.client.rate_limited") == metrics.rate_limited
    assert otel.total("viber.client.retries") == metrics.retries
    assert metrics.rate_limited > 0
    (durations,) = otel.points("viber.client.call.duration")[:1] or [None]
    assert sum(p.count for p in otel.points("viber.client.call.duration")) == 300
    assert durations is not None
    assert metrics.send_latency is not None
    assert metrics.send_latency.count == 300
    waits = otel.points("viber.client.limiter.wait")
    assert sum(p.count for p in waits) == metrics.attempts
    assert rates
    assert all(0 < p.value <= 200 for p in rates)


async def test_no_phone_number_text_key_or_callback_token_is_recorded(
    otel: Otel, server: raw.RawServer
) -> None:
    """Every attribute, event, status and metric attribute, scanned: none
    holds the receiver, the text, the key (or its base64) or the callback
    URL's signature — whether the send succeeds, is refused or is lost."""
    server.then(
        raw.accepted(5),
        raw.respond(400, {"name": f"Invalid Parameter: {PHONE} {TEXT}", "status": 0}),
        raw.close(after_reading=True),
    )
    async with AsyncViberClient(
        KEY,
        base_url=server.base_url,
        rate_limit=None,
        callback_url="https://hooks.example.com/viber",
        callback_secret="callback-secret-0123456789",
        telemetry=otel.telemetry,
    ) as client:
        for _ in range(3):
            with contextlib.suppress(ViberError):  # (every outcome is scanned)
                await client.send_message(message())
        token_url = json.loads(server.received[0].body)["callback_url"]
    secrets = [
        PHONE,
        TEXT,
        KEY,
        base64.b64encode(KEY.encode()).decode(),
        token_url,
        httpx.URL(token_url).query.decode(),
        "callback-secret",
    ]
    recorded: list[str] = []
    for span in otel.spans():
        recorded.append(span.name)
        recorded.extend(f"{k}={as_text(v)}" for k, v in (span.attributes or {}).items())
        recorded.append(str(span.status.description))
        for event in span.events:
            recorded.append(event.name)
            recorded.extend(
                f"{k}={as_text(v)}" for k, v in (event.attributes or {}).items()
            )
    data = otel.reader.get_metrics_data()
    assert data is not None
    recorded.append(data.to_json())
    assert len(otel.spans("viber.send_message")) == 3
    for secret in secrets:
        assert not [r for r in recorded if secret in r], secret


async def test_telemetry_none_records_nothing(
    otel: Otel, server: raw.RawServer
) -> None:
    """``telemetry=None``: no span, no measurement, no traceparent."""
    async with AsyncViberClient(
        KEY, base_url=server.base_url, rate_limit=None, telemetry=None
    ) as client:
        await client.send_message(message())
    assert otel.spans() == []
    assert "traceparent" not in server.received[0].headers


def test_without_opentelemetry_installed_the_client_sends_and_records_its_own_metrics(
    tmp_path: Any,
) -> None:
    """The package absent (its import blocked): sends work, no traceparent
    is sent, ``client.metrics`` still counts outcomes."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["opentelemetry"] = None  # (import opentelemetry fails)
        from decisiontelecom_viber import AsyncViberClient, ViberMessage, _telemetry
        from decisiontelecom_viber.sandbox import SandboxConfig, serve_sandbox

        async def main(url):
            async with AsyncViberClient("k", base_url=url) as client:
                await client.send_message(ViberMessage.transactional(
                    sender="Shop", receiver="380501234567", text="hi"))
                return client.metrics

        with serve_sandbox(SandboxConfig(access_key="k")) as api:
            metrics = asyncio.run(main(api.base_url))
            print(_telemetry.AVAILABLE, metrics.sent,
                  [r.traceparent for r in api.sandbox.requests()])
        """
    )
    assert first_line_of(script) == "False 1 [None]"


def test_telemetry_must_be_a_telemetry() -> None:
    """A wrong ``telemetry=`` fails at construction, naming the parameter."""
    with pytest.raises(Exception, match="telemetry must be a Telemetry or None"):
        AsyncViberClient(KEY, telemetry=True)  # type: ignore[arg-type]


async def test_a_cancelled_send_on_the_wire_counts_as_unknown(
    otel: Otel, server: raw.RawServer
) -> None:
    """Cancelled while the server holds the answer: the request was read,
    so the call's outcome is ``unknown``."""
    hold = asyncio.Event()
    server.then(raw.hold(hold, raw.accepted()))
    async with AsyncViberClient(
        KEY, base_url=server.base_url, rate_limit=None, telemetry=otel.telemetry
    ) as client:
        task = asyncio.create_task(client.send_message(message()))
        await eventually(lambda: server.received)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        hold.set()
        assert client.metrics.outcomes["unknown"] == 1
    (call,) = otel.spans("viber.send_message")
    assert (call.attributes or {})["viber.outcome"] == "unknown"
    assert (call.attributes or {})["error.type"] == "CancelledError"


def test_an_sdk_configured_after_the_client_is_made_is_used_from_then_on() -> None:
    """A client made at import time, before the application sets its global
    providers: nothing is recorded (and no traceparent sent) until then, and
    everything after."""
    script = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from decisiontelecom_viber import AsyncViberClient, ViberMessage
        from decisiontelecom_viber.sandbox import SandboxConfig, serve_sandbox

        def message():
            return ViberMessage.transactional(
                sender="Shop", receiver="380501234567", text="hi")

        async def main(url):
            async with AsyncViberClient("k", base_url=url) as client:
                await client.send_message(message())
                exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
                provider = TracerProvider()
                provider.add_span_processor(SimpleSpanProcessor(exporter))
                trace.set_tracer_provider(provider)
                metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
                await client.send_message(message())
            data = reader.get_metrics_data()
            sent = [
                point.value
                for scope in data.resource_metrics[0].scope_metrics
                for metric in scope.metrics
                if metric.name == "viber.client.messages"
                for point in metric.data.data_points
            ]
            return sorted(s.name for s in exporter.get_finished_spans()), sent

        with serve_sandbox(SandboxConfig(access_key="k")) as api:
            spans, sent = asyncio.run(main(api.base_url))
            parents = [r.traceparent is not None for r in api.sandbox.requests()]
            print(spans, sent, parents)
        """
    )
    assert first_line_of(script) == ("['POST', 'viber.send_message'] [1] [False, True]")


class _Broken(Exception):
    pass


class _RaisingProcessor:
    """An SDK span processor with a bug (the SDK does not catch its errors)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "start":
            raise _Broken

    def on_end(self, span: Any) -> None:
        if self.where == "end":
            raise _Broken

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class _RaisingMeterProvider:
    """A meter provider whose instruments all raise."""

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("create_"):
            return lambda *args, **kwargs: self
        raise _Broken

    def add(self, *args: Any, **kwargs: Any) -> None:
        raise _Broken

    def record(self, *args: Any, **kwargs: Any) -> None:
        raise _Broken


@pytest.mark.parametrize("where", ["start", "end"])
async def test_a_broken_sdk_never_changes_an_outcome(
    server: raw.RawServer, where: str
) -> None:
    """A span processor raising when spans start (or end), instruments raising
    on every measurement: the message is sent, its ID returned, the client
    closes (no call left behind), and the failures are logged.

    (Found by an attack: a raising tracer left a call that hung ``aclose``;
    one raising at the end turned a sent message into an exception.)
    """
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    # (method-assign: a method replaced on an instance; assignment: list.append
    # takes its argument positional-only, emit names it `record`.)
    handler.emit = logged.append  # type: ignore[method-assign,assignment]
    # (On the SDK's own logger, at WARNING: the CLI's tests, run in this
    # process, set its level.)
    sdk_logger = logging.getLogger("decisiontelecom_viber")
    level = sdk_logger.level
    sdk_logger.setLevel(logging.WARNING)
    sdk_logger.addHandler(handler)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(_RaisingProcessor(where))  # type: ignore[arg-type]
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=_RaisingMeterProvider()
    )
    async with AsyncViberClient(
        KEY, base_url=server.base_url, rate_limit=None, telemetry=telemetry
    ) as client:
        assert await client.send_message(message()) == 4242
        assert client.metrics.sent == 1
    sdk_logger.removeHandler(handler)
    sdk_logger.setLevel(level)
    assert len(server.received) == 1
    assert any("OpenTelemetry failed" in r.getMessage() for r in logged)


async def test_calls_after_aclose_are_counted_and_retries_agree(
    otel: Otel, server: raw.RawServer
) -> None:
    """Items a stream starts after ``aclose`` fail (``ClientClosedError``):
    the stream's summary, ``client.metrics``, the counter and the spans say
    the same; ``viber.client.retries`` counts what ``client.metrics.retries``
    counts; a closed client's rate is no longer observed."""
    server.then(raw.respond(500, SERVER_ERROR))
    client = AsyncViberClient(
        KEY,
        base_url=server.base_url,
        rate_limit=RateLimit(rate=1000),
        retry=FAST,
        telemetry=otel.telemetry,
    )
    stream = client.send_messages(map(message, range(6)), concurrency=1)
    async with stream:
        async for result in stream:
            if result.index == 1:
                await client.aclose()
    summary, metrics = stream.summary, client.metrics
    assert summary.total == 6
    assert summary.failed >= 3  # (what had not started when it closed)
    assert dict(metrics.outcomes) == {**summary.outcomes, "unknown": 0}
    for outcome in ("sent", "failed"):
        counted = otel.total("viber.client.messages", **{"viber.outcome": outcome})
        assert counted == summary.outcomes[outcome]
    assert len(otel.spans("viber.send_message")) == 6
    assert metrics.retries == 1
    assert otel.total("viber.client.retries") == 1
    assert otel.points("viber.client.limiter.rate") == []
