"""Which fault a request gets, and how long its answer takes: pure draws."""

from __future__ import annotations

import math
import random

from ._config import SandboxConfig


__all__ = ["FAULT_STATUS", "pick_fault", "sample_latency"]

FAULT_ORDER = (
    "fault_500",
    "fault_502_html",
    "fault_disconnect_before",
    "fault_disconnect_after",
    "fault_truncated_body",
)
# Faults that strike before the message is accepted, with the status they
# answer (None: the connection is dropped).
FAULT_STATUS: dict[str, int | None] = {
    "fault_500": 500,
    "fault_502_html": 502,
    "fault_disconnect_before": None,
}


def pick_fault(config: SandboxConfig, rng: random.Random) -> str | None:
    """Draw at most one fault; the probabilities are exclusive."""
    roll = rng.random()
    for name in FAULT_ORDER:
        probability: float = getattr(config, name)
        if roll < probability:
            return name
        roll -= probability
    return None


def sample_latency(config: SandboxConfig, rng: random.Random) -> tuple[float, bool]:
    """Draw an answer delay in seconds, and whether it is a spike."""
    spike = config.latency_spike_probability
    if spike and rng.random() < spike:
        return config.latency_spike, True
    base = config.latency
    if base <= 0:
        return 0.0, False
    kind = config.latency_distribution
    if kind == "uniform":
        return rng.uniform(0, 2 * base), False
    if kind == "exponential":
        return rng.expovariate(1 / base), False
    if kind == "lognormal":
        return rng.lognormvariate(math.log(base), 0.5), False
    return base, False
