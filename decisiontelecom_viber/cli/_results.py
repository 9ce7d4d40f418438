"""``bulk``'s results file: one row per input row, rewritten whole.

The results are derived from the journal (which is the truth), so the file
is replaced atomically at each checkpoint rather than appended to: a crash
leaves the previous complete version, never a torn one.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._journal import RowResult


__all__ = ["write_results"]


def write_results(path: Path, results: Mapping[int, RowResult]) -> None:
    """Write every row's result in row order (atomically: a temp file, then rename)."""
    temporary = path.with_name(path.name + ".tmp")
    rows = [results[row].to_dict() for row in sorted(results)]
    with temporary.open("w", newline="", encoding="utf-8") as stream:
        _write_rows(path, stream, rows)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _write_rows(path: Path, stream: Any, rows: list[dict[str, Any]]) -> None:
    if path.suffix.lower() == ".csv":
        writer = csv.DictWriter(
            stream, fieldnames=["row", "outcome", "message_id", "error_type", "error"]
        )
        writer.writeheader()
        writer.writerows(rows)
    else:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
