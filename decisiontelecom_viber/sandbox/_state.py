"""What the sandbox saw: requests, accepted messages, callbacks, counters.

The sandbox serves from its own thread while tests read this from theirs, so
every change and every read goes through one lock; reads return copies.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._enums import MessageStatus, SmsStatus
from ._buckets import Bucket, answer_headers, make_bucket
from ._config import SandboxConfig
from ._lifecycle import Timeline, plan_timeline


__all__ = [
    "AcceptedMessage",
    "CallbackRecord",
    "RequestRecord",
    "SandboxState",
    "SandboxStats",
    "UndeliveredCallbackWarning",
]


@attrs.frozen
class RequestRecord:
    """One request the sandbox answered (or dropped).

    Attributes:
        sequence: 0-based order of arrival.
        path: The request path.
        access_key: The valid key used, or None when authentication failed.
        outcome: ``accepted``, ``status``, ``invalid``, ``unauthorized``,
            ``rate_limited``, ``no_balance``, ``fault_500``, ``fault_502_html``,
            ``fault_disconnect_before``, ``fault_disconnect_after``,
            ``fault_truncated_body`` or ``not_found``.
        http_status: The status sent, or None when the connection was dropped.
        message_id: The message concerned, if any.
        payload: The JSON body as received (None if it was not JSON).
        at: Unix time of arrival.
        notes: What the sandbox accepted although the documentation is
            unclear about it (the real API might refuse it).
        traceparent: The request's W3C ``traceparent`` header, if any (how
            tests see that a trace reached the API).
    """

    sequence: int
    path: str
    access_key: str | None
    outcome: str
    http_status: int | None
    message_id: int | None
    payload: Any
    at: float
    notes: tuple[str, ...] = ()
    traceparent: str | None = None


@attrs.frozen
class AcceptedMessage:
    """A message the sandbox accepted (and would charge for).

    Attributes:
        message_id: Its ID.
        payload: The request body, normalised (unset fields removed).
        access_key: The key that sent it.
        accepted_at: API time of acceptance (see `Sandbox.api_time`).
        timeline: Its planned status changes.
    """

    message_id: int
    payload: Mapping[str, Any]
    access_key: str
    accepted_at: float
    timeline: Timeline

    @property
    def receiver(self) -> str:
        """The recipient (``destination_addr``)."""
        return str(self.payload["destination_addr"])

    @property
    def text(self) -> str | None:
        """The message text, if any."""
        text = self.payload.get("text")
        return text if isinstance(text, str) else None

    def status_at(self, api_time: float) -> tuple[MessageStatus, SmsStatus | None]:
        """Viber and SMS statuses at *api_time*."""
        return self.timeline.status_at(api_time - self.accepted_at)


class UndeliveredCallbackWarning(UserWarning):
    """The sandbox gave up on callbacks: the test's receiver never got them.

    Emitted by the ``viber_sandbox`` fixture after a test in which a callback
    failed every attempt (the sandbox logs each one as a WARNING, with its
    URL and the last answer). A test that means to fail deliveries filters it:
    ``@pytest.mark.filterwarnings("ignore::decisiontelecom_viber.sandbox.UndeliveredCallbackWarning")``.
    """


@attrs.frozen
class CallbackRecord:
    """One callback POST the sandbox made.

    Attributes:
        url: The callback URL.
        payload: The JSON body sent.
        kind: ``status`` or ``reply``.
        http_status: The receiver's answer, or None if it could not be reached.
        error: Why delivery failed, if it did.
        attempt: Delivery attempt number (1-based).
    """

    url: str
    payload: Mapping[str, Any]
    kind: str
    http_status: int | None
    error: str | None
    attempt: int

    @property
    def delivered(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.http_status is not None and 200 <= self.http_status < 300


@attrs.frozen
class SandboxStats:
    """Counters since the last reset.

    Attributes:
        requests: Requests received.
        accepted: Messages accepted.
        outcomes: Requests per outcome (see `RequestRecord.outcome`).
        duplicates: Accepted messages that repeat an earlier (receiver, text).
        status_lookups: Successful status lookups.
        callbacks_sent: Callback deliveries answered 2xx.
        callbacks_failed: Callback attempts that failed.
        callbacks_undelivered: Callbacks given up on after every attempt
            failed (each also logged as a WARNING).
        replies_sent: Simulated 2Way replies delivered.
        latency_spikes: Latency spikes injected.
    """

    requests: int
    accepted: int
    outcomes: Mapping[str, int]
    duplicates: int
    status_lookups: int
    callbacks_sent: int
    callbacks_failed: int
    callbacks_undelivered: int
    replies_sent: int
    latency_spikes: int

    @property
    def rate_limited(self) -> int:
        """429 answers."""
        return self.outcomes.get("rate_limited", 0)

    @property
    def faults(self) -> dict[str, int]:
        """Injected faults by type."""
        return {k: v for k, v in self.outcomes.items() if k.startswith("fault_")}


class SandboxState:
    """Everything recorded since the last reset, behind one lock."""

    def __init__(self, first_message_id: int) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.clear(first_message_id)

    def clear(self, first_message_id: int) -> None:
        """Forget everything; callbacks planned before are dropped.

        Call it under the lock, or before the state is shared.
        """
        self.generation += 1
        self.requests: list[RequestRecord] = []
        self.messages: dict[int, AcceptedMessage] = {}
        self.callbacks: list[CallbackRecord] = []
        self.buckets: dict[str, Bucket] = {}
        self.outcomes: Counter[str] = Counter()
        self.seen_pairs: Counter[tuple[str, str | None]] = Counter()
        self.request_count = 0
        self.duplicates = 0
        self.status_lookups = 0
        self.callbacks_sent = 0
        self.callbacks_failed = 0
        self.callbacks_undelivered = 0
        self.replies_sent = 0
        self.latency_spikes = 0
        self.next_message_id = first_message_id
        self.next_sms_id = first_message_id * 10
        self.spent = 0

    def record_request(
        self,
        *,
        path: str,
        access_key: str | None,
        outcome: str,
        http_status: int | None,
        message_id: int | None,
        payload: Any,
        keep: bool,
        notes: tuple[str, ...] = (),
        traceparent: str | None = None,
    ) -> None:
        """Count a request (and keep its record when *keep*)."""
        with self.lock:
            sequence = self.request_count
            self.request_count += 1
            self.outcomes[outcome] += 1
            if keep:
                self.requests.append(
                    RequestRecord(
                        sequence,
                        path,
                        access_key,
                        outcome,
                        http_status,
                        message_id,
                        payload,
                        time.time(),
                        notes,
                        traceparent,
                    )
                )

    def rate_limit(
        self, key: str, config: SandboxConfig, wall_clock: Callable[[], float]
    ) -> tuple[dict[str, str], bool]:
        """Count a request of *key* against its rate limit.

        Returns:
            The rate-limit headers of the answer, and whether it may pass.
        """
        if config.rate_limit is None:
            return {}, True
        now = wall_clock()
        with self.lock:
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = make_bucket(
                    config.rate_limit_dialect,
                    config.rate_limit,
                    config.burst,
                    config.rate_limit_window,
                    now,
                )
                self.buckets[key] = bucket
            verdict = bucket.take(now)
            headers = answer_headers(
                bucket,
                verdict,
                now,
                rate_limit_headers=bool(config.rate_limit_headers),
                retry_after=config.retry_after_header,
            )
        return headers, verdict[0]

    def accept(
        self,
        key: str,
        payload: dict[str, Any],
        config: SandboxConfig,
        rng: random.Random,
        api_time: Callable[[], float],
    ) -> tuple[AcceptedMessage, int] | None:
        """Accept a message and plan its fate, unless the balance is spent.

        Returns:
            The message and the generation it belongs to (its callbacks'),
            or None when the balance is spent.
        """
        with self.lock:
            if config.balance is not None and self.spent >= config.balance:
                return None
            self.spent += 1
            message_id = self.next_message_id
            self.next_message_id += 1
            timeline = plan_timeline(payload, config, rng, self.next_sms_id)
            if timeline.sms_message_id is not None:
                self.next_sms_id += 1
            message = AcceptedMessage(message_id, payload, key, api_time(), timeline)
            self.messages[message_id] = message
            pair = (message.receiver, message.text)
            if self.seen_pairs[pair]:
                self.duplicates += 1
            self.seen_pairs[pair] += 1
            return message, self.generation

    def stats(self) -> SandboxStats:
        """A snapshot of the counters."""
        with self.lock:
            return SandboxStats(
                requests=self.request_count,
                accepted=len(self.messages),
                outcomes=dict(self.outcomes),
                duplicates=self.duplicates,
                status_lookups=self.status_lookups,
                callbacks_sent=self.callbacks_sent,
                callbacks_failed=self.callbacks_failed,
                callbacks_undelivered=self.callbacks_undelivered,
                replies_sent=self.replies_sent,
                latency_spikes=self.latency_spikes,
            )
