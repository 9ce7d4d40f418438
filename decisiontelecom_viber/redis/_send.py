"""The send flow of `SendOnceGuard`: claim, mark, send, settle.

`SendFlow.send` claims the dedupe key (one script call), sends through the
client's public `send_message` with a before-write hook (`_Mark`) that
marks the record ``writing`` immediately before the request is written, and
settles the record (``_settle``) with what became of the send: its message
ID, ``unknown`` when the outcome may be a send, released when it provably
failed. ``_guard`` tells the whole story.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import attrs

from .._context import before_write
from .._errors import WriteRefusedError
from .._limits import Priority
from .._models import ViberMessage
from .._outcomes import SendOutcome, send_outcome
from ._errors import (
    RedisUnavailableError,
    SendInProgressError,
    SendUnresolvedError,
    redis_cause,
)
from ._records import SendRecord, SendState
from ._scripts import GuardScripts
from ._settle import Settler


if TYPE_CHECKING:
    from .._client import AsyncViberClient


__all__ = ["SendFlow"]

logger = logging.getLogger("decisiontelecom_viber")


class SendFlow:
    """Guarded sends with one guard's settings.

    Args:
        scripts: The guard's Redis calls.
        settler: Settles the records.
        ttl: Seconds a record is kept.
        lease: Seconds a claim counts as in progress.
        give_up_after: Seconds after which an unresolved record is free.
        sign_reference: Sign the dedupe key into the callback URL.
    """

    __slots__ = (
        "_give_up_after",
        "_lease",
        "_scripts",
        "_settler",
        "_sign_reference",
        "_ttl",
    )

    def __init__(
        self,
        scripts: GuardScripts,
        settler: Settler,
        *,
        ttl: float,
        lease: float,
        give_up_after: float | None,
        sign_reference: bool,
    ) -> None:
        self._scripts = scripts
        self._settler = settler
        self._ttl = ttl
        self._lease = lease
        self._give_up_after = give_up_after
        self._sign_reference = sign_reference

    async def send(
        self,
        client: AsyncViberClient,
        message: ViberMessage,
        dedupe_key: str,
        redis_key: str,
        priority: Priority,
    ) -> tuple[int, bool]:
        """Claim, send, settle; return (message ID, whether it was replayed).

        Raises:
            SendInProgressError: Another attempt holds the key.
            SendUnresolvedError: An earlier attempt's outcome is unknown.
            RedisUnavailableError: Redis could not be reached; nothing was sent.
            Exception: What the send raised (the record says what it means).
        """
        owner = secrets.token_hex(8)
        try:
            verdict, data = await self._scripts.claim(
                redis_key,
                owner=owner,
                lease=self._lease,
                ttl=self._ttl,
                give_up_after=self._give_up_after,
            )
        except RedisUnavailableError:
            # The claim may have landed with its reply lost: nothing was
            # sent, so release it (by owner) rather than strand the key.
            await self._settler.settle(redis_key, owner, "release")
            raise
        except BaseException:
            # Cancelled mid-claim: it may have landed, and nothing was sent.
            self._settler.settle_soon(redis_key, owner, "release")
            raise
        if verdict != "claimed":
            if data is None:  # pragma: no cover - a claim either wins or finds one
                raise RuntimeError("the claim script returned no record")
            record = SendRecord.from_stored(dedupe_key, data)
            if record.state is SendState.SENT and record.message_id is not None:
                return record.message_id, True
            if record.state is SendState.PENDING:
                raise SendInProgressError(dedupe_key, record)
            raise SendUnresolvedError(dedupe_key, record)
        if self._sign_reference and message.callback_url is None:
            url = client.callback_url_for(dedupe_key)
            if url is not None:
                message = attrs.evolve(message, callback_url=url)
        mark = _Mark(self._scripts, redis_key, owner, self._ttl)
        token = before_write.set(mark)
        try:
            message_id = await client.send_message(message, priority=priority)
        except Exception as error:
            if mark.taken_over is not None:
                # It waited past its lease; another attempt has the key now
                # and may be sending. This one wrote nothing.
                record = SendRecord.from_stored(dedupe_key, mark.taken_over)
                raise SendInProgressError(dedupe_key, record) from None
            if send_outcome(error) is SendOutcome.FAILED:
                # Provably not sent (refused, never written): a retry may send.
                await self._settler.settle(redis_key, owner, "release")
            else:
                await self._settler.settle(
                    redis_key, owner, "unknown", reason=_unknown_reason(error)
                )
            raise
        except BaseException:
            if mark.done:
                # Cancelled: the request may be on its way.
                self._settler.settle_soon(
                    redis_key, owner, "unknown", reason="the send was cancelled"
                )
            else:
                # Cancelled before its mark returned: nothing was written.
                self._settler.settle_soon(redis_key, owner, "release")
            raise
        finally:
            before_write.reset(token)
        await self._settler.settle(redis_key, owner, "sent", message_id=message_id)
        return message_id, False


class _Mark:
    """The before-write hook of one guarded send: marks its record "writing".

    Called before every attempt's write; marks once. Raising stops the
    write (nothing is sent).
    """

    __slots__ = ("_owner", "_redis_key", "_scripts", "_ttl", "done", "taken_over")

    def __init__(
        self, scripts: GuardScripts, redis_key: str, owner: str, ttl: float
    ) -> None:
        self._scripts = scripts
        self._ttl = ttl
        self._redis_key = redis_key
        self._owner = owner
        self.done = False
        # The record of the attempt that took the key over, if one did.
        self.taken_over: dict[str, Any] | None = None

    async def __call__(self) -> None:
        if self.done:
            return
        # (Redis unavailable: `RedisUnavailableError` stops the write.)
        verdict, data = await self._scripts.mark(
            self._redis_key, owner=self._owner, ttl=self._ttl
        )
        if verdict == "not_owner":
            states = {state.value for state in SendState}
            if data is not None and data.get("state") in states:
                self.taken_over = data
            raise WriteRefusedError(
                "another attempt took the dedupe key over; nothing was sent"
            )
        if verdict == "recreated":
            logger.warning(
                "the record of %s had vanished before its request was written "
                "(Redis restarted or failed over?); written again",
                self._redis_key,
            )
        self.done = True

    async def not_written(self) -> None:
        """The attempt was refused for sure, a retry waits: claimed again."""
        if not self.done:
            return
        try:
            verdict, _ = await self._scripts.mark(
                self._redis_key, owner=self._owner, ttl=self._ttl, unmark=True
            )
        except RedisUnavailableError as error:
            # Best effort, as the pipeline's own handling of a failing hook
            # (whose debug line this is): the mark stays, in doubt, safely.
            logger.debug(
                "could not record that a refused request is not on the wire: %s",
                redis_cause(error),
            )
            return
        if verdict == "ok":
            self.done = False  # the retry marks again


def _unknown_reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return f"outcome unknown: {reason}"
    return f"the send failed unexpectedly ({type(error).__name__})"
