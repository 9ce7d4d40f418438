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
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import attrs
import httpx

from ._enums import MessageType
from ._errors import ConfigurationError
from ._version import package_version


try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import propagate, trace
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

SCOPE = "decisiontelecom_viber"

logger = logging.getLogger("decisiontelecom_viber")

Fn = TypeVar("Fn", bound=Callable[..., Any])


def _guarded(default: Any = None) -> Callable[[Fn], Fn]:
    """Wrap a telemetry function so that it never raises.

    Telemetry never changes a call's outcome: an OpenTelemetry provider,
    processor, exporter or propagator that raises is logged, and the call
    goes on as if it were not there (*default* is returned).
    """

    def decorate(function: Fn) -> Fn:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception:
                logger.warning(
                    "OpenTelemetry failed in %s; the call goes on without it",
                    function.__qualname__,
                    exc_info=True,
                )
                return default

        return cast(Fn, guarded)

    return decorate


# Seconds: OpenTelemetry's advice for HTTP client durations, longer at the
# top (a send waiting behind a campaign's rate limit).
DURATION_BOUNDS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip


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


class _Instruments:
    """One set of instruments per meter provider.

    Created once per provider: the SDK ignores a second registration's
    callbacks, so one gauge callback reports every live client.
    """

    def __init__(self, meter: Any) -> None:
        self.messages = meter.create_counter(
            "viber.client.messages",
            unit="{message}",
            description="Messages by outcome (sent, failed, unknown) and type.",
        )
        self.attempts = meter.create_counter(
            "viber.client.attempts", unit="{request}", description="HTTP requests."
        )
        self.retries = meter.create_counter(
            "viber.client.retries",
            unit="{request}",
            description="HTTP requests after a call's first.",
        )
        self.rate_limited = meter.create_counter(
            "viber.client.rate_limited",
            unit="{response}",
            description="429 answers.",
        )
        self.duration = meter.create_histogram(
            "viber.client.call.duration",
            unit="s",
            description="Calls, from start to outcome, retries included.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDS,
        )
        self.limiter_wait = meter.create_histogram(
            "viber.client.limiter.wait",
            unit="s",
            description="Time each attempt waited for the rate limiter.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDS,
        )
        self.live: weakref.WeakSet[Instrumentation] = weakref.WeakSet()
        meter.create_observable_gauge(
            "viber.client.limiter.rate",
            callbacks=[self._observe_rates],
            unit="{request}/s",
            description="The rate limiter's current rate, per client.",
        )

    def _observe_rates(self, options: Any) -> Iterable[Any]:
        observation = otel_metrics.Observation
        for live in list(self.live):
            rate = live.current_rate()
            if rate is not None:
                yield observation(rate, live.client_attributes)


# The instruments of each meter provider given (dropped with the provider),
# and of the global one.
_INSTRUMENTS: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_GLOBAL: list[_Instruments] = []
_INSTRUMENTS_LOCK = threading.Lock()
_CLIENT_NUMBERS = itertools.count(1)


def _instruments_for(provider: Any) -> _Instruments:
    with _INSTRUMENTS_LOCK:
        held = _GLOBAL[0] if provider is None and _GLOBAL else None
        if provider is not None:
            held = _INSTRUMENTS.get(provider)
        if held is None:
            meter = otel_metrics.get_meter(
                SCOPE, package_version(), meter_provider=provider
            )
            held = _Instruments(meter)
            if provider is None:
                _GLOBAL.append(held)
            else:
                _INSTRUMENTS[provider] = held
        return held


def instrument(
    config: Telemetry | None, base_url: httpx.URL, current_rate: Callable[[], Any]
) -> Instrumentation | None:
    """The client's instrumentation, or None (no config, or no OpenTelemetry)."""
    if config is not None and not isinstance(config, Telemetry):
        raise ConfigurationError("telemetry must be a Telemetry or None")
    if config is None or not AVAILABLE:
        return None
    return _build(config, base_url, current_rate)


@_guarded()
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
        self.instruments = _instruments_for(config.meter_provider)
        self.instruments.live.add(self)

    @_guarded()
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

    @_guarded()
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


class CallSpan:
    """One call: its span, its attempts' spans, and what came of it."""

    __slots__ = ("_instrumentation", "_operation", "_token", "span")

    def __init__(
        self, instrumentation: Instrumentation, span: Any, operation: str, token: Any
    ) -> None:
        self._instrumentation = instrumentation
        self._operation = operation
        self._token = token
        self.span = span

    @_guarded()
    def start_attempt(
        self, request: httpx.Request, resend_count: int
    ) -> AttemptSpan | None:
        """An attempt's client span, its ``traceparent`` put on *request*."""
        instrumentation = self._instrumentation
        if not instrumentation.http_spans or self._token is None:
            return None  # (not tracing)
        parent = trace.set_span_in_context(self.span)
        attributes: dict[str, Any] = {
            **instrumentation.http_attributes,
            "url.full": instrumentation.url_full(request.url),
        }
        if resend_count:
            attributes["http.request.resend_count"] = resend_count
        span = instrumentation.tracer.start_span(
            "POST", context=parent, kind=trace.SpanKind.CLIENT, attributes=attributes
        )
        propagate.inject(request.headers, context=trace.set_span_in_context(span))
        return AttemptSpan(span)

    def end(
        self,
        outcome: str,
        duration: float,
        *,
        attempts: int,
        message_type: str | None,
        message_id: int | None,
        error: BaseException | None,
    ) -> None:
        """Record the outcome: the span's attributes, the counters, the duration.

        Called once, in the task that started the call.
        """
        if self._token is not None:
            _detach(self._token)
        try:
            self._measure(outcome, duration, message_type)
        finally:
            self._end_span(outcome, attempts, message_id, error)

    @_guarded()
    def _measure(self, outcome: str, duration: float, message_type: str | None) -> None:
        instruments = self._instrumentation.instruments
        if message_type is not None:
            instruments.messages.add(
                1, {"viber.outcome": outcome, "viber.message_type": message_type}
            )
        instruments.duration.record(
            duration, {"viber.operation": self._operation, "viber.outcome": outcome}
        )

    @_guarded()
    def _end_span(
        self,
        outcome: str,
        attempts: int,
        message_id: int | None,
        error: BaseException | None,
    ) -> None:
        span = self.span
        if span.is_recording():
            span.set_attribute("viber.outcome", outcome)
            span.set_attribute("viber.attempts", attempts)
            span.set_attribute("viber.retries", max(attempts - 1, 0))
            if message_id is not None:
                span.set_attribute("viber.message_id", message_id)
            if error is not None:
                span.set_attribute("error.type", _error_type(error))
                span.set_status(trace.StatusCode.ERROR, type(error).__name__)
        span.end()


class AttemptSpan:
    """One HTTP attempt's client span."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    @_guarded()
    def end(self, status: int | None, error: BaseException | None) -> None:
        """End it with the status received, or the failure's class."""
        span = self.span
        if span.is_recording():
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            failed_status = status is not None and status >= 400
            if error is not None or failed_status:
                kind = (
                    str(status)
                    if failed_status or error is None
                    else (_error_type(error))
                )
                span.set_attribute("error.type", kind)
                span.set_status(trace.StatusCode.ERROR, kind)
        span.end()


@_guarded()
def _detach(token: Any) -> None:
    otel_context.detach(token)


def type_label(code: MessageType) -> str:
    """A message type as metrics and spans name it (``"text"``, ...)."""
    return code.name.lower()


def _error_type(error: BaseException) -> str:
    # A class name, never the message (an error may quote the request).
    return type(error).__qualname__


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
