"""The spans: `CallSpan` per call, `AttemptSpan` per HTTP attempt.

Apart from one client's `Instrumentation` (``_telemetry``), which starts
the call spans: what a span needs of it is only its `Traced` part, so this
module needs nothing above ``_instruments``. What a span may record, and
what never, is in ``_telemetry``'s docstring.

Imported only when ``opentelemetry`` is, and used only when it is installed
(`instrument` returns None first).
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from ._instruments import Instruments
from ._otelguard import guarded


try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - the [otel] extra is not installed
    pass

__all__ = ["AttemptSpan", "CallSpan"]


class Traced(Protocol):
    """What a call's span uses of its client's `Instrumentation`."""

    @property
    def http_spans(self) -> bool:
        """Whether each attempt gets a client span."""

    @property
    def tracer(self) -> Any:
        """The client's tracer."""

    @property
    def http_attributes(self) -> dict[str, Any]:
        """The attributes of every attempt's span."""

    @property
    def instruments(self) -> Instruments:
        """The instruments the call's outcome is recorded in."""

    def url_full(self, url: httpx.URL) -> str:
        """*url* without credentials, query or fragment."""


class CallSpan:
    """One call: its span, its attempts' spans, and what came of it."""

    __slots__ = ("_instrumentation", "_operation", "_token", "span")

    def __init__(
        self, instrumentation: Traced, span: Any, operation: str, token: Any
    ) -> None:
        self._instrumentation = instrumentation
        self._operation = operation
        self._token = token
        self.span = span

    @guarded()
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

    @guarded()
    def _measure(self, outcome: str, duration: float, message_type: str | None) -> None:
        instruments = self._instrumentation.instruments
        if message_type is not None:
            instruments.messages.add(
                1, {"viber.outcome": outcome, "viber.message_type": message_type}
            )
        instruments.duration.record(
            duration, {"viber.operation": self._operation, "viber.outcome": outcome}
        )

    @guarded()
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

    @guarded()
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


@guarded()
def _detach(token: Any) -> None:
    otel_context.detach(token)


def _error_type(error: BaseException) -> str:
    # A class name, never the message (an error may quote the request).
    return type(error).__qualname__
