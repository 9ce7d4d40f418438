"""Retries: the policy, the decisions, and the only use of tenacity.

Decisions are pure functions (`should_retry`, `backoff_delay`, `retry_delay`)
tested with tables. `Retrier` runs an operation under a `RetryPolicy`: the
first attempt runs directly (most calls succeed, and this is the hot path of a
bulk send); once it fails with a retryable error, tenacity takes over, with
the first failure replayed as its attempt 1 so counting, waits and the
deadline are the same as if tenacity had run from the start. Sleeping goes
through the client's `Clock`, so tests never wait.

The duplicate-safety rule lives in `should_retry`: the API has no idempotency
key, so a send whose outcome is unknown is not retried unless the policy opts
in, while status lookups (read-only) retry every transient error.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import attrs
import tenacity as _t

from ._checks import count_field, optional_positive_field, positive_field
from ._clock import Clock
from ._context import worker
from ._errors import ConfigurationError, RateLimitError, ViberError
from ._metrics import Tally
from ._outcomes import should_retry
from ._wire import retry_after_header


__all__ = [
    "Retrier",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "backoff_delay",
    "retry_delay",
    "should_retry",
]

# A request is written only if this share of the call's deadline (at most
# _MAX_ANSWER_RESERVE seconds) is left for its answer: one sent with
# milliseconds to go would almost surely end as an unknown outcome.
_ANSWER_RESERVE = 0.2
_MAX_ANSWER_RESERVE = 1.0

logger = logging.getLogger("decisiontelecom_viber")

T = TypeVar("T")


_positive = positive_field("RetryPolicy")
_optional_positive = optional_positive_field("RetryPolicy")
_at_least_one = count_field("RetryPolicy")


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 1:
        raise ConfigurationError(f"RetryPolicy.{attribute.name} must be in [0, 1]")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a client retries failed calls.

    Retried: 429 (`RateLimitError`), 500/502/503 (`ServerError`) and
    `APIConnectionError` (the request never reached the API). Never retried:
    400, 401, 402, 403 and validation errors. `OutcomeUnknownError` (read
    timeout, connection broken mid-answer, 504, unparseable 2xx) is retried
    for status lookups, but for sends only when *retry_unknown_outcome* is
    set, because the API has no idempotency key and a blind retry can send a
    paid duplicate.

    The n-th retry waits ``min(wait_max, wait_initial * wait_exp_base**(n-1))``
    seconds, shortened by up to ``wait_jitter`` (a fraction) at random. When
    the server says how long to wait (``Retry-After``, ``X-Rate-Limit-Reset``)
    that wait is used instead, capped at *max_retry_after* and lengthened by
    up to ``wait_jitter`` so that concurrent senders do not return together.
    The *timeout* bounds the whole call: waits for the rate limiter, 429
    pauses and backoff count against it. A request is written only while a
    fifth of the timeout (at most 1 s) is left for its answer; past that the
    call raises `DeadlineExceededError` (nothing was sent). Once written, an
    attempt's timeouts are cut to the time left, and an answer still missing
    at the deadline is an `OutcomeUnknownError`.

    Attributes:
        attempts: Attempts in total, the first included (1 = no retries).
        timeout: Total deadline in seconds for one call, all attempts and
            waits included; None for no deadline.
        wait_initial: Wait before the first retry, in seconds.
        wait_max: Longest backoff wait, in seconds.
        wait_exp_base: Growth factor of the backoff.
        wait_jitter: Random fraction taken off (backoff) or added to
            (server-directed waits) each wait, in [0, 1].
        max_retry_after: Longest server-directed wait honoured, in seconds.
        retry_unknown_outcome: Also retry sends whose outcome is unknown. Off
            by default: it trades lost messages for possible duplicates.
    """

    attempts: int = attrs.field(default=5, validator=_at_least_one)
    timeout: float | None = attrs.field(default=25.0, validator=_optional_positive)
    wait_initial: float = attrs.field(default=0.5, validator=_positive)
    wait_max: float = attrs.field(default=8.0, validator=_positive)
    wait_exp_base: float = attrs.field(default=2.0, validator=_positive)
    wait_jitter: float = attrs.field(default=0.25, validator=_fraction)
    max_retry_after: float = attrs.field(default=20.0, validator=_positive)
    retry_unknown_outcome: bool = False

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt (same as ``retry=None``)."""
        return cls(attempts=1)


@attrs.frozen
class RetryDetails:
    """What a retry hook is told before the client waits and retries.

    Attributes:
        operation: ``"send_message"`` or ``"get_message_status"``.
        attempt: The attempt that just failed (1 for the first).
        error: Why it failed.
        delay: Seconds the client will wait before the next attempt.
        elapsed: Seconds since the call started.
    """

    operation: str
    attempt: int
    error: ViberError
    delay: float
    elapsed: float


class RetryHook(Protocol):
    """A callable told about each retry, for logging or metrics."""

    def __call__(self, details: RetryDetails, /) -> None:
        """Observe one retry. Exceptions raised here are logged and ignored."""


def backoff_delay(retry_number: int, policy: RetryPolicy, rand: float) -> float:
    """Exponential backoff before the *retry_number*-th retry (1-based).

    *rand* is a number in [0, 1) that picks the jitter.
    """
    exponent = min(retry_number - 1, 64)  # no overflow on absurd attempt counts
    base = min(policy.wait_max, policy.wait_initial * policy.wait_exp_base**exponent)
    return base * (1 - policy.wait_jitter * rand)


def retry_delay(
    error: BaseException,
    retry_number: int,
    policy: RetryPolicy,
    rand: float,
    *,
    paced: bool = False,
) -> float:
    """Seconds to wait before the *retry_number*-th retry after *error*.

    With *paced* (a rate limiter paces every attempt), a 429 is retried at
    once: the limiter has paused every sender (as long as ``Retry-After``
    asked) and decides when the retry goes.
    """
    if isinstance(error, RateLimitError):
        if paced:
            return 0.0
        if error.retry_after is not None:
            honoured = min(error.retry_after, policy.max_retry_after)
            return honoured * (1 + policy.wait_jitter * rand)
    return backoff_delay(retry_number, policy, rand)


def asked_wait(error: BaseException, policy: RetryPolicy, clock: Clock) -> float:
    """The ``Retry-After`` wait of a 429 (capped), else 0."""
    if not isinstance(error, RateLimitError):
        return 0.0
    headers = {name.lower(): value for name, value in error.headers.items()}
    asked = retry_after_header(headers, clock.time())
    return 0.0 if asked is None else min(asked, policy.max_retry_after)


def write_by(policy: RetryPolicy, deadline: float | None) -> float | None:
    """The last moment an attempt's request may be written, for a call *deadline*."""
    if deadline is None or policy.timeout is None:
        return deadline
    return deadline - min(_MAX_ANSWER_RESERVE, policy.timeout * _ANSWER_RESERVE)


