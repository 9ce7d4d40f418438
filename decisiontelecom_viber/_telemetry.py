"""OpenTelemetry: a span per call and per attempt, and the client's instruments.

Only `opentelemetry-api` is used (the ``[otel]`` extra): the application
chooses the SDK and the exporters. Without the package, `instrument` returns
None and the pipeline's cost is one ``is None`` check per call; with the API
but no SDK configured, spans are non-recording and attributes are skipped.

What is recorded is chosen so that nothing personal or secret can be: the
operation, the message type, the outcome, the message ID, counts, durations,
the API's host and port, the endpoint's URL (never with credentials or a
query), status codes and error class names. Never a phone number, a text,
the access key, a callback URL or its signature: none of them is ever
passed here.

Names (docs/observability.md): spans ``viber.send_message`` and
``viber.get_message_status`` (internal), ``POST`` per attempt (client, the
HTTP semantic conventions); instruments ``viber.client.*``.

Here: the `Telemetry` settings, and one client's `Instrumentation` (made by
`instrument`), which starts its call spans and counts. The spans are in
``_spans``, the instruments they record in are in ``_instruments``, and
`guarded`, which keeps an OpenTelemetry failure from reaching a call, is in
``_otelguard``; each of those imports OpenTelemetry just as optionally.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import httpx

from ._enums import MessageType
from ._errors import ConfigurationError
from ._instruments import DURATION_BOUNDS, instruments_for
from ._otelguard import SCOPE, guarded
from ._spans import AttemptSpan, CallSpan
from ._version import package_version


try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
except ImportError:  # pragma: no cover - the [otel] extra is not installed
    AVAILABLE = False
else:
    AVAILABLE = True
    # Providers that record nothing: the API's defaults until the
    # application sets an SDK's (then spans and measurements are skipped,
    # not made and dropped).
    _SILENT_TRACER_PROVIDERS: tuple[type, ...] = (
        trace.ProxyTracerProvider,
        trace.NoOpTracerProvider,
    )
    _SILENT_METER_PROVIDERS: tuple[type, ...] = (otel_metrics.NoOpMeterProvider,)
    try:
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # pragma: no cover - another API version: always measure
        pass
    else:
        _SILENT_METER_PROVIDERS += (_ProxyMeterProvider,)

# (The spans and DURATION_BOUNDS too: the pipeline, the calls and the
# metrics take all of their telemetry from here.)
__all__ = [
    "DURATION_BOUNDS",
    "AttemptSpan",
    "CallSpan",
    "Instrumentation",
    "Telemetry",
    "carry_context",
    "instrument",
    "type_label",
]

_CLIENT_NUMBERS = itertools.count(1)


@attrs.frozen
class Telemetry:
    """How a client reports to OpenTelemetry (``telemetry=``; None: not at all).

    Attributes:
        http_spans: A client span per HTTP attempt, with the W3C
            ``traceparent`` header on its request. Turn it off when your own
            ``http_client`` is instrumented by
            ``opentelemetry-instrumentation-httpx``, which then makes those
            spans and sends the header: the SDK's call spans stay.
        tracer_provider: Where spans go (default: the global provider).
        meter_provider: Where measurements go (default: the global provider).
    """

    http_spans: bool = True
    tracer_provider: Any = None
    meter_provider: Any = None


def instrument(
    config: Telemetry | None, base_url: httpx.URL, current_rate: Callable[[], Any]
) -> Instrumentation | None:
    """The client's instrumentation, or None (no config, or no OpenTelemetry)."""
    if config is not None and not isinstance(config, Telemetry):
        raise ConfigurationError("telemetry must be a Telemetry or None")
    if config is None or not AVAILABLE:
        return None
    return _build(config, base_url, current_rate)


@guarded()
def _build(
    config: Telemetry, base_url: httpx.URL, current_rate: Callable[[], Any]
) -> Instrumentation:
    return Instrumentation(config, base_url, current_rate)


