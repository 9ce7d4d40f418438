"""Scale out through Redis: one account's rate limit and send-once records, shared.

- `RedisLimiter`: a `Limiter` whose rate every worker using the same Redis
  key shares (an atomic Lua GCRA on Redis's clock); a 429 seen by one worker
  pauses and slows all of them.
- `SendOnceGuard`: an idempotency key per message (``dedupe_key``), so that a
  retried job never sends twice, even after a worker crash; its
  `CallbackReconciler` settles sends in doubt from their signed callbacks.

Needs redis-py's asyncio client: ``pip install 'decisiontelecom-viber[redis]'``.
See docs/scaling.md.
"""

from __future__ import annotations

from .._public import publish as _publish


try:
    import redis.asyncio  # noqa: F401 - fail here, with the hint, if missing
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "decisiontelecom_viber.redis needs redis-py (redis>=5): "
        "pip install 'decisiontelecom-viber[redis]'"
    ) from error

from ._errors import PossibleDuplicateError as PossibleDuplicateError
from ._errors import RedisUnavailableError as RedisUnavailableError
from ._errors import SendInProgressError as SendInProgressError
from ._errors import SendUnresolvedError as SendUnresolvedError
from ._guard import SendOnceGuard as SendOnceGuard
from ._limiter import RedisLimiter as RedisLimiter
from ._limiter import SharedRateState as SharedRateState
from ._reconcile import CallbackReconciler as CallbackReconciler
from ._reconcile import ReconcileStats as ReconcileStats
from ._records import SendOnceResult as SendOnceResult
from ._records import SendRecord as SendRecord
from ._records import SendState as SendState


__all__ = [
    "CallbackReconciler",
    "PossibleDuplicateError",
    "ReconcileStats",
    "RedisLimiter",
    "RedisUnavailableError",
    "SendInProgressError",
    "SendOnceGuard",
    "SendOnceResult",
    "SendRecord",
    "SendState",
    "SendUnresolvedError",
    "SharedRateState",
]

_publish(globals(), __all__, __name__)
