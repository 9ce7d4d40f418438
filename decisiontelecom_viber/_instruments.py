"""The client's OpenTelemetry instruments, one set per meter provider.

`Instruments` holds the counters, the histograms and the limiter's rate
gauge; `instruments_for` makes them once per provider. Apart from the
tracing (``_spans``) and from one client's `Instrumentation` (``_telemetry``),
which records through them: what the gauge observes of a client is only its
`Observed` part, so this module needs nothing above it.

Imported only when ``opentelemetry`` is, and used only when it is installed
(`instrument` returns None first).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ._otelguard import SCOPE
from ._version import package_version


# (Without the [otel] extra nothing here runs: `instrument` returns None.)
with contextlib.suppress(ImportError):
    from opentelemetry import metrics as otel_metrics

__all__ = ["DURATION_BOUNDS", "Instruments", "instruments_for"]

# Seconds: OpenTelemetry's advice for HTTP client durations, longer at the
# top (a send waiting behind a campaign's rate limit).
DURATION_BOUNDS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip


class Observed(Protocol):
    """What the rate gauge reads of a live client's `Instrumentation`."""

    @property
    def current_rate(self) -> Callable[[], Any]:
        """A function: the limiter's current rate (None: not limited)."""

    @property
    def client_attributes(self) -> dict[str, Any]:
        """The attributes of the client's measurements."""


class Instruments:
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
        self.live: weakref.WeakSet[Observed] = weakref.WeakSet()
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
_INSTRUMENTS: weakref.WeakKeyDictionary[Any, Instruments] = weakref.WeakKeyDictionary()
_GLOBAL: list[Instruments] = []
_INSTRUMENTS_LOCK = threading.Lock()


def instruments_for(provider: Any) -> Instruments:
    with _INSTRUMENTS_LOCK:
        held = _GLOBAL[0] if provider is None and _GLOBAL else None
        if provider is not None:
            held = _INSTRUMENTS.get(provider)
        if held is None:
            meter = otel_metrics.get_meter(
                SCOPE, package_version(), meter_provider=provider
            )
            held = Instruments(meter)
            if provider is None:
                _GLOBAL.append(held)
            else:
                _INSTRUMENTS[provider] = held
        return held
