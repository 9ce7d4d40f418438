"""The Lua scripts' sources (``lua/*.lua``), and the constants they are given.

The scripts ship as package data and are read with `importlib.resources`, so
they load from wherever the package is installed (a wheel, a zip). Each
script is its prelude followed by its body: Redis runs one source per call.

The shared limiter re-implements, in Lua, the rate decisions of the
in-process `AdaptiveLimiter` (``_ratecontrol``, ``_ratelimit``). Its numbers
are not retyped in Lua: `LIMITER_TUNING` imports them from the modules that
name them and every limiter call passes them (``ARGV[10]``, a JSON object),
next to the few the distributed version alone needs.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

# The in-process limiter's own numbers (see `_ratecontrol` for what each
# does); the shared one takes the same decisions with them.
from .._ratecontrol import (
    _BLIND_DECREASE,
    _CLIMB,
    _DECREASE,
    _INTERVAL,
    _PROBE,
    _QUIET,
    _RAMP,
    _RAMP_INTERVAL,
    _SEARCH,
)
from .._ratelimit import _MIN_SAMPLE_SECONDS


__all__ = ["LIMITER_TUNING", "script_source"]

# -- the Redis-only numbers -----------------------------------------------------

# Bounds of the shared rate (requests per second): a configured or measured
# rate never leaves them, whatever the feedback.
_MAX_RATE = 1_000_000.0
_MIN_RATE = 0.01
# A stopped worker's registration of high-priority callers lapses this long
# after its last call.
_HIGH_GRACE = 0.5
# After the first 429 of slow start, the rate is held this long without a
# 429 (the measurement would have come) before slow start resumes.
_HOLD = 2 * _MIN_SAMPLE_SECONDS
# Slow start doubles the shared rate at most every _RAMP_STEP while callers
# wait: slower than one process alone does (_RAMP_INTERVAL), since 429s reach
# every worker later than they reach one.
_RAMP_STEP = 2 * _RAMP_INTERVAL
# After the first 429 of slow start, each later one (still unmeasured) cuts
# the held rate by a quarter only: the limit is near.
_NEAR_DECREASE = 0.75
# A worker held back for another's high-priority callers asks again this
# share of the horizon after they can have their slots.
_HELD_BACK_RETRY = 0.25

#: The constants of the limiter scripts, by the names the Lua reads
#: (``K.name``), as the JSON text passed as ``ARGV[10]``. Python's ``repr``
#: of a float (what `json` writes) reads back as the same double.
LIMITER_TUNING = json.dumps(
    {
        "max_rate": _MAX_RATE,
        "min_rate": _MIN_RATE,
        "min_sample": _MIN_SAMPLE_SECONDS,
        "high_grace": _HIGH_GRACE,
        "hold": _HOLD,
        "ramp_step": _RAMP_STEP,
        "interval": _INTERVAL,
        "ramp": _RAMP,
        "search": _SEARCH,
        "climb": _CLIMB,
        "probe": _PROBE,
        "quiet": _QUIET,
        "near_decrease": _NEAR_DECREASE,
        "blind_decrease": _BLIND_DECREASE,
        "decrease": _DECREASE,
        "held_back_retry": _HELD_BACK_RETRY,
    },
    sort_keys=True,
)

# Which prelude each script runs after.
_PRELUDES = {
    "acquire": "limiter_prelude",
    "flush": "limiter_prelude",
    "report": "limiter_prelude",
    "claim": "guard_prelude",
    "mark": "guard_prelude",
    "settle": "guard_prelude",
}


# The package holding the ``lua`` folder (this module's).
_PACKAGE = __name__.rpartition(".")[0]


def _read(name: str) -> str:
    source = resources.files(_PACKAGE).joinpath("lua", f"{name}.lua")
    return source.read_text(encoding="utf-8")


@functools.cache
def script_source(name: str) -> str:
    """The Lua source Redis runs for script *name* (its prelude, then its body).

    Args:
        name: ``acquire``, ``flush``, ``report`` (the limiter's), ``claim``,
            ``mark`` or ``settle`` (the guard's).

    Raises:
        KeyError: No script of that name.
    """
    return _read(_PRELUDES[name]) + "\n" + _read(name)
