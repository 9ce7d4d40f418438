"""`ViberClient`: the sync twin of `AsyncViberClient`.

One `ViberClient` owns one `AsyncViberClient` and one private event loop in
a thread of its own (`_portal`): every method runs the async method there
and waits for it, so that any number of threads share one connection pool
and one rate limiter, with the same guarantees, errors and metrics.

A client used in a process other than the one that created it (Celery's
prefork pool, gunicorn: they fork after import) starts a new thread there;
if it had already run calls before the fork, it also builds a new async
client from its settings, unless they hold objects that cannot cross a fork
(an ``http_client``, a `Limiter` instance), in which case it refuses before
sending anything. That state, the fork and the shutdown are ``_syncstate``'s;
here, the methods.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from ._bulk import ResultStream
from ._client import AsyncViberClient, MessageLike
from ._clock import Clock
from ._constants import DEFAULT_CONCURRENCY, DEFAULT_MAX_CONNECTIONS
from ._context import WireWitness, wire_witness
from ._errors import ClientClosedError, OutcomeUnknownError
from ._limits import Limiter, Priority, RateLimit
from ._metrics import ClientMetrics
from ._models import MessageReceipt, SendResult, StatusResult, ViberMessage
from ._options import DEFAULT, Default
from ._portal import Portal, Returned
from ._retry import RetryHook, RetryPolicy
from ._syncstate import Settings, State, close_forgotten, ready, shut_down
from ._syncstream import ProgressCallback, SyncResultStream
from ._telemetry import Telemetry, carry_context


__all__ = ["ViberClient"]

P = ParamSpec("P")
T = TypeVar("T")
Result = TypeVar("Result")


class ViberClient:
    """Sync client of DecisionTelecom's Viber Business Messages API.

    The same arguments, methods, errors and guarantees as `AsyncViberClient`,
    for code without an event loop: Django and Flask views, scripts, Celery
    tasks. It is thread-safe: make one per process and share it (its
    connection pool and rate limiter are shared by every thread). Close it
    with ``with ViberClient(...) as client:`` or `close`; a client dropped
    or still open at exit is closed with a `ResourceWarning`.

    Its calls run on a private event loop in a thread of its own. Callbacks
    (*on_retry*, ``on_progress``, ``on_write``) run in that thread: keep them
    short, and do not call the client from them.

    Ctrl-C while a call waits cancels the call, waits until it has ended and
    raises the `KeyboardInterrupt`; its ``__cause__`` is an
    `OutcomeUnknownError` unless nothing reached the API (then it has
    none), and a note says what happened.

    After a fork (Celery's prefork pool, gunicorn) the client starts a new
    thread in the child on its first call. If it had made calls before the
    fork it also builds a new connection pool; with an *http_client* or a
    `Limiter` instance (such as a `RedisLimiter`) it then raises
    `ConfigurationError` instead, before sending: create such a client in
    each process (for example in Celery's ``worker_process_init``), or do
    not use it before the fork.

    Args are those of `AsyncViberClient`.

    Raises:
        ConfigurationError: No access key, or an invalid setting.
    """

    __slots__ = ("__weakref__", "_finalizer", "_settings", "_state")

    def __init__(
        self,
        access_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | Default | None = DEFAULT,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen, immutable
        rate_limit: RateLimit | Limiter | float | None = RateLimit(),  # noqa: B008
        http_client: httpx.AsyncClient | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        verify: ssl.SSLContext | str | bool = True,
        proxy: str | httpx.Proxy | Default | None = DEFAULT,
        allow_insecure_http: bool = False,
        on_retry: RetryHook | Sequence[RetryHook] = (),
        callback_url: str | None = None,
        callback_secret: str | bytes | Sequence[str | bytes] | None = None,
        callback_reference: Callable[[ViberMessage], str | None] | None = None,
        clock: Clock | None = None,
        telemetry: Telemetry | None = Telemetry(),  # noqa: B008 - frozen
    ) -> None:
        # The key leaves this frame at once (a traceback's locals show it).
        settings = Settings(
            access_key,
            {
                "base_url": base_url,
                "timeout": timeout,
                "retry": retry,
                "rate_limit": rate_limit,
                "http_client": http_client,
                "max_connections": max_connections,
                "verify": verify,
                "proxy": proxy,
                "allow_insecure_http": allow_insecure_http,
                "on_retry": on_retry,
                "callback_url": callback_url,
                "callback_secret": callback_secret,
                "callback_reference": callback_reference,
                "clock": clock,
                "telemetry": telemetry,
            },
        )
        del access_key, callback_secret
        self._settings = settings
        self._state = State(settings.build())
        self._finalizer = weakref.finalize(self, close_forgotten, self._state)

    def __repr__(self) -> str:
        state = getattr(self, "_state", None)
        if state is None:
            return "<ViberClient (not set up)>"
        status = "closed" if state.closed else "open"
        return f"<ViberClient base_url={state.client.base_url!r} {status}>"

    # -- what the async client knows ----------------------------------------------

    @property
    def async_client(self) -> AsyncViberClient:
        """The `AsyncViberClient` behind this client (use it only through `call`)."""
        return self._state.client

    @property
    def base_url(self) -> str:
        """The API root this client talks to."""
        return self._state.client.base_url

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force."""
        return self._state.client.retry_policy

    @property
    def rate_limiter(self) -> Limiter | None:
        """The limiter every call goes through (None when not limited)."""
        return self._state.client.rate_limiter

    @property
    def current_rate(self) -> float | None:
        """Requests per second the limiter allows now; None when unlimited."""
        return self._state.client.current_rate

    @property
    def metrics(self) -> ClientMetrics:
        """A snapshot of the client's counters (`AsyncViberClient.metrics`)."""
        return self._state.client.metrics

    @property
    def is_closed(self) -> bool:
        """Whether `close` was called."""
        return self._state.closed

    def callback_url_for(self, reference: str) -> str | None:
        """The signed callback URL carrying *reference*.

        See `AsyncViberClient.callback_url_for`.
        """
        return self._state.client.callback_url_for(reference)

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> ViberClient:
        if self._state.closed:
            raise ClientClosedError
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client, as `AsyncViberClient.aclose` does, and stop its thread.

        Calls waiting to be written raise `ClientClosedError`; calls on the
        wire finish first. Closing twice is harmless.
        """
        state = self._state
        if state.closed:
            return
        state.closed = True
        self._finalizer.detach()
        for stream in list(state.streams):
            stream.stop()
        shut_down(state)

    # -- calls --------------------------------------------------------------------

    def send_message(self, message: MessageLike, *, priority: Priority = "high") -> int:
        """Send one message and return its message ID (`AsyncViberClient.send_message`).

        Raises:
            KeyboardInterrupt: Ctrl-C while waiting; its ``__cause__`` is an
                `OutcomeUnknownError` when the request was written.
            ViberError: As `AsyncViberClient.send_message`.
        """
        return self._run(lambda client: client.send_message(message, priority=priority))

    def get_message_status(
        self, message_id: int, *, priority: Priority = "high"
    ) -> MessageReceipt:
        """Look up the status of a message (`AsyncViberClient.get_message_status`)."""
        return self._run(
            lambda client: client.get_message_status(message_id, priority=priority)
        )

    def wait_for_status(
        self,
        message_id: int,
        *,
        timeout: float = 300.0,
        poll_initial: float = 1.0,
        poll_max: float = 30.0,
        until: Callable[[MessageReceipt], bool] | None = None,
        priority: Priority = "high",
    ) -> MessageReceipt:
        """Poll a message's status until it is final.

        See `AsyncViberClient.wait_for_status`.
        """
        return self._run(
            lambda client: client.wait_for_status(
                message_id,
                timeout=timeout,
                poll_initial=poll_initial,
                poll_max=poll_max,
                until=until,
                priority=priority,
            )
        )

    def send_messages(
        self,
        messages: Iterable[MessageLike] | AsyncIterable[MessageLike],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        priority: Priority = "normal",
        on_write: Callable[[int], None] | None = None,
        on_refused: Callable[[int], None] | None = None,
    ) -> SyncResultStream[SendResult]:
        """Send many messages concurrently; iterate one `SendResult` per item.

        As `AsyncViberClient.send_messages`, iterated with ``for``: use it as
        ``with client.send_messages(...) as results:`` if you may leave the
        loop early. An input other than a list, tuple or range is read in a
        thread of its own, a few items ahead (so that a generator reading a
        database never holds up the client's loop); items read ahead when
        the stream closes early are failed results in ``unconsumed``.
        """
        client, portal = self._ready()
        return self._track(
            portal,
            lambda items: client.send_messages(
                items,
                concurrency=concurrency,
                ordered=ordered,
                on_progress=on_progress,
                progress_interval=progress_interval,
                priority=priority,
                on_write=on_write,
                on_refused=on_refused,
            ),
            messages,
            lambda index, item: SendResult(index, item, error=_closed_before(index)),
        )

    def get_message_statuses(
        self,
        message_ids: Iterable[int] | AsyncIterable[int],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        priority: Priority = "normal",
    ) -> SyncResultStream[StatusResult]:
        """Look up many statuses; iterate one `StatusResult` per ID."""
        client, portal = self._ready()
        return self._track(
            portal,
            lambda items: client.get_message_statuses(
                items,
                concurrency=concurrency,
                ordered=ordered,
                on_progress=on_progress,
                progress_interval=progress_interval,
                priority=priority,
            ),
            message_ids,
            lambda index, item: StatusResult(index, item, error=_closed_before(index)),
        )

    def call(
        self,
        function: Callable[Concatenate[AsyncViberClient, P], Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``await function(async_client, *args, **kwargs)`` on the client's loop.

        For async APIs that take an `AsyncViberClient`, such as
        `SendOnceGuard.send`::

            message_id = client.call(guard.send, message, dedupe_key=key)

        Objects they hold that belong to an event loop (a
        ``redis.asyncio.Redis``) must be used only through this client's
        calls. Ctrl-C cancels the call and is raised once it has ended.
        """
        return self._run(lambda client: function(client, *args, **kwargs))

    # -- plumbing -----------------------------------------------------------------

    def _run(self, make: Callable[[AsyncViberClient], Coroutine[Any, Any, T]]) -> T:
        client, portal = self._ready()
        witness = WireWitness()
        enter = carry_context()  # (the caller's span: the parent of the call's)

        async def run() -> T:
            wire_witness.set(witness)  # (in the call's own task and context)
            if enter is not None:
                enter()  # (the task's own context: nothing to detach)
            return await make(client)

        def explain(interrupt: KeyboardInterrupt, ending: BaseException) -> None:
            _explain_interrupt(interrupt, ending, witness)

        try:
            return portal.call(run, on_interrupt=explain)
        except asyncio.CancelledError:
            # The loop stopped under the call (closed from its own thread,
            # or a callback's SystemExit): what came of it depends on the wire.
            if witness.written:
                raise OutcomeUnknownError(
                    "the client's loop stopped while the request was on the "
                    "wire: the message may have been sent"
                ) from None
            raise ClientClosedError(
                "this ViberClient was closed before the request was written"
            ) from None

    def _track(
        self,
        portal: Portal,
        open_stream: Callable[[Any], ResultStream[Result]],
        items: Iterable[Any] | AsyncIterable[Any],
        not_sent: Callable[[int, Any], Result],
    ) -> SyncResultStream[Result]:
        stream = SyncResultStream(
            portal, open_stream, items, not_sent=not_sent, owner=self
        )
        self._state.streams.add(stream)
        return stream

    def _ready(self) -> tuple[AsyncViberClient, Portal]:
        return ready(self._state, self._settings)


def _closed_before(index: int) -> ClientClosedError:
    return ClientClosedError(
        f"item {index} was read from the input as the stream closed; not sent"
    )


def _explain_interrupt(
    interrupt: KeyboardInterrupt, ending: BaseException, witness: WireWitness
) -> None:
    if isinstance(ending, Returned):
        # (Sent, or refused for good: the result is not handed back, so the
        # cause says what matters: do not send it again blindly.)
        interrupt.__cause__ = OutcomeUnknownError(
            f"interrupted after the call had ended ({ending.value!r}): "
            "check before doing it again"
        )
        note = f"the call had ended before the interrupt: {ending.value!r}"
    elif witness.written:
        interrupt.__cause__ = OutcomeUnknownError(
            "interrupted after the request was written: the message may have "
            "been sent; check before sending it again"
        )
        note = "the request was written: it may have been sent (outcome unknown)"
    elif isinstance(ending, KeyboardInterrupt):
        # (Not waited for: its request may still be on its way.)
        interrupt.__cause__ = OutcomeUnknownError(
            "interrupted again before the call had ended: the message may "
            "have been sent; check before sending it again"
        )
        note = "interrupted again before the call had ended (outcome unknown)"
    else:
        note = "interrupted before any request reached the API: nothing was sent"
    add_note = getattr(interrupt, "add_note", None)
    if add_note is not None:  # (Python 3.11+)
        add_note(f"decisiontelecom_viber: {note}")
