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

This module holds that order; what each step leans on is kept apart, so the
order reads in one place: the limiter's permits in `_pacing`, an attempt's
time bounds in `_timeouts`, the `before_write` hook's runners in
`_writehooks`, and the counting and tracing of outcomes in `_meter`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import attrs
import httpx

from ._calls import Call, Calls
from ._clock import Clock
from ._context import wire_witness, worker
from ._credentials import Credentials
from ._errors import (
    ClientClosedError,
    ConfigurationError,
    DeadlineExceededError,
    OutcomeUnknownError,
    RateLimitError,
    ViberError,
)
from ._exchange import Answer, Exchange
from ._limits import Limiter, Priority, RateLimitHeaders, parse_rate_limit_headers
from ._meter import Meter
from ._metrics import Tally
from ._outcomes import Verdict, verdict
from ._pacing import Pacer, release
from ._retry import Retrier
from ._telemetry import AttemptSpan, Instrumentation
from ._timeouts import attempt_timeouts, exchange_by, never_written
from ._transport import wire_signal
from ._wire import retry_after_header
from ._writehooks import run_before_write, run_not_written


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
        self._meter = Meter(tally, telemetry, clock)
        self._pacer = None if limiter is None else Pacer(limiter, self._meter)
        self._retrier = retrier
        self._credentials = credentials
        self._headers = headers
        self._timeout_ext = timeout.as_dict()
        self._clock = clock
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
        call = Call(None) if closed else self._calls.start(worker.get())
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
            self._meter.observe(
                operation.idempotent, call, started, error, message_type, message_id
            )
            raise
        if isinstance(value, int):
            message_id = value
        self._meter.observe(
            operation.idempotent, call, started, None, message_type, message_id
        )
        return value

    async def _settle(
        self, operation: Operation[T], body: bytes, priority: Priority, call: Call
    ) -> T:
        """The call's attempts; its failure as the error its outcome calls for."""
        try:
            if self._pacer is not None and worker.get() is not None:
                # A bulk item's deadline starts when the limiter first lets
                # it go: waiting behind the stream's own items is not its
                # wait, and would fail items the API could have taken.
                started = self._clock.monotonic()
                call.first_permit = await self._pacer.acquire(
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
            self._calls.finish(call, worker.get())
            if call.first_permit is not None:  # aborted before its attempt
                release(call.first_permit, self._clock, self._clock.monotonic(), None)
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
            if self._pacer is not None:
                permit = await self._pacer.acquire(
                    write_by, priority, operation.name, call
                )
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
                extensions={
                    "timeout": attempt_timeouts(
                        self._timeout_ext,
                        deadline,
                        write_by,
                        clock,
                        pool_bounds_connecting=(
                            self._exchange.pool_timeout_bounds_connecting
                        ),
                    )
                },
            )
            hooked = await run_before_write()
            call.attempts += 1
            self._meter.count("attempts", operation=operation.name, call=call)
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
                release(permit, clock, sent_at, status, limits, failure, asked_wait)
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
                await run_not_written()
        if isinstance(failure, RateLimitError):
            self._meter.count("rate_limited", operation=operation.name, call=call)
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
            answer = await exchange_by(self._exchange, request, deadline, self._clock)
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
            self._calls.end_exchange(call, worker.get())
        if call.tracked and not call.wrote:
            # The transport started the request and never handed it a
            # connection: none of it left the process, whatever the error.
            failure = never_written(failure)
        self._credentials.scrub_error(failure)  # before anything shows it
        logger.debug("POST %s failed: %s", request.url.path, failure)
        raise failure from None

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
