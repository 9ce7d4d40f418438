"""``bulk``'s input file, read row by row (CSV or JSON Lines).

Lazily, and never all at once: a file of millions of rows is read as it is
sent. A row that cannot be read fails alone (`RowError`), when its turn
comes; a CSV file's header and quoting were checked before (``_input``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .._errors import ValidationError
from .._models import ViberMessage
from ._fields import convert_row


__all__ = ["count_rows", "message_for", "read_rows"]


class RowError(Exception):
    """A row that cannot be read (not JSON, not UTF-8, too many cells)."""


def read_rows(
    path: Path, delimiter: str = ","
) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    """(row number, row or why it is unreadable), lazily, for CSV or JSON Lines."""
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path, delimiter)
    else:
        yield from _json_rows(path)


def _csv_rows(
    path: Path, delimiter: str
) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    # surrogateescape: a stray byte spoils its row only, not the whole file.
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        # The header as `check_csv` reads it: past blank lines, stripped.
        header = next((r for r in csv.reader(f, delimiter=delimiter) if r), None)
        if header is None:
            return
        reader = csv.DictReader(
            f, fieldnames=[name.strip() for name in header], delimiter=delimiter
        )
        number = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                number += 1
                yield number, RowError(f"unreadable CSV: {error}")
                continue
            number += 1
            yield number, _check_csv_row(row)


def _check_csv_row(row: dict[str | None, Any]) -> Mapping[str, Any] | RowError:
    if None in row:
        return RowError("the row has more cells than the header")
    if None in row.values():
        return RowError("the row has fewer cells than the header")
    for value in row.values():
        if isinstance(value, str) and any(0xDC80 <= ord(c) <= 0xDCFF for c in value):
            return RowError("the row is not valid UTF-8")
    return {str(key): value for key, value in row.items()}


def _json_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    with path.open("rb") as stream:
        number = 0
        for raw in stream:
            if not raw.strip():
                continue
            number += 1
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                yield number, RowError(f"not a JSON object: {error}")
                continue
            if not isinstance(row, dict):
                yield number, RowError("not a JSON object")
                continue
            yield number, row


def count_rows(path: Path, delimiter: str = ",") -> int:
    """The number of rows, for the progress bar (one cheap pass)."""
    return sum(1 for _ in read_rows(path, delimiter))


def message_for(
    row: Mapping[str, Any] | RowError, shared: Mapping[str, Any]
) -> ViberMessage:
    """Build a row's message: its own cells over the values shared by flags.

    Raises:
        ValidationError: The row is unreadable or breaks a message rule.
    """
    if isinstance(row, RowError):
        raise ValidationError("row", str(row))
    merged = {key: value for key, value in shared.items() if value is not None}
    merged.update(
        (key, value) for key, value in row.items() if value is not None and value != ""
    )
    return ViberMessage.from_dict(convert_row(merged))
