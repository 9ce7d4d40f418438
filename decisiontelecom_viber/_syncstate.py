"""A `ViberClient`'s state: its async client, its loop's thread, and forks.

Apart from `ViberClient`'s methods (``_sync``), which only run calls: what
a sync client holds (`State`), what rebuilds its async client in a forked
child (`Settings`, `ready`), and how it is shut down, by ``close`` or by the
finalizer when nobody closed it (`shut_down`, `close_forgotten`).
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from typing import Any

from ._client import AsyncViberClient
from ._errors import ClientClosedError, ConfigurationError
from ._limits import RateLimit
from ._portal import LEFT_BEHIND, Portal
from ._syncstream import SyncResultStream


__all__ = ["Settings", "State", "close_forgotten", "ready", "shut_down"]


# Held while a client rebuilds itself in a forked child; made anew in every
# child (a thread of the parent may have held it at the fork).
_FORK_LOCK = threading.Lock()


def _new_fork_lock() -> None:
    global _FORK_LOCK  # (per process, by design)
    _FORK_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_new_fork_lock)


class Settings:
    """What builds the async client again after a fork (the key included)."""

    __slots__ = ("key", "options")

    def __init__(self, key: str | None, options: dict[str, Any]) -> None:
        self.key = key
        self.options = options

    def __repr__(self) -> str:  # (a traceback's locals show it)
        return "<ViberClient settings, redacted>"

    def build(self) -> AsyncViberClient:
        """A new async client with these settings."""
        return AsyncViberClient(self.key, **self.options)

    def cannot_cross_a_fork(self) -> str | None:
        """What in the settings belongs to the process that made it, if anything."""
        if self.options.get("http_client") is not None:
            return "an http_client"
        rate_limit = self.options.get("rate_limit")
        if rate_limit is not None and not isinstance(
            rate_limit, (RateLimit, int, float)
        ):
            return "a Limiter instance"
        return None


class State:
    """A `ViberClient`'s parts, shared with its finalizer."""

    __slots__ = ("client", "closed", "pid", "portal", "streams", "used")

    def __init__(self, client: AsyncViberClient) -> None:
        self.client = client
        # Open streams, closed first by `close` (their results kept).
        self.streams: weakref.WeakSet[SyncResultStream[Any]] = weakref.WeakSet()
        self.portal = Portal()
        self.pid = os.getpid()
        self.used = False
        self.closed = False


def ready(state: State, settings: Settings) -> tuple[AsyncViberClient, Portal]:
    """The async client and portal to run a call on, in this process.

    Raises:
        ClientClosedError: The client is closed.
        ConfigurationError: Used before a fork, with settings that cannot
            cross one (nothing was sent).
    """
    if state.closed:
        raise ClientClosedError("this ViberClient is closed; create a new one")
    if state.pid != os.getpid():
        with _FORK_LOCK:  # (threads racing to the first call in the child)
            if state.pid != os.getpid():
                _after_fork(state, settings)
    state.used = True
    return state.client, state.portal


def _after_fork(state: State, settings: Settings) -> None:
    # (Its portal was abandoned by the fork hook: its thread is dead here.)
    if state.used:
        reason = settings.cannot_cross_a_fork()
        if reason is not None:
            raise ConfigurationError(
                f"this ViberClient made calls in process {state.pid} before "
                f"it was forked, and it holds {reason}, which cannot be used "
                "in another process; create the client in each process (for "
                "Celery, in a worker_process_init handler) or do not use it "
                "before forking; nothing was sent"
            )
        LEFT_BEHIND.append(state.client)  # (its sockets are the parent's)
        state.client = settings.build()
    state.portal = Portal()
    state.pid = os.getpid()


def shut_down(state: State) -> None:
    """Close the async client in its loop, then stop the loop's thread."""
    portal = state.portal
    if state.pid != os.getpid():
        return  # (forked: the parent's thread is not here to stop)
    if not portal.started:
        # Never used: nothing was opened (and at exit no thread may start).
        portal.stop()
        return
    try:
        if not portal.in_loop_thread:
            portal.call(state.client.aclose)
    finally:
        portal.stop()


def close_forgotten(state: State) -> None:
    """The finalizer (also run at exit): close a client nobody closed."""
    if state.closed or state.pid != os.getpid():
        return
    state.closed = True
    used = state.portal.started
    try:
        shut_down(state)
    finally:
        # (After: a warning made an error must not skip the closing.)
        if used:
            warnings.warn(
                "a ViberClient was not closed; use `with ViberClient(...)` or "
                "call close() (closed now)",
                ResourceWarning,
                stacklevel=1,
            )
