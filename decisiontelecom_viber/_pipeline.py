"""The request pipeline: every attempt of every call, in one order.

One attempt runs, in this order and nowhere else:

1. **acquire** a `Permit` from the rate limiter, waiting at most until the
   call's *write-by* time (its deadline less a reserve for the answer);
2. **refuse** to send when the write-by time has passed or the client was
   closed meanwhile (`DeadlineExceededError`, `ClientClosedError`: nothing
   was written, so the message is certainly not sent);
3. **build** the `httpx.Request`: waiting for a connection and connecting
   may last until the write-by time, the answer until the deadline; then
   run the task's `before_write` hook (a record that must precede the
   write): if it fails, nothing is written (`WriteRefusedError`);
4. **exchange** it, bounded as a whole by the deadline. With the default
   transport the pipeline learns the moment a connection is handed to the
   request (`_transport.wire_signal`): only from then on may the API have
   the message; a failure before it is a never-sent `APIConnectionError`;
5. **decode** the answer (`_wire`), and scrub the credentials from any
   error (a server may echo the request);
6. **release** the permit with what the answer said; a limiter failing here
   is logged and never replaces the outcome.

``Retrier.call`` runs attempts until one succeeds or may not be retried.
`Calls` knows which calls have a request on the wire; `close` aborts the
others (`ClientClosedError`) and waits for those.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import attrs
import httpx

from ._calls import Call, Calls
from ._cancel import timeout_at
from ._clock import Clock
from ._context import before_write, wire_witness, worker
from ._credentials import Credentials
from ._errors import (
    APIConnectionError,
    ClientClosedError,
    ConfigurationError,
    DeadlineExceededError,
    LimiterError,
    OutcomeUnknownError,
    RateLimitError,
    ViberError,
    WriteRefusedError,
)
from ._exchange import Answer, Exchange
from ._limits import (
    Feedback,
    Limiter,
    Permit,
    Priority,
    RateLimitHeaders,
    parse_rate_limit_headers,
)
from ._metrics import Tally
from ._outcomes import Verdict, call_outcome, verdict
from ._retry import Retrier
from ._telemetry import AttemptSpan, Instrumentation
from ._transport import wire_signal
from ._wire import retry_after_header


__all__ = ["Operation", "Pipeline"]

logger = logging.getLogger("decisiontelecom_viber")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# Once the request is written, the call's deadline is enforced a little
# after the attempt's own timeouts, so that those (more precise) fire first.
_DEADLINE_GRACE = 0.05
_DEADLINE_PASSED = "the call's deadline passed while waiting for the answer"
_AIOHTTP_CEIL_THRESHOLD = 5.0


class Decoder(Protocol[T_co]):
    """Turns an answer into a call's value, or raises the error it carries."""

    def __call__(
        self, http_status: int, headers: Mapping[str, str], body: bytes, *, now: float
    ) -> T_co:
        """Decode one answer; *now* is the wall time (for HTTP dates)."""


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


def takes_priority(limiter: Limiter) -> bool:
    """Whether *limiter*'s ``acquire`` names a ``priority`` parameter.

    User limiters written before priorities may not; one that only forwards
    ``**kwargs`` is not trusted with it either (what it forwards to may not).
    """
    try:
        parameters = inspect.signature(limiter.acquire).parameters
    except (TypeError, ValueError):
        return False
    return "priority" in parameters


