"""Settling guarded sends: the record says what became of each, come what may.

Once a send's outcome is known (its message ID, a definite failure, an
unknown outcome), `Settler` writes it to the key's record in a task of its
own: the caller's cancellation cannot stop it, and a Redis that cannot be
reached is tried again in the background, with growing waits, for 10
minutes (or the lease, if longer). Failures are logged, never raised over
the send's own result; `SendOnceGuard.aclose` waits for what is left.
"""

from __future__ import annotations

import asyncio
import logging

from ._errors import RedisUnavailableError, redis_cause
from ._scripts import GuardScripts


__all__ = ["Settler"]

logger = logging.getLogger("decisiontelecom_viber")

# A settle that cannot reach Redis is tried again in the background, waits
# doubling from _RETRY_FIRST to _RETRY_MAX seconds, for _RETRY_FOR seconds
# (or the lease, if longer): its outcome is known, and the key would read
# as in doubt until then.
_RETRY_FIRST = 0.25
_RETRY_MAX = 15.0
_RETRY_FOR = 600.0
_TOMBSTONE = 1800.0

# How a settle action reads in logs.
_OUTCOMES = {
    "sent": "the message was sent as {message_id}",
    "unknown": "the send's outcome is unknown",
    "release": "the send failed (nothing was sent)",
}


class Settler:
    """Settles claims in tasks of their own, tracked until they end.

    Args:
        scripts: The guard's Redis calls.
        ttl: Seconds a settled record is kept.
        lease: The claims' lease (settles are retried at least this long).
    """

    __slots__ = ("_background", "_lease", "_scripts", "_tombstone", "_ttl")

    def __init__(self, scripts: GuardScripts, *, ttl: float, lease: float) -> None:
        self._scripts = scripts
        self._ttl = ttl
        self._lease = lease
        # Releases leave a tombstone this long: a copy of a claim delivered
        # late (a socket's last bytes after a partition heals) cannot land
        # after it. TCP gives up long before.
        self._tombstone = max(lease, _TOMBSTONE)
        self._background: set[asyncio.Task[bool]] = set()

    async def settle(
        self,
        redis_key: str,
        owner: str,
        action: str,
        *,
        message_id: int | None = None,
        reason: str = "",
    ) -> None:
        """Settle a claim: wait for the first try, let the rest run on its own.

        The settle runs in a task of its own (tracked: `aclose` waits for
        it), so the caller's cancellation cannot stop it, and a Redis that
        cannot be reached is tried again in the background.
        """
        first_try = self.settle_soon(
            redis_key, owner, action, message_id=message_id, reason=reason
        )
        await first_try.wait()

    def settle_soon(
        self,
        redis_key: str,
        owner: str,
        action: str,
        *,
        message_id: int | None = None,
        reason: str = "",
    ) -> asyncio.Event:
        """Settle a claim in a task of its own; return an event set after one try."""
        first_try = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            self._settle_now(
                redis_key,
                owner,
                action,
                message_id=message_id,
                reason=reason,
                first_try=first_try,
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return first_try

    async def aclose(self, timeout: float | None = None) -> None:
        """Wait for the settles still running; cancel them after *timeout*."""
        if not self._background:
            return
        pending = list(self._background)
        _, left = await asyncio.wait(pending, timeout=timeout)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)

    async def _settle_now(
        self,
        redis_key: str,
        owner: str,
        action: str,
        *,
        message_id: int | None,
        reason: str,
        first_try: asyncio.Event,
    ) -> bool:
        """Settle a claim; failures are logged, never raised over the send's result.

        A Redis that cannot be reached is tried again with growing waits, for
        10 minutes (or the lease, if longer). Returns whether it settled.
        """
        outcome = _OUTCOMES[action].format(message_id=message_id)
        wait, waited = _RETRY_FIRST, 0.0
        try:
            while True:
                try:
                    verdict, _ = await self._scripts.settle(
                        redis_key,
                        owner=owner,
                        action=action,
                        message_id=message_id,
                        reason=reason,
                        ttl=self._ttl,
                        tombstone=self._tombstone,
                    )
                    break
                except RedisUnavailableError as unavailable:
                    error = redis_cause(unavailable)
                    if not first_try.is_set():
                        first_try.set()
                        logger.warning(
                            "could not record in Redis that %s (%s: %s); "
                            "retrying in the background",
                            outcome,
                            type(error).__name__,
                            error,
                        )
                    if waited + wait <= max(self._lease, _RETRY_FOR):
                        await asyncio.sleep(wait)
                        waited, wait = waited + wait, min(wait * 2, _RETRY_MAX)
                        continue
                    logger.error(  # noqa: TRY400 - the cause is in the message
                        "could not record in Redis that %s (%s: %s): %s stays "
                        "pending, then unresolved, until you resolve() or "
                        "forget() it",
                        outcome,
                        type(error).__name__,
                        error,
                        redis_key,
                    )
                    return False
        except asyncio.CancelledError:
            logger.error(  # noqa: TRY400 - no traceback: a shutdown, not a bug
                "gave up recording in Redis that %s: %s stays pending, then "
                "unresolved, until you resolve() or forget() it",
                outcome,
                redis_key,
            )
            raise
        finally:
            first_try.set()
        if verdict == "recreated":
            logger.warning(
                "the record of %s had vanished while its send was in flight "
                "(Redis restarted or failed over?); written again: %s",
                redis_key,
                outcome,
            )
        elif verdict != "ok" and action != "release":
            # (Nothing was sent on a release: whoever holds the key now is right.)
            logger.error(
                "another attempt holds %s now (its record was forgotten, "
                "resolved or lost while this send was in flight), so it does "
                "not say that %s: check for a second send",
                redis_key,
                outcome,
            )
        return True
