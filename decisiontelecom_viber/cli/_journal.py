"""The bulk journal: what was sent, so a crashed run resumes without sending twice.

An append-only JSON Lines file beside the results (``RESULTS.journal``):

* a header naming the input file (with its size and SHA-256, so a resume
  with another file is refused);
* ``{"row": N, "state": "sending"}`` written (and flushed to the operating
  system) *before* row N may leave the process;
* ``{"row": N, "state": "sent" | "failed" | "unknown", ...}`` once it has a
  result.

Records are flushed as they are written: a ``kill -9`` loses nothing the
kernel has been handed. On resume, the last record of each row decides:
sent rows are skipped, unknown rows and rows left ``sending`` (they may have
been in flight when the process died) are reported as unknown and not
resent, failed rows are tried again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import attrs


__all__ = ["Journal", "JournalError", "RowResult", "file_digest"]

FORMAT = 1


class JournalError(Exception):
    """The journal cannot be used for this run (exists, or another input)."""


@attrs.frozen
class RowResult:
    """The outcome of one input row.

    Attributes:
        row: Row number in the input (1-based, header excluded).
        outcome: ``sent``, ``failed`` or ``unknown``.
        message_id: The message ID when sent.
        error_type: Exception class name when not sent.
        error: Error message when not sent.
    """

    row: int
    outcome: str
    message_id: int | None = None
    error_type: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The columns of the results file."""
        return {
            "row": self.row,
            "outcome": self.outcome,
            "message_id": self.message_id,
            "error_type": self.error_type,
            "error": self.error,
        }


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Journal:
    """Reads an existing journal and appends to it, one flushed line per record."""

    def __init__(self, path: Path, input_path: Path, *, resume: bool) -> None:
        self.path = path
        self.results: dict[int, RowResult] = {}
        self.in_flight: set[int] = set()
        identity = {
            "journal": FORMAT,
            "input": str(input_path),
            "size": input_path.stat().st_size,
            "sha256": file_digest(input_path),
        }
        existing = path.exists() and path.stat().st_size > 0
        if existing and not resume:
            raise JournalError(
                f"{path} records an earlier run; pass --resume to continue it "
                "(nothing sent is sent again), or choose another --output"
            )
        if existing:
            self._load(identity)
        self._stream: IO[str] = path.open("a", encoding="utf-8")
        if not existing:
            self._write(identity)

    def _load(self, identity: dict[str, Any]) -> None:
        records = list(_read_lines(self.path))
        if not records or records[0].get("journal") != FORMAT:
            raise JournalError(f"{self.path} is not a bulk journal")
        header = records[0]
        if (header.get("size"), header.get("sha256")) != (
            identity["size"],
            identity["sha256"],
        ):
            raise JournalError(
                f"{self.path} was written for another input file "
                f"({header.get('input')}); resume with the same file"
            )
        for record in records[1:]:
            row = record.get("row")
            if not isinstance(row, int):
                continue
            if record.get("state") == "sending":
                self.in_flight.add(row)
                self.results.pop(row, None)
            else:
                self.in_flight.discard(row)
                self.results[row] = RowResult(
                    row,
                    str(record.get("state")),
                    record.get("message_id"),
                    record.get("error_type"),
                    record.get("error"),
                )

    def _write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        # To the kernel at once: a killed process loses none of it.
        self._stream.flush()

    def sending(self, row: int) -> None:
        """Record that *row* may leave the process from now on."""
        self._write({"row": row, "state": "sending"})

    def record(self, result: RowResult) -> None:
        """Record the outcome of a row."""
        self.results[result.row] = result
        self.in_flight.discard(result.row)
        record = result.to_dict()
        record["state"] = record.pop("outcome")
        self._write(record)

    def close(self) -> None:
        """Flush to disk and close."""
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("r", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write
            if isinstance(record, dict):
                yield record