class Pipeline:
    """Runs calls: the attempts, their order, and what "written" means.

    Args:
        exchange: Sends a request and reads its answer.
        limiter: Paces attempts (None: not limited).
        retrier: Runs attempts under the retry policy.
        credentials: The access key (headers, and scrubbing of errors).
        headers: Request headers (the credentials among them).
        timeout: Per-attempt timeouts.
        clock: The client's clock.
        tally: The client's counters.
        telemetry: The client's OpenTelemetry instrumentation (None: none).
        on_bind: Called in the event loop of the first call, once bound.
    """

    def __init__(
        self,
        *,
        exchange: Exchange,
        limiter: Limiter | None,
        retrier: Retrier,
        credentials: Credentials,
        headers: httpx.Headers,
        timeout: httpx.Timeout,
        clock: Clock,
        tally: Tally,
        telemetry: Instrumentation | None = None,
        on_bind: Callable[[], object] | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._on_bind = on_bind
        self._exchange = exchange
        self._limiter = limiter
        self._takes_priority = limiter is not None and takes_priority(limiter)
        self._retrier = retrier
        self._credentials = credentials
        self._headers = headers
        self._timeout_ext = timeout.as_dict()
        self._clock = clock
        self._tally = tally
        self._calls = Calls()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- calls ------------------------------------------------------------------

    async def run(
        self,
        operation: Operation[T],
        body: bytes,
        priority: Priority = "normal",
        *,
        message_type: str | None = None,
        message_id: int | None = None,
    ) -> T:
        """Run one call: attempts under the retry policy, until an outcome.

        Its attempts wait for the limiter in the *priority* lane. What came
        of it is counted (and traced) with *message_type* (sends) and the
        message ID (given, or the one assigned).
        """
        self._check_loop()
        closed = self._calls.closed
        # (A call refused because the client closed is counted, and traced,
        # as failed: one outcome per call, like a stream's one per item.)
        call = Call(None) if closed else self._calls.start()
        started = self._clock.monotonic()
        try:
            if self._telemetry is not None:
                call.span = self._telemetry.start_call(
                    operation.name,
                    {}
                    if message_type is None
                    else {"viber.message_type": message_type},
                )
            value = await (
                _refused_closed()
                if closed
                else self._settle(operation, body, priority, call)
            )
        except BaseException as error:
            self._observe(
                operation.idempotent, call, started, error, message_type, message_id
            )
            raise
        if isinstance(value, int):
            message_id = value
        self._observe(
            operation.idempotent, call, started, None, message_type, message_id
        )
        return value

    def _observe(
        self,
        idempotent: bool,
        call: Call,
        started: float,
        error: BaseException | None,
        message_type: str | None,
        message_id: int | None,
    ) -> None:
        """Count what came of *call* (and end its span)."""
        outcome = call_outcome(idempotent, error, in_doubt=call.in_doubt)
        duration = self._clock.monotonic() - started
        if message_type is not None:
            self._tally.count_send(outcome, duration)
        span = call.span
        if span is not None:
            try:
                span.end(
                    outcome,
                    duration,
                    attempts=call.attempts,
                    message_type=message_type,
                    message_id=message_id,
                    error=error,
                )
            except Exception:
                logger.exception("could not record a call's telemetry")

    async def _settle(
        self, operation: Operation[T], body: bytes, priority: Priority, call: Call
    ) -> T:
        """The call's attempts; its failure as the error its outcome calls for."""
        try:
            if self._limiter is not None and worker.get() is not None:
                # A bulk item's deadline starts when the limiter first lets
                # it go: waiting behind the stream's own items is not its
                # wait, and would fail items the API could have taken.
                started = self._clock.monotonic()
                call.first_permit = await self._acquire(
                    None, priority, operation.name, call
                )
                call.first_granted_at = started + call.first_permit.waited
            return await self._retrier.call(
                lambda deadline: self._attempt(
                    operation, body, deadline, call, priority
                ),
                name=operation.name,
                idempotent=operation.idempotent,
                stopping=self._stopping,
            )
        except asyncio.CancelledError as cancelled:
            if not self._calls.take_cancel(call, cancelled):
                raise
            failure: ViberError = ClientClosedError(call.abort_reason)
        except ViberError as error:
            failure = error
        finally:
            self._calls.finish(call)
            if call.first_permit is not None:  # aborted before its attempt
                self._release(call.first_permit, self._clock.monotonic(), None)
        if call.maybe_processed and verdict(failure) is not Verdict.UNKNOWN:
            # This attempt failed for sure (or never started), but an
            # earlier one may have been processed: the outcome is unknown.
            failure = OutcomeUnknownError(
                "an earlier attempt may have been processed; the call then "
                f"ended with {type(failure).__name__}"
            )
        # Raised with no exception in its context: a raise sets __context__
        # to the exception being handled, and on Python 3.10 a coroutine
        # can still see one it left behind (aiohttp's, holding the request
        # headers). A bare re-raise of the one being handled leaves it.
        try:
            raise failure
        except ViberError as error:
            error.__context__ = None
            error.__suppress_context__ = True
            raise

    async def _attempt(
        self,
        operation: Operation[T],
        body: bytes,
        deadline: float | None,
        call: Call,
        priority: Priority,
    ) -> T:
        clock = self._clock
        write_by = self._retrier.write_by(deadline)
        permit, call.first_permit = call.first_permit, None
        if permit is not None:
            # When the limiter let the request go, not when this task
            # resumed: the limiter judges feedback stale or fresh by it.
            sent_at = call.first_granted_at
        else:
            sent_at = clock.monotonic()
            if self._limiter is not None:
                permit = await self._acquire(write_by, priority, operation.name, call)
                sent_at += permit.waited
        hooked = False
        attempt_span: AttemptSpan | None = None
        status: int | None = None
        limits: RateLimitHeaders | None = None
        asked_wait: float | None = None
        failure: ViberError | None = None
        try:
            self._check_writable()
            if write_by is not None and clock.monotonic() > write_by:
                raise DeadlineExceededError("the rate limiter")
            request = httpx.Request(
                "POST",
                operation.url,
                headers=self._headers,
                content=body,
                extensions={"timeout": self._timeouts(deadline, write_by)},
            )
            hooked = await _run_before_write()
            call.attempts += 1
            self._count("attempts", operation=operation.name, call=call)
            attempt_span = (
                None
                if call.span is None
                else call.span.start_attempt(request, call.attempts - 1)
            )
            try:
                status, headers, raw = await self._write(request, deadline, call)
            except BaseException as error:
                if attempt_span is not None:
                    attempt_span.end(None, error)
                raise
            limits = parse_rate_limit_headers(headers)
            asked_wait = retry_after_header(headers, clock.time())
            try:
                value = operation.decode(status, headers, raw, now=clock.time())
            except ViberError as error:
                failure = error
            else:
                if attempt_span is not None:
                    attempt_span.end(status, None)
                return value
            finally:
                # An error page may echo the request (its credentials): keep
                # it out of this frame's locals, which tracebacks may show.
                del headers, raw
        except ViberError as error:
            failure = error
        finally:
            # Also on cancellation: every permit is released, once.
            if permit is not None:
                self._release(permit, sent_at, status, limits, failure, asked_wait)
        # Only a failure gets here.
        if attempt_span is not None and status is not None:
            attempt_span.end(status, failure)  # (before any await: cancellable)
        if verdict(failure) is Verdict.RETRY_SAFE and not call.maybe_processed:
            # Refused for sure (or never reached the API): nothing of it is
            # on the wire while a retry waits.
            call.in_doubt = False
            witness = wire_witness.get()
            if witness is not None:
                witness.written = False
            if hooked:
                await _run_not_written()
        if isinstance(failure, RateLimitError):
            self._count("rate_limited", operation=operation.name, call=call)
        if verdict(failure) is Verdict.UNKNOWN:
            call.maybe_processed = True
        self._credentials.scrub_error(failure)
        # Raised afresh, without the frames and contexts it came through
        # (the decoder's hold the answer's body).
        failure.__context__ = None
        failure.__suppress_context__ = True
        raise failure.with_traceback(None)

    async def _write(
        self, request: httpx.Request, deadline: float | None, call: Call
    ) -> Answer:
        """The exchange: from the wire signal on, the API may have the request."""
        self._calls.begin_exchange(call)
        token = wire_signal.set(call)  # the transport tells the call
        try:
            answer = await self._exchange_by(request, deadline)
        except ViberError as error:
            failure = error
        else:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("POST %s -> HTTP %d", request.url.path, answer[0])
            return answer
        finally:
            wire_signal.reset(token)
            if call.may_be_on_the_wire:
                call.in_doubt = True  # (also when cancelled)
                witness = wire_witness.get()
                if witness is not None:
                    witness.written = True
            self._calls.end_exchange(call)
        if call.tracked and not call.wrote:
            # The transport started the request and never handed it a
            # connection: none of it left the process, whatever the error.
            failure = _never_written(failure)
        self._credentials.scrub_error(failure)  # before anything shows it
        logger.debug("POST %s failed: %s", request.url.path, failure)
        raise failure from None

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
            pass
        # Raised outside the except block: no cancellation in its context.
        raise OutcomeUnknownError(_DEADLINE_PASSED)

    async def _acquire(
        self, deadline: float | None, priority: Priority, operation: str, call: Call
    ) -> Permit:
        """A permit; the limiter's own failure is a `LimiterError` (never sent)."""
        limiter = self._limiter
        assert limiter is not None  # noqa: S101 - callers check
        try:
            if self._takes_priority:
                permit = await limiter.acquire(deadline, priority=priority)
            else:
                permit = await limiter.acquire(deadline)
            waited = float(permit.waited)
        except ViberError:
            raise
        except Exception as error:
            name = type(error).__name__
            raise LimiterError(
                f"the rate limiter failed ({name}); nothing was sent"
            ) from error
        if waited:
            self._count("limiter_waits")
            self._count("limiter_wait", waited)
        if call.span is not None:
            self._count_otel("limiter_wait", waited, operation)
        return permit

    def _release(
        self,
        permit: Permit,
        sent_at: float,
        status: int | None,
        limits: RateLimitHeaders | None = None,
        failure: ViberError | None = None,
        asked_wait: float | None = None,
    ) -> None:
        feedback = Feedback(
            sent_at,
            self._clock.monotonic(),
            status,
            isinstance(failure, RateLimitError),
            asked_wait,
            limits,
        )
        try:
            permit.release(feedback)
        except Exception:
            # The request's outcome is known; a limiter's bug must not hide it.
            logger.exception("the rate limiter failed to release a permit")

    def _timeouts(
        self, deadline: float | None, write_by: float | None
    ) -> dict[str, float | None]:
        if deadline is None or write_by is None:
            return self._timeout_ext
        now = self._clock.monotonic()
        # Getting a connection must end by the write-by time, so that no
        # request is written later; the answer may take until the deadline.
        # (aiohttp rounds a timeout above 5 s up to a whole second of loop
        # time: one second less covers that.)
        connect = write_by - now
        if connect > _AIOHTTP_CEIL_THRESHOLD:
            connect -= 1.0
        pool = connect
        if not self._exchange.pool_timeout_bounds_connecting:
            # httpx waits for the pool, then connects: the two add up.
            pool = connect = connect / 2
        limits = {
            "pool": pool,
            "connect": connect,
            "write": deadline - now,
            "read": deadline - now,
        }
        return {
            phase: _cut(value, limits.get(phase, deadline - now))
            for phase, value in self._timeout_ext.items()
        }

    def _stopping(self) -> bool:
        """Whether the client or the caller's bulk stream is closing."""
        context = worker.get()
        return self._calls.closed or (context is not None and context.stopping)

    def _check_writable(self) -> None:
        """Refuse to write when the client or the caller's bulk stream closed."""
        if self._calls.closed:
            raise ClientClosedError
        context = worker.get()
        if context is not None and context.stopping:
            raise ClientClosedError(
                "the result stream was closed before this request was written"
            )

    def _count(
        self,
        counter: str,
        amount: float = 1,
        *,
        operation: str | None = None,
        call: Call | None = None,
    ) -> None:
        context = worker.get()
        for tally in (self._tally, context.tally if context else None):
            if tally is not None:
                setattr(tally, counter, getattr(tally, counter) + amount)
        if operation is not None and call is not None and call.span is not None:
            # (No span: no SDK is configured, nothing would be recorded.)
            self._count_otel(counter, amount, operation)

    def _count_otel(self, counter: str, amount: float, operation: str) -> None:
        if self._telemetry is not None:
            try:
                self._telemetry.count(counter, amount, operation)
            except Exception:
                logger.exception("could not record a measurement")

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
                "coroutine, and keep one per loop"
            )

    def owns_current_loop(self) -> bool:
        """Whether the running loop is the pipeline's (or none is bound yet)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return self._loop is None or loop is self._loop

    async def close(self) -> None:
        """Refuse new calls, abort those not on the wire, wait for the rest."""
        await self._calls.close()


async def _refused_closed() -> Any:
    raise ClientClosedError


async def _run_not_written() -> None:
    """Tell the task's hook its write was not processed (best effort)."""
    hook = before_write.get()
    undo = getattr(hook, "not_written", None)
    if undo is None:
        return
    try:
        pending = undo()
        if inspect.isawaitable(pending):
            await pending
    except Exception as error:  # noqa: BLE001 - the mark stays: in doubt, safely
        logger.debug(
            "could not record that a refused request is not on the wire: %s", error
        )