class Instrumentation:
    """One client's tracer and instruments."""

    __slots__ = (
        "__weakref__",
        "_call_attributes",
        "_meter_provider",
        "_tracer_provider",
        "_urls",
        "client_attributes",
        "current_rate",
        "http_attributes",
        "http_spans",
        "instruments",
        "tracer",
    )

    def __init__(
        self, config: Telemetry, base_url: httpx.URL, current_rate: Callable[[], Any]
    ) -> None:
        self._tracer_provider = config.tracer_provider
        self._meter_provider = config.meter_provider
        self.tracer = trace.get_tracer(
            SCOPE, package_version(), tracer_provider=config.tracer_provider
        )
        self.http_spans = config.http_spans
        self._urls: dict[str, str] = {}
        # (Not the client's: a dropped client must not stay alive, or
        # observed, through its instrumentation.)
        self.current_rate = current_rate
        port = base_url.port or (443 if base_url.scheme == "https" else 80)
        self.http_attributes = {
            "http.request.method": "POST",
            "server.address": base_url.host,
            "server.port": port,
        }
        self._call_attributes = {"server.address": base_url.host}
        self.client_attributes: dict[str, Any] = {
            "server.address": base_url.host,
            "viber.client": next(_CLIENT_NUMBERS),
        }
        self.instruments = instruments_for(config.meter_provider)
        self.instruments.live.add(self)

    @guarded()
    def start_call(
        self, operation: str, attributes: Mapping[str, Any]
    ) -> CallSpan | None:
        """A call's span, a child of the caller's current span.

        None while the application has configured no SDK (checked on every
        call: it may configure one after making the client).
        """
        tracing = self._tracing()
        if not tracing and not self._metering():
            return None
        if not tracing:
            return CallSpan(self, trace.INVALID_SPAN, operation, None)
        span = self.tracer.start_span(
            f"viber.{operation}",
            kind=trace.SpanKind.INTERNAL,
            attributes={**self._call_attributes, "viber.operation": operation},
        )
        if span.is_recording():
            span.set_attributes(attributes)
        # Current while the call runs (in its caller's task): what httpx's
        # own instrumentation, a user's http_client and hooks see as parent.
        token = otel_context.attach(trace.set_span_in_context(span))
        return CallSpan(self, span, operation, token)

    def _tracing(self) -> bool:
        provider = self._tracer_provider or trace.get_tracer_provider()
        return not isinstance(provider, _SILENT_TRACER_PROVIDERS)

    def _metering(self) -> bool:
        provider = self._meter_provider or otel_metrics.get_meter_provider()
        return not isinstance(provider, _SILENT_METER_PROVIDERS)

    def retire(self) -> None:
        """The client closed: its rate is no longer observed."""
        self.instruments.live.discard(self)

    def url_full(self, url: httpx.URL) -> str:
        """*url* without credentials, query or fragment (parsed once per URL)."""
        key = str(url)
        clean = self._urls.get(key)
        if clean is None:
            clean = str(url.copy_with(query=None, fragment=None, userinfo=b""))
            if len(self._urls) < 16:  # (a client's few endpoints)
                self._urls[key] = clean
        return clean

    def count_retry(self, details: Any) -> None:
        """A retry hook: count a retry scheduled (`RetryDetails`)."""
        if self._metering():
            self.count("retries", 1, details.operation)

    @guarded()
    def count(self, name: str, amount: float, operation: str) -> None:
        """Add to a counter, or record a limiter wait (for a traced call)."""
        instruments = self.instruments
        attributes = {"viber.operation": operation}
        if name == "attempts":
            instruments.attempts.add(amount, attributes)
        elif name == "rate_limited":
            instruments.rate_limited.add(amount, attributes)
        elif name == "retries":
            instruments.retries.add(amount, attributes)
        elif name == "limiter_wait":
            instruments.limiter_wait.record(amount, attributes)


def type_label(code: MessageType) -> str:
    """A message type as metrics and spans name it (``"text"``, ...)."""
    return code.name.lower()


def carry_context() -> Callable[[], Callable[[], None]] | None:
    """The caller's OpenTelemetry context, to enter in another thread's task.

    Returns a function that attaches it and returns the detach function (or
    None without OpenTelemetry): how a sync call's spans get the calling
    thread's current span as their parent.
    """
    if not AVAILABLE:
        return None
    captured = otel_context.get_current()

    def enter() -> Callable[[], None]:
        token = otel_context.attach(captured)
        return lambda: otel_context.detach(token)

    return enter
