"""What every telemetry module shares: the scope's name, and `guarded`.

Below ``_instruments``, ``_spans`` and ``_telemetry``, and needing nothing
of OpenTelemetry itself: telemetry never changes a call's outcome, whichever
of those modules the failing OpenTelemetry call is in.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast


__all__ = ["SCOPE", "guarded"]

# The instrumentation scope of the tracer and the meter.
SCOPE = "decisiontelecom_viber"

logger = logging.getLogger("decisiontelecom_viber")

Fn = TypeVar("Fn", bound=Callable[..., Any])


def guarded(default: Any = None) -> Callable[[Fn], Fn]:
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
