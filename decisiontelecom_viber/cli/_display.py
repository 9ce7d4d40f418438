"""``bulk``'s progress display."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


__all__ = ["Display"]

# Seconds between progress lines when standard error is not a terminal.
PLAIN_EVERY = 5.0


class Display:
    """The progress of a ``bulk`` run.

    A bar on a terminal, a plain line every few seconds otherwise (a log, a
    CI job), or nothing with --no-progress.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.counts = {"sent": 0, "failed": 0, "unknown": 0}
        self._total = total
        self._done = 0
        self._started = time.monotonic()
        self._last_line = self._started
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._plain: Console | None = None
        if not enabled:
            return
        console = Console(stderr=True)
        if not console.is_terminal:
            self._plain = console
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>6.1f}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(
            "sending", total=total, rate=0.0, counts=self._text()
        )

    def _text(self) -> str:
        c = self.counts
        return f"ok {c['sent']}  failed {c['failed']}  unknown {c['unknown']}"

    def __enter__(self) -> Display:
        self._started = self._last_line = time.monotonic()
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self._plain is not None:
            self._line(time.monotonic())

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self._done += 1
        now = time.monotonic()
        rate = self._done / max(now - self._started, 1e-3)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, rate=rate, counts=self._text())
        elif self._plain is not None and now - self._last_line >= PLAIN_EVERY:
            self._line(now)

    def _line(self, now: float) -> None:
        assert self._plain is not None  # noqa: S101 - only called when plain
        self._last_line = now
        rate = self._done / max(now - self._started, 1e-3)
        self._plain.print(
            f"sending: {self._done}/{self._total} rows, {rate:.1f}/s, "
            + self._text().replace("  ", ", "),
            highlight=False,
        )
