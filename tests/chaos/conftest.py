"""The chaos suite's marker, its sandbox server, and its report.

Every run appends its figures to the session's report; at the end of the
session the table is printed (visible with ``-s``) and, when the
``CHAOS_REPORT`` environment variable names a file, written there: Markdown
if the name ends in ``.md``, JSON otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from decisiontelecom_viber.sandbox import SandboxConfig, SandboxServer, serve_sandbox


REPORT_ENV = "CHAOS_REPORT"

# (column title, figure key) of the Markdown table, in order.
COLUMNS = (
    ("run", "run"),
    ("policy", "policy"),
    ("sends", "sends"),
    ("requests", "requests"),
    ("500", "fault_500"),
    ("502 HTML", "fault_502_html"),
    ("drop before", "fault_disconnect_before"),
    ("drop after", "fault_disconnect_after"),
    ("truncated", "fault_truncated_body"),
    ("spikes", "latency_spikes"),
    ("read timeouts", "read_timeouts"),
    ("429s", "rate_limited"),
    ("sent", "sent"),
    ("failed", "failed"),
    ("unknown", "unknown"),
    ("ambiguous", "ambiguous"),
    ("duplicates", "duplicates"),
    ("lost", "lost"),
    ("misreported", "misreported"),
    ("seconds", "seconds"),
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: long fault-injection runs of send_messages against the sandbox "
        "(nox -s chaos)",
    )


@pytest.fixture(scope="module")
def chaos_server() -> Iterator[SandboxServer]:
    """One sandbox under uvicorn for the module; each run resets it."""
    with serve_sandbox(SandboxConfig()) as server:
        yield server


def markdown_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(title for title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for run in runs:
        cells = []
        for _, key in COLUMNS:
            value = run.get(key, "")
            cells.append(f"{value:,}" if isinstance(value, int) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": runs,
        "total_sends": sum(run["sends"] for run in runs),
        "total_seconds": round(sum(run["seconds"] for run in runs), 1),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def write_report(path: Path, runs: list[dict[str, Any]]) -> None:
    report = summary(runs)
    if path.suffix == ".md":
        text = (
            f"# Chaos suite figures\n\n{markdown_table(runs)}\n\n"
            f"{report['total_sends']:,} sends in {report['total_seconds']} s "
            f"(Python {report['python']}, {report['machine']}).\n"
        )
        for run in runs:
            if run.get("notes"):
                text += f"\n- {run['run']}: {run['notes']}"
        path.write_text(text + "\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def chaos_report() -> Iterator[list[dict[str, Any]]]:
    """Runs append their figures here; they are printed and saved at the end."""
    runs: list[dict[str, Any]] = []
    yield runs
    if not runs:
        return
    report = summary(runs)
    print(  # noqa: T201 - the figures are the point of the suite
        f"\n\nChaos figures ({report['total_sends']:,} sends, "
        f"{report['total_seconds']} s):\n{markdown_table(runs)}\n",
        file=sys.stdout,
    )
    target = os.environ.get(REPORT_ENV)
    if target:
        write_report(Path(target), runs)
