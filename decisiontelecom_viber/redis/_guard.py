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

import asyncio
import enum
import logging
import secrets
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from redis.asyncio import Redis

from .._bulk import ProgressCallback, ResultStream
from .._constants import DEFAULT_CONCURRENCY
from .._context import before_write
from .._errors import ConfigurationError, ValidationError, WriteRefusedError
from .._limits import Priority, check_priority
from .._models import ViberMessage
from .._options import coerce_message
from .._outcomes import SendOutcome, send_outcome
from ._errors import RedisUnavailableError, SendInProgressError, SendUnresolvedError
from ._limiter import REDIS_ERRORS
from ._reconcile import CallbackReconciler, StatusHandler
from ._scripts import GuardScripts


if TYPE_CHECKING:
    from .._client import AsyncViberClient, MessageLike


__all__ = ["SendOnceGuard", "SendOnceResult", "SendRecord", "SendState"]

logger = logging.getLogger("decisiontelecom_viber")

DEFAULT_NAMESPACE = "decisiontelecom_viber:sent"
# The API keeps message statuses for 5 days: past that, a message ID cannot be
# checked anyway.
DEFAULT_TTL = 5 * 86400.0
DEFAULT_LEASE = 120.0
# A settle that cannot reach Redis is tried again in the background, waits
# doubling from _RETRY_FIRST to _RETRY_MAX seconds, for _RETRY_FOR seconds
# (or the lease, if longer): its outcome is known, and the key would read
# as in doubt until then.
_RETRY_FIRST = 0.25
_RETRY_MAX = 15.0
_RETRY_FOR = 600.0
_TOMBSTONE = 1800.0


class SendState(enum.Enum):
    """Where a guarded send stands."""

    PENDING = "pending"
    """Claimed by an attempt that has not finished (or whose worker died)."""
    SENT = "sent"
    """Accepted by the API; ``message_id`` is set."""
    UNKNOWN = "unknown"
    """May or may not have been sent: reconcile before sending again."""


@attrs.frozen
class SendRecord:
    """What Redis holds for one dedupe key.

    Times are unix times of the Redis server's clock.

    Attributes:
        dedupe_key: The key.
        state: The `SendState`.
        message_id: The message ID, once sent.
        claimed_at: When the key was claimed.
        updated_at: When the record last changed.
        lease_until: Until when the claiming attempt counts as in progress.
        reason: Why the outcome is unknown, if it is.
        written_at: When its request was about to be written (the mark);
            None while the claim only waited (nothing was written).
        reconciled: Settled as sent by a signed status callback.
    """

    dedupe_key: str
    state: SendState
    message_id: int | None
    claimed_at: float
    updated_at: float
    lease_until: float
    reason: str | None = None
    written_at: float | None = None
    reconciled: bool = False

    @property
    def on_the_wire(self) -> bool:
        """Whether a request may have been written (the record is in doubt)."""
        return self.written_at is not None

    @classmethod
    def from_stored(cls, dedupe_key: str, data: Mapping[str, Any]) -> SendRecord:
        """Build a record from the JSON object stored in Redis."""
        message_id = data.get("message_id")
        reason = data.get("reason")
        written_at = data.get("written_at")
        if written_at is None and data.get("phase") != "claimed":
            # Records of older versions have no phase: assume written.
            written_at = data.get("claimed_at")
        return cls(
            dedupe_key=dedupe_key,
            state=SendState(data["state"]),
            message_id=int(message_id) if message_id not in (None, "") else None,
            claimed_at=float(data.get("claimed_at") or 0.0),
            updated_at=float(data.get("updated_at") or 0.0),
            lease_until=float(data.get("lease_until") or 0.0),
            reason=str(reason) if reason else None,
            written_at=float(written_at) if written_at else None,
            reconciled=bool(data.get("reconciled")),
        )


@attrs.frozen
class SendOnceResult:
    """The result of one item of `SendOnceGuard.send_messages`.

    Attributes:
        index: Position of the item in the input (0-based).
        dedupe_key: The item's dedupe key (None if the item was malformed).
        message: The validated `ViberMessage`, or the item as given when it
            could not be validated.
        message_id: The message ID when sent (now or earlier), else None.
        error: Why the item was not sent now, else None. A
            `PossibleDuplicateError` (an `OutcomeUnknownError`) means an
            earlier attempt may have sent it.
        replayed: The message ID comes from an earlier send with the same key;
            no request was made.
    """

    index: int
    dedupe_key: str | None
    message: ViberMessage | object
    message_id: int | None = None
    error: Exception | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        """Whether the message is sent (now, or by an earlier attempt)."""
        return self.error is None

    @property
    def outcome(self) -> SendOutcome:
        """Sent, failed, or unknown (the message may have been sent)."""
        return send_outcome(self.error)


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


