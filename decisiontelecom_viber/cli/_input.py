"""``bulk``'s input, checked before any request: columns, delimiter, quoting.

A file whose every row would fail the same way (a misspelt column, the
wrong delimiter, an unclosed quote that swallows the rest of the file) is
one clear error up front, not thousands of failed rows.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._models import ViberMessage


__all__ = ["InputError", "check_csv", "detect_delimiter"]

#: The delimiters detected when ``--delimiter`` is not given: Excel writes
#: ``;`` in many locales, and tab-separated exports are common.
DELIMITERS = (",", ";", "\t")
# Fields a row needs, unless a flag gives them to every row.
_REQUIRED = ("sender", "receiver")


class InputError(Exception):
    """The input file cannot be sent as it is (nothing was sent)."""


def _open(path: Path) -> Any:
    # surrogateescape: a stray byte spoils its row only, not the whole file.
    return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")


def detect_delimiter(path: Path) -> str:
    """The delimiter of the header line: the one of `DELIMITERS` it has most of."""
    header = ""
    with _open(path) as stream:
        for line in stream:
            if line.strip():  # (the reader skips blank lines too)
                header = line
                break
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def check_csv(path: Path, delimiter: str, shared: Mapping[str, Any]) -> None:
    """Check the header and the quoting of a CSV file; raise `InputError`.

    *shared*: the values flags give to every row (a column they give may
    be missing).
    """
    with _open(path) as stream:
        reader = csv.reader(stream, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        try:
            for record in reader:
                if record:  # blank lines before the header are skipped
                    header = record
                    break
        except csv.Error as error:
            raise InputError(f"the header row is unreadable: {error}") from None
        if header is None or not any(cell.strip() for cell in header):
            raise InputError(f"{path} is empty: no header row, no rows")
        _check_header(header, delimiter, shared)
        _check_quoting(reader)


def _check_quoting(reader: Any) -> None:
    """Refuse a quote left open: it swallows every line after it.

    Other unreadable rows (a bad quote inside a cell, a huge cell) fail
    alone when they are sent.
    """
    while True:
        start = reader.line_num + 1  # where the next record begins
        try:
            next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            if "unexpected end of data" in str(error):
                raise InputError(
                    f"line {start}: a quote opened there is never closed: it "
                    "would swallow every line after it into one text; fix the "
                    "quoting (nothing was sent)"
                ) from None


def _check_header(header: list[str], delimiter: str, shared: Mapping[str, Any]) -> None:
    accepted = list(ViberMessage.WIRE_NAMES)
    names = [cell.strip() for cell in header]
    if "" in names:
        raise InputError(
            "the header has an empty column name (a trailing delimiter?); the "
            f"columns are: {', '.join(accepted)}"
        )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(
            f"column(s) {', '.join(repr(n) for n in twice)} appear twice: which "
            "one to send is ambiguous"
        )
    unknown = [name for name in names if name not in accepted]
    if unknown:
        hint = ""
        if len(names) == 1 and any(d in names[0] for d in DELIMITERS if d != delimiter):
            hint = " (is the delimiter right? give --delimiter)"
        raise InputError(
            f"unknown column(s) {', '.join(repr(n) for n in unknown)}{hint}; "
            f"the columns are: {', '.join(accepted)}"
        )
    missing = [
        name for name in _REQUIRED if name not in names and shared.get(name) is None
    ]
    if missing:
        raise InputError(
            f"no {' or '.join(missing)} column (and no --"
            f"{' or --'.join(missing)} flag for every row); the columns are: "
            f"{', '.join(accepted)}"
        )
