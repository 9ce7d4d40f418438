"""The bulk journal: what was sent, so a crashed run resumes without sending twice.

An append-only JSON Lines file beside the results (``RESULTS.journal``):

* a header naming the input file (with its size and SHA-256, so a resume
  with another file is refused) and the run's ID (signed into callback
  references, so that callbacks of this journal's rows can be told apart);
* ``{"row": N, "state": "writing"}`` written (and handed to the operating
  system) immediately *before* row N's request is first written, after the
  rate limiter let it go (the client's ``on_write``): a row waiting for the
  limiter has no record, so a crash leaves only the rows on the wire in
  doubt;
* ``{"row": N, "state": "waiting"}`` when that request was refused for sure
  (a 429, the API's own 5xx) and a retry waits: not on the wire until its
  next ``writing``;
* ``{"row": N, "state": "sent" | "failed" | "unknown", ...}`` once it has a
  result (a callback reconciling an unknown row appends a ``sent`` one).

Each record is one ``write`` of a whole line to the kernel (``O_APPEND``):
a ``kill -9`` loses nothing the kernel has been handed, and `sync` (called
at checkpoints and at the end) puts it on disk. A run holds an exclusive
``flock`` on the journal throughout: a second run on the same output stops
at once. A crash (or a full disk) can leave a last line without its
newline: on open it is cut off, with a warning, before anything is
appended. On resume, the last record of each row decides: sent rows are
skipped, unknown rows and rows left ``writing`` (or ``sending``, in
journals of older versions: they may have been in flight when the process
died) are reported as unknown and not resent, failed rows and rows with no
record are sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs


__all__ = ["Journal", "JournalError", "JournalLockedError", "RowResult", "file_digest"]

FORMAT = 1
# Row states that say "its request may have been written, no result yet"
# ("sending": journals of versions before the two phases).
IN_DOUBT = ("writing", "sending")


class JournalError(Exception):
    """The journal cannot be used for this run (exists, or another input)."""


class JournalLockedError(JournalError):
    """Another run holds the journal."""


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
    """Reads an existing journal and appends to it, one whole line per write.

    Args:
        path: The journal file.
        input_path: The input file it records; None to open an existing
            journal whatever its input (to reconcile it).
        resume: Continue an existing journal (else one must not exist).
        warn: Told what a repair of a torn journal cut off.

    Raises:
        JournalLockedError: Another run holds the journal.
        JournalError: It exists without *resume*, or records another input.
    """

    def __init__(
        self,
        path: Path,
        input_path: Path | None,
        *,
        resume: bool,
        warn: Any = None,
        delimiter: str | None = None,
    ) -> None:
        self.path = path
        self._delimiter = delimiter
        self.results: dict[int, RowResult] = {}
        self.in_flight: set[int] = set()
        # The ID of the run that made the journal (kept by resumes); None in
        # journals of older versions.
        self.run_id: str | None = None
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(self._fd, path)
            if input_path is None:
                self._open_existing(warn)
            else:
                self._open(input_path, resume, warn)
        except BaseException:
            os.close(self._fd)
            raise

    def _open(self, input_path: Path, resume: bool, warn: Any) -> None:
        identity = {
            "journal": FORMAT,
            "input": str(input_path),
            "size": input_path.stat().st_size,
            "sha256": file_digest(input_path),
        }
        if self._delimiter is not None:
            # Another delimiter numbers the rows differently.
            identity["delimiter"] = self._delimiter
        if os.fstat(self._fd).st_size > 0 and not resume:
            raise JournalError(
                f"{self.path} records an earlier run; pass --resume to continue "
                "it (nothing sent is sent again), or choose another --output"
            )
        self._repair(warn)
        if os.fstat(self._fd).st_size > 0:
            self._load(identity)
        else:  # new (or only a torn header: nothing was sent after it)
            self.run_id = identity["run"] = secrets.token_hex(6)
            self._write(identity)
            self.sync()

    def _open_existing(self, warn: Any) -> None:
        self._repair(warn)
        if os.fstat(self._fd).st_size == 0:
            raise JournalError(f"{self.path} is empty: not a bulk journal")
        self._load(None)

    def _repair(self, warn: Any) -> None:
        cut = _repair(self._fd)
        if cut and warn is not None:
            warn(
                f"cut off the journal's torn last record ({cut} bytes, from a "
                "crash or a full disk): a row whose "
                "'writing' record was torn was not sent; a row whose result "
                "was torn stays 'writing' and is reported unknown"
            )

    def _load(self, identity: dict[str, Any] | None) -> None:
        records = list(_read_lines(self.path))
        if not records or records[0].get("journal") != FORMAT:
            raise JournalError(f"{self.path} is not a bulk journal")
        header = records[0]
        run_id = header.get("run")
        self.run_id = run_id if isinstance(run_id, str) and run_id else None
        if identity is not None:
            self._check_identity(header, identity)
        for record in records[1:]:
            row = record.get("row")
            if not isinstance(row, int):
                continue
            state = record.get("state")
            if state in IN_DOUBT:
                self.in_flight.add(row)
                self.results.pop(row, None)
            elif state == "waiting":  # refused for sure: as if never written
                self.in_flight.discard(row)
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

    def _check_identity(self, header: dict[str, Any], identity: dict[str, Any]) -> None:
        if (header.get("size"), header.get("sha256")) != (
            identity["size"],
            identity["sha256"],
        ):
            raise JournalError(
                f"{self.path} was written for another input file "
                f"({header.get('input')}); resume with the same file"
            )
        if "delimiter" in identity:
            was = header.get("delimiter", ",")
            if was != identity["delimiter"]:
                shown = "tab" if was == "\t" else was
                raise JournalError(
                    f"{self.path} was written reading the input with the "
                    f"delimiter {shown!r} (its rows are numbered that way); "
                    f"resume with --delimiter {shown!r}"
                )

    def _write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        # One write of the whole line (O_APPEND): a killed process leaves
        # whole lines. A short write (a full disk) leaves a torn one, which
        # the next open cuts off; this run stops here.
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"the journal {self.path} could not be written (disk full?)")

    def writing(self, row: int) -> None:
        """Record that *row*'s request is about to be written.

        Raises:
            OSError: The record is not in the journal: *row* must not be sent.
        """
        self._write({"row": row, "state": "writing"})

    def waiting(self, row: int) -> None:
        """Record that *row*'s request was refused for sure; a retry waits."""
        self._write({"row": row, "state": "waiting"})

    def record(self, result: RowResult) -> None:
        """Record the outcome of a row."""
        self.results[result.row] = result
        self.in_flight.discard(result.row)
        record = result.to_dict()
        record["state"] = record.pop("outcome")
        self._write(record)

    def sync(self) -> None:
        """Put what was written on disk (a checkpoint)."""
        os.fsync(self._fd)

    def close(self) -> None:
        """Sync, unlock and close."""
        try:
            self.sync()
        finally:
            os.close(self._fd)


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalLockedError(
            f"another run is using {path} (it holds the journal's lock); wait "
            "for it to finish, or stop it first"
        ) from None


def _repair(fd: int) -> int:
    """Cut a torn last line (no line end, or not JSON); return the bytes cut.

    Only the last line is ever cut, however long it is (an API error
    message can make a record of any length).
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    if os.pread(fd, 1, size - 1) == b"\n":
        start = _line_start(fd, size - 1)
        try:
            json.loads(os.pread(fd, size - start, start))
        except ValueError:
            pass  # a whole line that is not a record: garbage from a crash
        else:
            return 0
    else:
        start = _line_start(fd, size)
    os.ftruncate(fd, start)
    return size - start


def _line_start(fd: int, end: int) -> int:
    """Where the line holding the bytes before *end* starts (after a newline)."""
    chunk = 1 << 16
    position = end
    while position > 0:
        begin = max(0, position - chunk)
        newline = os.pread(fd, position - begin, begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        position = begin
    return 0


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("r", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write
            if isinstance(record, dict):
                yield record
