"""Exit codes of the command line, documented in docs/cli.md."""

from __future__ import annotations

import enum


__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """What the ``decisiontelecom-viber`` process exit code means."""

    OK = 0
    """Done: the message was sent, the status is final, every row was sent."""
    ERROR = 1
    """An unexpected error (run with ``--debug`` for the traceback)."""
    USAGE = 2
    """Bad command-line usage (unknown option, missing argument)."""
    CONFIGURATION = 3
    """No access key, a bad base URL, or a missing extra."""
    INVALID = 4
    """The message (or a file or argument) is invalid; nothing was sent."""
    REFUSED = 5
    """The API refused the request (after retries)."""
    UNREACHABLE = 6
    """The API could not be reached (after retries); nothing was sent."""
    OUTCOME_UNKNOWN = 7
    """No usable answer: the message may or may not have been sent."""
    TIMEOUT = 8
    """``wait`` gave up before the status was final."""
    PARTIAL = 9
    """``bulk`` finished, but some rows failed or have an unknown outcome."""
    LOCKED = 10
    """``bulk``: another run holds the journal; nothing was sent."""
    STOPPED_KEY = 11
    """``bulk`` stopped early: the API refused the access key (401/403)."""
    STOPPED_BALANCE = 12
    """``bulk`` stopped early: the balance is insufficient (402)."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C, SIGTERM)."""
