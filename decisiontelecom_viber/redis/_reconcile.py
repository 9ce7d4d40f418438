"""`CallbackReconciler`: guarded sends in doubt, settled by the API's own callbacks.

The API has no idempotency key and no lookup by client reference, so a send
whose answer was lost stays "unknown". But every message the API accepts
with a ``callback_url`` gets status callbacks, and `SendOnceGuard` signs the
dedupe key into that URL as its reference (``ref``). A status callback whose
token matched (`CallbackReceiver` with the secret) and whose reference is a
dedupe key is proof that the message was accepted, with its ``message_id``:
the reconciler settles the key's pending or unknown record as sent.

Only that evidence counts. An unsigned or unauthenticated callback, one
without a reference, or one for a key with no record settles nothing; a
record already sent with another ID is a conflict, logged and never
overwritten. A message the API never accepted never gets a callback: its
record stays unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

from .._callbacks import StatusCallback


if TYPE_CHECKING:
    from ._scripts import GuardScripts


__all__ = ["CallbackReconciler", "ReconcileStats", "StatusHandler"]

logger = logging.getLogger("decisiontelecom_viber")

StatusHandler = Callable[[StatusCallback], Awaitable[None]]


@attrs.frozen
class ReconcileStats:
    """What a `CallbackReconciler` did with the callbacks it was given.

    Attributes:
        settled: Records in doubt (pending or unknown) settled as sent.
        confirmed: Callbacks for records already sent with the same ID.
        conflicts: Callbacks naming another ID than a sent record's.
        ignored: Callbacks that prove nothing (not authenticated, no
            reference) or name a key without a record.
    """

    settled: int = 0
    confirmed: int = 0
    conflicts: int = 0
    ignored: int = 0


class CallbackReconciler:
    """A status-callback handler settling guarded sends (`SendOnceGuard.reconciler`).

    Plug it into a receiver that checks tokens::

        receiver = CallbackReceiver(on_status=guard.reconciler(), secret=SECRET)

    Redis unavailable raises `RedisUnavailableError`, so the receiver answers
    500 and the API delivers the callback again.
    """

    __slots__ = ("_key_of", "_scripts", "_stats", "_then", "_ttl")

    def __init__(
        self,
        scripts: GuardScripts,
        key_of: Callable[[str], str],
        ttl: float,
        then: StatusHandler | None = None,
    ) -> None:
        self._scripts = scripts
        self._key_of = key_of
        self._ttl = ttl
        self._then = then
        self._stats = ReconcileStats()

    @property
    def stats(self) -> ReconcileStats:
        """A snapshot of the counters."""
        return self._stats

    def _count(self, name: str) -> None:
        self._stats = attrs.evolve(
            self._stats, **{name: getattr(self._stats, name) + 1}
        )

    async def __call__(self, event: StatusCallback) -> None:
        """Settle the record *event* proves sent (if any), then call *then*."""
        await self._reconcile(event)
        if self._then is not None:
            await self._then(event)

    async def _reconcile(self, event: StatusCallback) -> None:
        reference = event.reference
        if not event.authenticated:
            self._count("ignored")
            logger.debug("status callback not authenticated: settles nothing")
            return
        if not reference:
            self._count("ignored")
            return
        redis_key = self._key_of(reference)
        # (Redis unavailable: `RedisUnavailableError`, so that the receiver
        # answers 500 and the API delivers the callback again.)
        verdict, data = await self._scripts.settle(
            redis_key,
            owner="",
            action="reconcile",
            message_id=event.message_id,
            ttl=self._ttl,
            operation="reconcile",
        )
        if verdict == "settled":
            self._count("settled")
            logger.info(
                "%s settled as sent (message %d) by its status callback",
                redis_key,
                event.message_id,
            )
        elif verdict == "conflict":
            self._count("conflicts")
            logger.error(
                "a signed status callback says %s was sent as message %d, but "
                "its record says %s: not changed; check for a second send",
                redis_key,
                event.message_id,
                (data or {}).get("message_id"),
            )
        elif verdict == "ok":
            self._count("confirmed")
        else:
            self._count("ignored")
            logger.debug("status callback for %s, which has no record", redis_key)
