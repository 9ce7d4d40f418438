"""Running the task's `before_write` hook, and telling it of a refusal.

A bulk item with ``on_write`` (or a `SendOnceGuard`) sets a hook in the
`before_write` context variable: a record due before its request may be
written. Its failure means "do not write"; when a written request was then
refused for sure, its ``not_written`` undoes the mark. These two runners are
kept out of the attempt runner (`_pipeline`) because they are the whole
contract with the hook: what its failures mean, and which are tolerated.
"""

from __future__ import annotations

import inspect
import logging

from ._context import before_write
from ._errors import ViberError, WriteRefusedError
from ._outcomes import Verdict, verdict


__all__ = ["run_before_write", "run_not_written"]

logger = logging.getLogger("decisiontelecom_viber")


async def run_not_written() -> None:
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


async def run_before_write() -> bool:
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
