"""The request pipeline: every attempt of every call, in one order.

One attempt runs, in this order and nowhere else:

1. **acquire** a `Permit` from the rate limiter, waiting at most until the
   call's *write-by* time (its deadline less a reserve for the answer);
2. **refuse** to send when the write-by time has passed or the client was
   closed meanwhile (`DeadlineExceededError`, `ClientClosedError`: nothing
   was written, so the message is certainly not sent);
3. **build** the `httpx.Request`, its timeouts cut to the time left;
4. **exchange** it — the only step after which the API may have the
   message — bounded as a whole by the deadline (past it:
   `OutcomeUnknownError`), foreign errors translated inside the exchange;
5. **decode** the answer (`_wire`);
6. **release** the permit with what the answer said; a limiter failing here
   is logged and never replaces the outcome.

``Retrier.call`` runs attempts until one succeeds or may not be retried.
The pipeline knows at every moment whether a call has anything on the wire:
`AsyncViberClient.aclose` aborts the calls that have not (they raise
`ClientClosedError`) and waits for those that have.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

import attrs
import httpx

from ._clock import Clock
from ._context import worker
from ._errors import (
    ClientClosedError,
    ConfigurationError,
    DeadlineExceededError,
    LimiterError,
    OutcomeUnknownError,
    RateLimitError,
    ViberError,
)
from ._limits import Feedback, Limiter, Permit, parse_rate_limit_headers
from ._metrics import Tally
from ._outcomes import Verdict, verdict
from ._retry import Retrier
from ._transport import Answer, Exchange


if sys.version_info >= (3, 11):
    from asyncio import timeout_at
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout_at


__all__ = ["Operation", "Pipeline"]

logger = logging.getLogger("decisiontelecom_viber")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Decoder(Protocol[T_co]):
    """Turns an answer into a call's value, or raises the error it carries."""

    def __call__(
        self, http_status: int, headers: Mapping[str, str], body: bytes, *, now: float
    ) -> T_co:
        """Decode one answer; *now* is the wall time (for HTTP dates)."""


# Once the request is written, the call's deadline is enforced a little
# after the attempt's own (connect, pool) timeouts, so that those fire first
# and a request that never left is still known as never sent.
_DEADLINE_GRACE = 0.05
_ABORTED = "the client is closing"


@attrs.frozen
class Operation(Generic[T]):
    """One kind of call: its name, endpoint, and how its answers read.

    Attributes:
        name: ``"send_message"`` or ``"get_message_status"`` (logs, hooks).
        url: The endpoint.
        idempotent: Whether repeating the request is harmless.
        decode: Turns an answer into the call's value.
    """

    name: str
    url: httpx.URL
    idempotent: bool
    decode: Decoder[T]


class Phase(enum.Enum):
    """Where a call stands."""

    WAITING = "waiting"
    """Nothing of the current attempt written: limiter, backoff, building."""
    WRITING = "writing"
    """Exchanging: the API may have the request."""


class Call:
    """One call in flight, as the pipeline and `aclose` see it."""

    __slots__ = (
        "aborted",
        "first_granted_at",
        "first_permit",
        "maybe_processed",
        "phase",
        "task",
    )

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.phase = Phase.WAITING
        self.aborted = False
        # A bulk item's first permit, taken before its deadline starts.
        self.first_permit: Permit | None = None
        self.first_granted_at = 0.0
        # An earlier attempt of this call may have been processed (only
        # after retrying an unknown outcome, which a policy must opt into).
        self.maybe_processed = False


