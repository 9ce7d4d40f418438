"""`SendOnceGuard`: one send per dedupe key, across retries, workers and crashes.

The API has no idempotency key, so a job retried after a crash, a timeout or
a redelivery by the queue could send the same message twice. The guard
records each send in Redis under the caller's *dedupe key*:

1. **Claim.** ``SET key {pending, claimed, owner, lease} NX PX ttl`` (in a
   script), with a random owner token. If the key already exists, nothing
   is sent: a finished send returns its message ID; an unfinished one
   raises `SendInProgressError`; one whose outcome is unknown raises
   `SendUnresolvedError`. The claim is idempotent for its owner, so a
   command retried by redis-py finds its own claim and goes on; a claim
   whose reply is lost is released again (by owner) before
   `RedisUnavailableError` is raised: nothing was sent.
2. **Send** through the client's public `send_message` (its rate limiter and
   retry policy apply). Immediately before its request is first written
   (after the limiter's wait), the record is **marked** ``writing`` (the
   pipeline's `before_write` hook); a mark that fails writes nothing.
3. **Settle** (only if this attempt still owns the key): the message ID once
   known; ``unknown`` when the outcome may be a send (`SendOutcome.UNKNOWN`:
   an `OutcomeUnknownError`, an unexpected exception, a cancellation after
   the mark); deleted only when the send provably failed
   (`SendOutcome.FAILED`), so that a retry may send.

A worker killed between 1 and 3 leaves its keys pending. They read as in
progress until their *lease* runs out. Then a claim never marked (its
worker died waiting for the limiter) is free: nothing was written. A marked
one is unresolved: never resent without evidence — a signed status callback
through `SendOnceGuard.reconciler` (which settles it as sent, with its
message ID), a person (`SendOnceGuard.resolve`, `SendOnceGuard.forget`), or
the caller's explicit ``give_up_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from .._bulk import ProgressCallback, ResultStream
from .._checks import check_positive
from .._constants import DEFAULT_CONCURRENCY
from .._errors import ConfigurationError, ValidationError
from .._limits import Priority, check_priority
from .._models import ViberMessage
from .._options import coerce_message
from .._outcomes import outcome_label
from ._reconcile import CallbackReconciler, StatusHandler
from ._records import SendOnceResult, SendRecord
from ._scripts import GuardScripts
from ._send import SendFlow
from ._settle import Settler


if TYPE_CHECKING:
    from .._client import AsyncViberClient, MessageLike


__all__ = ["SendOnceGuard"]

DEFAULT_NAMESPACE = "decisiontelecom_viber:sent"
# The API keeps message statuses for 5 days: past that, a message ID cannot be
# checked anyway.
DEFAULT_TTL = 5 * 86400.0
DEFAULT_LEASE = 120.0


def _check_key(dedupe_key: object) -> str:
    if not isinstance(dedupe_key, str) or not dedupe_key:
        raise ValidationError("dedupe_key", "must be a non-empty string")
    try:
        dedupe_key.encode()
    except UnicodeEncodeError:  # (a lone surrogate: Redis cannot store it)
        raise ValidationError("dedupe_key", "must be valid Unicode") from None
    return dedupe_key


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _unpack(item: object) -> tuple[object, object]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ValidationError("item", "must be a (dedupe_key, message) pair")
    return item[0], item[1]


class SendOnceGuard:
    """Send each message at most once per dedupe key, whichever worker tries.

    ::

        guard = SendOnceGuard(redis)
        message_id = await guard.send(client, message, dedupe_key=f"otp:{order_id}")

    Pick a dedupe key that names the message in your domain (an order and
    what it is about), not the job: a retried or redelivered job must find
    the same key. Redis unavailable means `RedisUnavailableError` before
    anything is sent: without its record the guard cannot promise a single
    send, so it always fails closed.

    The client must not retry unknown outcomes
    (``RetryPolicy.retry_unknown_outcome``, off by default): after such a
    retry, a definite failure would not prove that nothing was sent.

    Args:
        redis: A `redis.asyncio.Redis` client (not closed by the guard).
        namespace: Prefix of the Redis keys (``{namespace}:{dedupe_key}``).
        ttl: Seconds a record is kept, from its last change (5 days, the
            API's status retention, by default). A key reused later sends
            again.
        lease: Seconds a claiming attempt counts as in progress. After that
            an unfinished record is free again if nothing was written yet
            (its worker died waiting), else unresolved. Keep it above your
            longest send, limiter waits and retries included: an attempt
            still waiting past its lease finds the key taken over and sends
            nothing (`SendInProgressError`).
        sign_reference: Give each guarded message the client's callback URL
            with the dedupe key as its signed reference (``ref``), when the
            client has a ``callback_url`` and a ``callback_secret`` and the
            message no URL of its own: the status callbacks then prove the
            send, for `reconciler`.
        give_up_after: Seconds after which an unresolved record (no callback
            settled it) is free again, so the next attempt sends: accept
            this only if a duplicate is better than no message. None (the
            default) never gives up.

    Raises:
        ConfigurationError: An invalid setting.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float = DEFAULT_TTL,
        lease: float = DEFAULT_LEASE,
        sign_reference: bool = True,
        give_up_after: float | None = None,
    ) -> None:
        if not _is_text(namespace):
            raise ConfigurationError(
                "SendOnceGuard namespace must be a non-empty string"
            )
        self._namespace = namespace
        self._ttl = check_positive("SendOnceGuard ttl", ttl)
        self._lease = check_positive("SendOnceGuard lease", lease)
        if self._lease >= self._ttl:
            raise ConfigurationError("SendOnceGuard lease must be shorter than ttl")
        if not isinstance(sign_reference, bool):
            raise ConfigurationError("SendOnceGuard sign_reference must be a bool")
        self._give_up_after = (
            None
            if give_up_after is None
            else check_positive("SendOnceGuard give_up_after", give_up_after)
        )
        self._scripts = GuardScripts(redis)
        self._settler = Settler(self._scripts, ttl=self._ttl, lease=self._lease)
        self._flow = SendFlow(
            self._scripts,
            self._settler,
            ttl=self._ttl,
            lease=self._lease,
            give_up_after=self._give_up_after,
            sign_reference=sign_reference,
        )

    def __repr__(self) -> str:
        return f"<SendOnceGuard namespace={self._namespace!r}>"

    def record_key(self, dedupe_key: str) -> str:
        """The Redis key holding *dedupe_key*'s record."""
        return f"{self._namespace}:{_check_key(dedupe_key)}"

    # -- sending ------------------------------------------------------------------

    async def send(
        self,
        client: AsyncViberClient,
        message: MessageLike,
        *,
        dedupe_key: str,
        priority: Priority = "high",
    ) -> int:
        """Send *message* unless a send with *dedupe_key* was made before.

        Args:
            client: The client to send with.
            message: A `ViberMessage`, or a mapping of its field names.
            dedupe_key: Names this message: the same key is never sent twice.
            priority: Its lane at the client's rate limiter (as in
                `AsyncViberClient.send_message`).

        Returns:
            The message ID: of this send, or of the earlier one.

        Raises:
            SendInProgressError: Another attempt holds the key and may still
                be sending; nothing was sent. Try again later.
            SendUnresolvedError: An earlier attempt's outcome is unknown;
                nothing was sent. Reconcile, then `resolve` or `forget`.
            RedisUnavailableError: Redis could not be reached; nothing was sent.
            OutcomeUnknownError: This send's outcome is unknown (the key now
                says so).
            ValidationError: The message or the key is invalid; nothing was
                sent.
            ViberError: The send failed for sure (the key is free again).
        """
        key = _check_key(dedupe_key)
        priority = check_priority(priority)
        message_id, _ = await self._send(client, coerce_message(message), key, priority)
        return message_id

    def send_messages(
        self,
        client: AsyncViberClient,
        items: Iterable[tuple[str, MessageLike]]
        | AsyncIterable[tuple[str, MessageLike]],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        priority: Priority = "normal",
    ) -> ResultStream[SendOnceResult]:
        """Send many ``(dedupe_key, message)`` pairs; yield one result per pair.

        The same machinery as `AsyncViberClient.send_messages` (lazy input,
        bounded concurrency, the client's rate limiter, a summary), each
        item going through `send`. Nothing ends the batch: every failure,
        including `PossibleDuplicateError` and `RedisUnavailableError`,
        becomes a `SendOnceResult` carrying the error. Its sends wait in the
        ``"normal"`` lane of the rate limiter unless *priority* says otherwise.

        Returns:
            An async iterator of `SendOnceResult`, also an async context manager.
        """
        self._check_client(client)
        priority = check_priority(priority)

        async def process(index: int, item: object) -> SendOnceResult:
            return await self._send_item(client, index, item, priority)

        return ResultStream(
            items,
            process,
            concurrency=concurrency,
            ordered=ordered,
            outcome=outcome_label,
            clock=client.clock,  # the client's time, for the summary
            on_progress=on_progress,
            progress_interval=progress_interval,
            name="items",
        )

    # -- reconciling --------------------------------------------------------------

    async def lookup(self, dedupe_key: str) -> SendRecord | None:
        """The record of *dedupe_key*, or None if it has none.

        Raises:
            RedisUnavailableError: Redis could not be reached.
        """
        redis_key = self.record_key(dedupe_key)
        _, data = await self._scripts.claim(
            redis_key, owner="", lease=self._lease, ttl=self._ttl, peek=True
        )
        return SendRecord.from_stored(dedupe_key, data) if data is not None else None

    async def resolve(self, dedupe_key: str, message_id: int) -> SendRecord:
        """Record that *dedupe_key* was sent as *message_id* (after checking).

        Later sends with the key return *message_id*.

        Raises:
            RedisUnavailableError: Redis could not be reached.
        """
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise ValidationError("message_id", "must be an integer")
        redis_key = self.record_key(dedupe_key)
        _, data = await self._scripts.settle(
            redis_key,
            owner="",
            action="sent",
            message_id=message_id,
            ttl=self._ttl,
            operation="resolve",
        )
        if data is None:  # pragma: no cover - the script always returns it
            raise RuntimeError("the settle script returned no record")
        return SendRecord.from_stored(dedupe_key, data)

    async def forget(self, dedupe_key: str) -> bool:
        """Delete *dedupe_key*'s record, so the next send sends (after checking).

        Returns:
            Whether there was a record.

        Raises:
            RedisUnavailableError: Redis could not be reached.
        """
        redis_key = self.record_key(dedupe_key)
        return await self._scripts.forget(redis_key)

    def reconciler(self, then: StatusHandler | None = None) -> CallbackReconciler:
        """A status-callback handler settling this guard's records in doubt.

        Give it to a `CallbackReceiver` that checks tokens (``secret=``, the
        client's ``callback_secret``)::

            receiver = CallbackReceiver(on_status=guard.reconciler(), secret=S)

        A callback whose signed reference is a dedupe key settles that key's
        pending or unknown record as sent, with the callback's message ID
        (a sent record with another ID is logged as a conflict, never
        changed). Needs the messages to carry the dedupe key as reference:
        the default (``sign_reference=True``) when the client has a callback
        URL and secret.

        Args:
            then: Your own status handler, awaited after each callback.
        """
        return CallbackReconciler(self._scripts, self.record_key, self._ttl, then)

    async def aclose(self, timeout: float | None = None) -> None:
        """Wait for records still being settled in the background.

        Records settle in the background when their send was cancelled, or
        when Redis could not be reached to settle them (a lost reply to a
        claim, an outage): the guard keeps trying for 10 minutes. Call
        this before your process exits, or those keys stay pending (then
        unresolved) although their outcome was known. The Redis client is
        not closed.

        Args:
            timeout: Seconds to wait at most; then the settles still trying
                are given up (an error is logged for each key).
        """
        await self._settler.aclose(timeout)

    # -- inside -------------------------------------------------------------------

    def _check_client(self, client: AsyncViberClient) -> None:
        if client.retry_policy.retry_unknown_outcome:
            raise ConfigurationError(
                "SendOnceGuard needs a client whose RetryPolicy does not retry "
                "unknown outcomes (retry_unknown_outcome=False)"
            )

    async def _send_item(
        self, client: AsyncViberClient, index: int, item: object, priority: Priority
    ) -> SendOnceResult:
        key: str | None = None
        try:
            raw_key, raw_message = _unpack(item)
            key = _check_key(raw_key)
            message = coerce_message(raw_message)
        except Exception as error:  # noqa: BLE001 - one result per item, always
            return SendOnceResult(index, key, item, error=error)
        try:
            message_id, replayed = await self._send(client, message, key, priority)
        except Exception as error:  # noqa: BLE001 - one result per item, always
            return SendOnceResult(index, key, message, error=error)
        return SendOnceResult(
            index, key, message, message_id=message_id, replayed=replayed
        )

    async def _send(
        self,
        client: AsyncViberClient,
        message: ViberMessage,
        dedupe_key: str,
        priority: Priority,
    ) -> tuple[int, bool]:
        """Claim, send, settle; return (message ID, whether it was replayed)."""
        self._check_client(client)
        redis_key = self.record_key(dedupe_key)
        return await self._flow.send(client, message, dedupe_key, redis_key, priority)
