"""Callbacks: status changes and 2Way replies POSTed when they fall due.

One task per sandbox keeps a heap of due jobs in API time and starts a
delivery task for each job that falls due, so a slow receiver delays nothing
else. Jobs carry the sandbox's generation: a reset makes older jobs void.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import httpx

from ._config import SandboxConfig
from ._state import AcceptedMessage, CallbackRecord, SandboxState


__all__ = ["Callbacks"]

logger = logging.getLogger("decisiontelecom_viber.sandbox")


@attrs.frozen
class CallbackJob:
    """A callback to POST: a status change (built when due) or a reply."""

    url: str
    kind: str
    generation: int
    build: Callable[[], Mapping[str, Any] | None]
    message_id: int


class CallbackScheduler:
    """Delivers callbacks when they fall due, on the sandbox's event loop."""

    def __init__(
        self,
        state: SandboxState,
        api_time: Callable[[], float],
        time_scale: Callable[[], float],
        delivery: Callable[[], tuple[float, int]],
    ) -> None:
        self._state = state
        self._api_time = api_time
        self._time_scale = time_scale
        self._delivery = delivery  # () -> (timeout, attempts), read when used
        self._heap: list[tuple[float, int, CallbackJob]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._deliveries: set[asyncio.Task[None]] = set()
        # The last delivery per message: a message's callbacks arrive in order.
        self._last: dict[int, asyncio.Task[None]] = {}
        # As many kept-alive connections as connections: with httpx's default
        # 20, a burst of callbacks closes and reopens a connection per
        # callback, and the receiver's listen backlog overflows (connect
        # timeouts) long before it is slow.
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._run(), name="sandbox-callbacks"
        )

    def schedule(self, due: float, job: CallbackJob) -> None:
        """Deliver *job* at API time *due* (call on the sandbox's loop)."""
        heapq.heappush(self._heap, (due, next(self._order), job))
        self._wake.set()

    def wake(self) -> None:
        """Re-check due times now (after the API clock jumped)."""
        self._wake.set()

    @property
    def pending(self) -> int:
        """Jobs not yet due plus deliveries under way."""
        return len(self._heap) + len(self._deliveries)

    async def _run(self) -> None:
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            due = self._heap[0][0]
            wait = (due - self._api_time()) / self._time_scale()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            _, _, job = heapq.heappop(self._heap)
            previous = self._last.get(job.message_id)
            task = asyncio.create_task(self._deliver(job, previous))
            self._deliveries.add(task)
            self._last[job.message_id] = task
            task.add_done_callback(functools.partial(self._forget, job.message_id))

    def _forget(self, message_id: int, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        if self._last.get(message_id) is task:
            del self._last[message_id]

    async def _deliver(
        self, job: CallbackJob, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        payload = job.build()
        if payload is None:  # the sandbox was reset since
            return
        timeout, attempts = self._delivery()
        record: CallbackRecord | None = None
        for attempt in range(1, attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                # The timeout is the receiver's: a burst of callbacks queues
                # for the pool's connections without a bound (no byte has
                # left), or a loaded machine would call them undelivered.
                response = await self._client.post(
                    job.url, json=payload, timeout=httpx.Timeout(timeout, pool=None)
                )
                status = response.status_code
            except Exception as exc:  # noqa: BLE001 - any failure is recorded and warned
                error = type(exc).__name__
                if isinstance(exc, httpx.HTTPError):
                    error = f"{error}: {exc}"
            record = CallbackRecord(job.url, payload, job.kind, status, error, attempt)
            with self._state.lock:
                if job.generation != self._state.generation:
                    return
                self._state.callbacks.append(record)
                if record.delivered:
                    self._state.callbacks_sent += 1
                    if job.kind == "reply":
                        self._state.replies_sent += 1
                else:
                    self._state.callbacks_failed += 1
            if record.delivered:
                return
            if attempt < attempts:
                await asyncio.sleep(min(0.2 * attempt, 2.0))
        with self._state.lock:
            if job.generation != self._state.generation:
                return
            self._state.callbacks_undelivered += 1
        logger.warning(
            "callback to %s not delivered (%d attempt(s)): %s",
            _shown(job.url),
            attempts,
            _reason(record),
        )

    async def aclose(self) -> None:
        """Stop delivering and close the HTTP client."""
        tasks = [t for t in (self._task, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        await self._client.aclose()


class Callbacks:
    """The callbacks of one sandbox: planned at acceptance, delivered when due.

    Delivery runs on the loop serving the sandbox, from its first request
    on (`start`); calls from other threads reach that loop thread-safely.

    Args:
        state: The sandbox's records (and generation).
        api_time: The sandbox's API clock.
        config: The config in force (the sandbox replaces it).
        rng: The sandbox's random source (replaced on reset).
    """

    def __init__(
        self,
        state: SandboxState,
        api_time: Callable[[], float],
        config: Callable[[], SandboxConfig],
        rng: Callable[[], random.Random],
    ) -> None:
        self._state = state
        self._api_time = api_time
        self._config = config
        self._rng = rng
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: CallbackScheduler | None = None

    @property
    def started(self) -> bool:
        """Whether deliveries run (`start` called, `aclose` not since)."""
        return self._scheduler is not None

    def start(self) -> None:
        """Start delivering, on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._scheduler = CallbackScheduler(
            self._state,
            self._api_time,
            lambda: self._config().time_scale,
            lambda: (self._config().callback_timeout, self._config().callback_attempts),
        )

    def plan(self, message: AcceptedMessage, url: str, generation: int) -> None:
        """Plan every status callback of *message*, and its reply if it gets one.

        Call on the serving loop.
        """
        for due, job in status_jobs(message, url, generation, self._is_current):
            self._schedule(due, job)
        if message.timeline.reply_at is not None:
            job = self._reply_job(message, url, self._config().reply_text)
            self._schedule(message.accepted_at + message.timeline.reply_at, job)

    def reply_now(self, message: AcceptedMessage, url: str, text: str) -> None:
        """Deliver a reply to *message* now (from any thread).

        Raises:
            RuntimeError: Not started yet: there is no loop to deliver from.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("the sandbox has not served any request yet")
        job = self._reply_job(message, url, text)
        loop.call_soon_threadsafe(self._schedule, self._api_time(), job)

    def wake(self) -> None:
        """Re-check due times (after the API clock jumped), from any thread."""
        loop, scheduler = self._loop, self._scheduler
        if loop is not None and scheduler is not None and not loop.is_closed():
            loop.call_soon_threadsafe(scheduler.wake)

    async def aclose(self) -> None:
        """Stop delivering (on the serving loop); a new `start` may follow."""
        if self._scheduler is not None:
            await self._scheduler.aclose()
            self._scheduler = None

    def _schedule(self, due: float, job: CallbackJob) -> None:
        if self._scheduler is not None:
            self._scheduler.schedule(due, job)

    def _reply_job(self, message: AcceptedMessage, url: str, text: str) -> CallbackJob:
        token = self._rng().randrange(10**13, 10**14)
        generation = self._state.generation
        return reply_job(message, url, text, token, generation, self._is_current)

    def _is_current(self, generation: int) -> bool:
        return generation == self._state.generation


def _shown(url: str) -> str:
    """*url* for a log line: no user info, query or fragment (tokens live there)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<an invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _reason(record: CallbackRecord | None) -> str:
    """Why the last attempt failed, with the usual cause of a redirect."""
    if record is None:  # pragma: no cover - at least one attempt
        return "no attempt"
    if record.error is not None:
        return record.error
    reason = f"HTTP {record.http_status}"
    if record.http_status is not None and 300 <= record.http_status < 400:
        # Starlette's Mount answers its exact path with a 307 to path + "/".
        reason += (
            " (a redirect: callbacks are not redirected; serve the exact path,"
            " e.g. app.add_route(path, receiver, methods=['POST']), not app.mount)"
        )
    return reason


def status_jobs(
    message: AcceptedMessage,
    url: str,
    generation: int,
    is_current: Callable[[int], bool],
) -> list[tuple[float, CallbackJob]]:
    """(due API time, job) for each status change of *message* after acceptance."""
    jobs = []
    for offset, _, _ in message.timeline.events:
        if offset > 0:
            build = functools.partial(
                _status_payload, message, offset, generation, is_current
            )
            job = CallbackJob(url, "status", generation, build, message.message_id)
            jobs.append((message.accepted_at + offset, job))
    return jobs


def _status_payload(
    message: AcceptedMessage,
    offset: float,
    generation: int,
    is_current: Callable[[int], bool],
) -> dict[str, Any] | None:
    if not is_current(generation):
        return None
    status, sms_status = message.timeline.status_at(offset)
    payload: dict[str, Any] = {"message_id": message.message_id, "status": int(status)}
    if sms_status is not None:
        payload["sms_message_id"] = message.timeline.sms_message_id
        payload["sms_message_status"] = int(sms_status)
    return payload


def reply_job(
    message: AcceptedMessage,
    url: str,
    text: str,
    token: int,
    generation: int,
    is_current: Callable[[int], bool],
) -> CallbackJob:
    """A job delivering a user's reply to *message*."""

    def build() -> dict[str, Any] | None:
        if not is_current(generation):
            return None
        return reply_payload(message.message_id, message.receiver, text, token)

    return CallbackJob(url, "reply", generation, build, message.message_id)


def reply_payload(
    message_id: int, phone_number: str, text: str, token: int
) -> dict[str, Any]:
    """A 2Way reply in the documented shape."""
    return {
        "message_token": token,
        "phone_number": phone_number,
        "time": int(time.time()),
        "message": {"text": text, "tracking_data": f"tracking_id:{message_id}"},
    }