class Pipeline:
    """Runs calls: the attempts, their order, and what "written" means.

    Args:
        exchange: Sends a request and reads its answer.
        limiter: Paces attempts (None: not limited).
        retrier: Runs attempts under the retry policy.
        headers: Request headers (the credentials among them).
        timeout: Per-attempt timeouts.
        clock: The client's clock.
        tally: The client's counters.
        on_bind: Called in the event loop of the first call, once bound.
    """

    def __init__(
        self,
        *,
        exchange: Exchange,
        limiter: Limiter | None,
        retrier: Retrier,
        headers: httpx.Headers,
        timeout: httpx.Timeout,
        clock: Clock,
        tally: Tally,
        on_bind: Callable[[], object] | None = None,
    ) -> None:
        self._on_bind = on_bind
        self._exchange = exchange
        self._limiter = limiter
        self._retrier = retrier
        self._headers = headers
        self._timeout_ext = timeout.as_dict()
        self._timeout_max = max(
            (t for t in self._timeout_ext.values() if t is not None), default=0.0
        )
        self._clock = clock
        self._tally = tally
        self._calls: set[Call] = set()
        self._writing = 0
        self._idle: asyncio.Event | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the pipeline's transport is bound to, once used."""
        return self._loop

    # -- calls ------------------------------------------------------------------

    async def run(self, operation: Operation[T], body: bytes) -> T:
        """Run one call: attempts under the retry policy, until an outcome."""
        self._check_loop()
        if self._closed:
            raise ClientClosedError
        call = Call(asyncio.current_task())
        self._calls.add(call)
        try:
            if self._limiter is not None and worker.get() is not None:
                # A bulk item's deadline starts when the limiter first lets
                # it go: waiting behind the stream's own items is not its
                # wait, and would fail items the API could have taken.
                started = self._clock.monotonic()
                call.first_permit = await _acquire(self._limiter, None)
                call.first_granted_at = started + call.first_permit.waited
                if call.first_permit.waited:
                    self._count_wait(call.first_permit.waited)
            return await self._retrier.call(
                lambda deadline: self._attempt(operation, body, deadline, call),
                name=operation.name,
                idempotent=operation.idempotent,
            )
        except asyncio.CancelledError:
            if call.aborted and _take_cancel(call.task):
                raise ClientClosedError from None
            raise
        except ViberError as error:
            if call.maybe_processed and verdict(error) is not Verdict.UNKNOWN:
                # The last attempt failed for sure, but an earlier one may
                # have been processed: the call's outcome is unknown.
                raise OutcomeUnknownError(
                    f"an earlier attempt may have been processed; the last "
                    f"failed with {type(error).__name__}"
                ) from None
            raise
        finally:
            self._calls.discard(call)
            if call.first_permit is not None:  # aborted before its attempt
                self._release(
                    call.first_permit, self._clock.monotonic(), None, None, None
                )

    async def _attempt(
        self, operation: Operation[T], body: bytes, deadline: float | None, call: Call
    ) -> T:
        clock = self._clock
        write_by = self._retrier.write_by(deadline)
        permit, call.first_permit = call.first_permit, None
        # When the limiter let the request go (not when this task resumed):
        # the limiter judges feedback stale or fresh by it.
        sent_at = call.first_granted_at if permit is not None else clock.monotonic()
        limiter = self._limiter
        if permit is None and limiter is not None:
            permit = await _acquire(limiter, write_by)
            sent_at += permit.waited
            if permit.waited:
                self._count_wait(permit.waited)
        status: int | None = None
        headers: httpx.Headers | None = None
        limited: RateLimitError | None = None
        try:
            self._check_writable()
            if write_by is not None and clock.monotonic() > write_by:
                raise DeadlineExceededError("the rate limiter")
            request = httpx.Request(
                "POST",
                operation.url,
                headers=self._headers,
                content=body,
                extensions={"timeout": self._timeouts(deadline)},
            )
            self._count_attempt()
            status, headers, raw = await self._write(request, deadline, call)
            return operation.decode(status, headers, raw, now=clock.time())
        except RateLimitError as error:
            limited = error
            self._count_rate_limited()
            raise
        except ViberError as error:
            if verdict(error) is Verdict.UNKNOWN:
                call.maybe_processed = True
            raise
        finally:
            # Also on cancellation: every permit is released, once.
            if permit is not None:
                self._release(permit, sent_at, status, headers, limited)

    async def _write(
        self, request: httpx.Request, deadline: float | None, call: Call
    ) -> Answer:
        """The exchange: from here on, the API may have the request."""
        call.phase = Phase.WRITING
        self._writing += 1
        context = worker.get()
        if context is not None:
            context.writing += 1
        try:
            answer = await self._exchange_by(request, deadline)
        except ViberError as error:
            logger.debug("POST %s failed: %s", request.url.path, error)
            raise
        else:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("POST %s -> HTTP %d", request.url.path, answer[0])
            return answer
        finally:
            call.phase = Phase.WAITING
            if context is not None:
                context.writing -= 1
            self._writing -= 1
            if not self._writing and self._idle is not None:
                self._idle.set()

    async def _exchange_by(
        self, request: httpx.Request, deadline: float | None
    ) -> Answer:
        """Exchange *request*, giving up at *deadline* (an unknown outcome)."""
        if deadline is None:
            return await self._exchange(request)
        loop = asyncio.get_running_loop()
        left = deadline - self._clock.monotonic() + _DEADLINE_GRACE
        try:
            async with timeout_at(loop.time() + left):
                return await self._exchange(request)
        except asyncio.TimeoutError:
            raise OutcomeUnknownError(
                "the call's deadline passed while waiting for the answer"
            ) from None

    def _release(
        self,
        permit: Permit,
        sent_at: float,
        status: int | None,
        headers: httpx.Headers | None,
        limited: RateLimitError | None,
    ) -> None:
        feedback = Feedback(
            sent_at,
            self._clock.monotonic(),
            status,
            limited is not None,
            limited.retry_after if limited is not None else None,
            parse_rate_limit_headers(headers) if headers is not None else None,
        )
        try:
            permit.release(feedback)
        except Exception:
            # The request's outcome is known; a limiter's bug must not hide it.
            logger.exception("the rate limiter failed to release a permit")

    def _timeouts(self, deadline: float | None) -> dict[str, float | None]:
        if deadline is None:
            return self._timeout_ext
        left = deadline - self._clock.monotonic()
        if left >= self._timeout_max:
            return self._timeout_ext
        # The call's deadline is nearer than a full attempt: cut every phase
        # of this attempt to the time left.
        left = max(left, 0.001)
        return {
            phase: left if value is None else min(value, left)
            for phase, value in self._timeout_ext.items()
        }

    # -- counting ---------------------------------------------------------------

    def _check_writable(self) -> None:
        """Refuse to write when the client or the caller's bulk stream closed."""
        if self._closed:
            raise ClientClosedError
        context = worker.get()
        if context is not None and context.stopping:
            raise ClientClosedError(
                "the result stream was closed before this request was written"
            )

    def _count_attempt(self) -> None:
        self._tally.attempts += 1
        context = worker.get()
        if context is not None:
            context.tally.attempts += 1

    def _count_rate_limited(self) -> None:
        self._tally.rate_limited += 1
        context = worker.get()
        if context is not None:
            context.tally.rate_limited += 1

    def _count_wait(self, waited: float) -> None:
        context = worker.get()
        for counter in (self._tally, context.tally if context else None):
            if counter is not None:
                counter.limiter_waits += 1
                counter.limiter_wait += waited

    # -- event loop and closing -------------------------------------------------

    def _check_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                "AsyncViberClient needs a running asyncio event loop"
            ) from None
        if self._loop is None:
            self._loop = loop
            if self._on_bind is not None:
                self._on_bind()
        elif loop is not self._loop:
            raise ConfigurationError(
                "this AsyncViberClient is bound to another event loop (its "
                "connections belong to the loop of its first call); nothing "
                "was sent. Create the client inside the running loop, e.g. "
                "`async with AsyncViberClient() as client:` in your main "
                "coroutine, and keep one per loop; from sync code, use "
                "ViberClient"
            )

    def owns_current_loop(self) -> bool:
        """Whether the running loop is the pipeline's (or none is bound yet)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return self._loop is None or loop is self._loop

    async def close(self) -> None:
        """Refuse new calls, abort waiting ones, and wait for written ones.

        Calls that have not written their current attempt raise
        `ClientClosedError`; calls on the wire run to their end (they are
        bounded by their own timeouts and deadline).
        """
        self._closed = True
        for call in list(self._calls):
            if call.phase is Phase.WAITING and call.task is not None:
                if call.task is asyncio.current_task():
                    continue
                call.aborted = True
                call.task.cancel(_ABORTED)
        if self._writing:
            self._idle = asyncio.Event()
            while self._writing:
                self._idle.clear()
                await self._idle.wait()


async def _acquire(limiter: Limiter, deadline: float | None) -> Permit:
    """A permit from *limiter*; its own failure is a `LimiterError` (never sent)."""
    try:
        return await limiter.acquire(deadline)
    except ViberError:
        raise
    except Exception as error:
        name = type(error).__name__
        raise LimiterError(
            f"the rate limiter failed ({name}); nothing was sent"
        ) from error


def _take_cancel(task: asyncio.Task[object] | None) -> bool:
    """Consume the cancellation `close` sent; False if someone else's is pending."""
    if task is None:  # pragma: no cover - calls always run in a task
        return False
    uncancel = getattr(task, "uncancel", None)
    if uncancel is None:  # pragma: no cover - Python 3.10 counts no cancels
        return True
    uncancel()
    return not task.cancelling()