class Retrier:
    """Runs operations under a `RetryPolicy` (None: a single attempt).

    Args:
        policy: The policy, or None to never retry.
        clock: Where time is read and waits happen.
        hooks: Called before each retry, after the retry is logged.
    """

    __slots__ = (
        "_attempts",
        "_clock",
        "_hooks",
        "_paced",
        "_policy",
        "_tally",
    )

    def __init__(
        self,
        policy: RetryPolicy | None,
        clock: Clock,
        *,
        hooks: Sequence[RetryHook] = (),
        paced: bool = False,
        tally: Tally | None = None,
    ) -> None:
        self._policy = policy if policy is not None else RetryPolicy.disabled()
        self._attempts = self._policy.attempts
        self._clock = clock
        self._hooks = tuple(hooks)
        self._paced = paced
        self._tally = tally

    @property
    def policy(self) -> RetryPolicy:
        """The policy in force."""
        return self._policy

    def write_by(self, deadline: float | None) -> float | None:
        """The last moment a request of a call with *deadline* may be written."""
        return write_by(self._policy, deadline)

    async def call(
        self,
        operation: Callable[[float | None], Awaitable[T]],
        *,
        name: str,
        idempotent: bool,
        stopping: Callable[[], bool] = lambda: False,
    ) -> T:
        """Run ``operation(deadline)`` until it succeeds or may not be retried.

        *deadline* is a `Clock.monotonic` time (or None) by which the whole
        call should be over; operations cut their own timeouts to it. No
        retry starts once *stopping* says so (the client or the stream is
        closing): the last error is raised at once. Retries are counted in
        the retrier's tally and the bulk worker's (`_context`).
        """
        policy = self._policy
        start = self._clock.monotonic()
        deadline = start + policy.timeout if policy.timeout is not None else None
        try:
            return await operation(deadline)
        except ViberError as error:
            if (
                self._attempts == 1
                or stopping()
                or not should_retry(
                    error,
                    idempotent=idempotent,
                    retry_unknown_outcome=policy.retry_unknown_outcome,
                )
            ):
                raise
            first_error = error
        return await self._call_with_tenacity(
            operation, first_error, start, deadline, name, idempotent, stopping
        )

    async def _call_with_tenacity(
        self,
        operation: Callable[[float | None], Awaitable[T]],
        first_error: ViberError,
        start: float,
        deadline: float | None,
        name: str,
        idempotent: bool,
        stopping: Callable[[], bool],
    ) -> T:
        policy = self._policy
        clock = self._clock
        replay: list[ViberError] = [first_error]

        async def attempt() -> T:
            if replay:
                # Attempt 1 already ran (the fast path): hand tenacity its
                # outcome instead of sending again.
                raise replay.pop()
            return await operation(deadline)

        def retryable(error: BaseException) -> bool:
            return isinstance(error, ViberError) and should_retry(
                error,
                idempotent=idempotent,
                retry_unknown_outcome=policy.retry_unknown_outcome,
            )

        def wait(state: _t.RetryCallState) -> float:
            return retry_delay(
                _failure(state),
                state.attempt_number,
                policy,
                # Jitter is the one thing not injected: the decisions that
                # use it (`retry_delay`) take it as an argument instead.
                random.random(),  # noqa: S311 - jitter, not cryptography
                paced=self._paced,
            )

        last_write = write_by(policy, deadline)

        def stop(state: _t.RetryCallState) -> bool:
            if state.attempt_number >= self._attempts or stopping():
                return True
            if last_write is None:
                return False
            # No retry that could not be written before the deadline (paced,
            # the limiter does a 429's Retry-After wait, not tenacity).
            upcoming = state.upcoming_sleep
            if self._paced:
                upcoming = max(upcoming, asked_wait(_failure(state), policy, clock))
            return clock.monotonic() + upcoming > last_write

        def before_sleep(state: _t.RetryCallState) -> None:
            details = RetryDetails(
                operation=name,
                attempt=state.attempt_number,
                error=cast(ViberError, _failure(state)),  # only ViberErrors retry
                delay=state.upcoming_sleep,
                elapsed=clock.monotonic() - start,
            )
            _log_retry(details, self._attempts)
            context = worker.get()
            for counter in (self._tally, context.tally if context else None):
                if counter is not None:
                    counter.retries += 1
            for hook in self._hooks:
                try:
                    hook(details)
                except Exception:  # noqa: PERF203 - a broken hook must not stop retries
                    logger.exception("retry hook %r failed", hook)

        retrying = _t.AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=_t.retry_if_exception(retryable),
            sleep=clock.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)


def _failure(state: _t.RetryCallState) -> BaseException:
    """The exception of a failed attempt (tenacity only asks after failures)."""
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if error is None:  # pragma: no cover - tenacity retries only on exceptions
        raise RuntimeError("retry asked about an attempt that did not fail")
    return error


def _log_retry(details: RetryDetails, attempts: int) -> None:
    # Rate limiting is routine in bulk sends: INFO. Anything else: WARNING.
    level = (
        logging.INFO if isinstance(details.error, RateLimitError) else logging.WARNING
    )
    logger.log(
        level,
        "%s attempt %d of %d failed with %s; retrying in %.2f s",
        details.operation,
        details.attempt,
        attempts,
        type(details.error).__name__,
        details.delay,
    )