async def _run_before_write() -> bool:
    """Run the task's `before_write` hook (whether there is one).

    Its failure means "do not write".
    """
    hook = before_write.get()
    if hook is None:
        return False
    try:
        pending = hook()
        if inspect.isawaitable(pending):
            await pending
    except Exception as error:
        if isinstance(error, ViberError) and verdict(error) is Verdict.FAILED:
            raise  # (its own never-sent error, e.g. RedisUnavailableError)
        name = type(error).__name__
        raise WriteRefusedError(
            f"the record due before writing failed ({name}); nothing was sent"
        ) from error
    return True


def _cut(value: float | None, left: float) -> float | None:
    left = max(left, 0.001)
    return left if value is None else min(value, left)


def _never_written(failure: ViberError) -> ViberError:
    """*failure* of a request none of which was written, as a never-sent error."""
    if verdict(failure) is not Verdict.UNKNOWN:
        return failure
    if isinstance(failure, OutcomeUnknownError) and failure.reason == _DEADLINE_PASSED:
        return DeadlineExceededError("a connection")
    never = APIConnectionError(
        f"failed before the request was written: {failure.reason}"
        if isinstance(failure, OutcomeUnknownError)
        else f"failed before the request was written: {failure}"
    )
    never.cause_type = failure.cause_type
    return never