def _check_duration(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"SendOnceGuard {name} must be a number > 0")
    return float(value)


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
        self._redis = redis
        self._namespace = namespace
        self._ttl = _check_duration("ttl", ttl)
        self._lease = _check_duration("lease", lease)
        if self._lease >= self._ttl:
            raise ConfigurationError("SendOnceGuard lease must be shorter than ttl")
        if not isinstance(sign_reference, bool):
            raise ConfigurationError("SendOnceGuard sign_reference must be a bool")
        self._sign_reference = sign_reference
        self._give_up_after = (
            None
            if give_up_after is None
            else _check_duration("give_up_after", give_up_after)
        )
        self._scripts = GuardScripts(redis)
        # Releases leave a tombstone this long: a copy of a claim delivered
        # late (a socket's last bytes after a partition heals) cannot land
        # after it. TCP gives up long before.
        self._tombstone = max(self._lease, _TOMBSTONE)
        self._background: set[asyncio.Task[bool]] = set()

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
            outcome=_outcome,
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
        try:
            _, data = await self._scripts.claim(
                redis_key, owner="", lease=self._lease, ttl=self._ttl, peek=True
            )
        except REDIS_ERRORS as error:
            raise RedisUnavailableError("lookup", error) from error
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
        try:
            _, data = await self._scripts.settle(
                redis_key, owner="", action="sent", message_id=message_id, ttl=self._ttl
            )
        except REDIS_ERRORS as error:
            raise RedisUnavailableError("resolve", error) from error
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
        try:
            deleted = await self._redis.delete(redis_key)
        except REDIS_ERRORS as error:
            raise RedisUnavailableError("forget", error) from error
        return bool(deleted)

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
        if not self._background:
            return
        pending = list(self._background)
        _, left = await asyncio.wait(pending, timeout=timeout)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)

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
        owner = secrets.token_hex(8)
        try:
            verdict, data = await self._scripts.claim(
                redis_key,
                owner=owner,
                lease=self._lease,
                ttl=self._ttl,
                give_up_after=self._give_up_after,
            )
        except REDIS_ERRORS as error:
            # The claim may have landed with its reply lost: nothing was
            # sent, so release it (by owner) rather than strand the key.
            await self._undo_claim(redis_key, owner)
            raise RedisUnavailableError("claim", error) from error
        except BaseException:
            # Cancelled mid-claim: it may have landed, and nothing was sent.
            self._settle_soon(redis_key, owner, "release")
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
                await self._settle(redis_key, owner, "release")
            else:
                await self._settle(
                    redis_key, owner, "unknown", reason=_unknown_reason(error)
                )
            raise
        except BaseException:
            if mark.done:
                # Cancelled: the request may be on its way.
                self._settle_soon(
                    redis_key, owner, "unknown", reason="the send was cancelled"
                )
            else:
                # Cancelled before its mark returned: nothing was written.
                self._settle_soon(redis_key, owner, "release")
            raise
        finally:
            before_write.reset(token)
        await self._settle(redis_key, owner, "sent", message_id=message_id)
        return message_id, False

    async def _undo_claim(self, redis_key: str, owner: str) -> None:
        """Release a claim whose reply was lost, if it landed (by owner)."""
        await self._settle(redis_key, owner, "release")

    async def _settle(
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
        first_try = self._settle_soon(
            redis_key, owner, action, message_id=message_id, reason=reason
        )
        await first_try.wait()

    def _settle_soon(
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
                except REDIS_ERRORS as error:
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
        try:
            verdict, data = await self._scripts.mark(
                self._redis_key, owner=self._owner, ttl=self._ttl
            )
        except REDIS_ERRORS as error:
            raise RedisUnavailableError("mark", error) from error
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
        verdict, _ = await self._scripts.mark(
            self._redis_key, owner=self._owner, ttl=self._ttl, unmark=True
        )
        if verdict == "ok":
            self.done = False  # the retry marks again


# How a settle action reads in logs.
_OUTCOMES = {
    "sent": "the message was sent as {message_id}",
    "unknown": "the send's outcome is unknown",
    "release": "the send failed (nothing was sent)",
}


def _outcome(result: SendOnceResult) -> str:
    return result.outcome.value


def _unknown_reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return f"outcome unknown: {reason}"
    return f"the send failed unexpectedly ({type(error).__name__})"
