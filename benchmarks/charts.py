"""SVG charts of one benchmark run, for docs/images (``nox -s bench``).

Drawn from the very rows that make the run's tables (``run.py``), so that a
picture never shows other figures than the text beside it. A chart whose
workloads were not run (``--only``) is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib


matplotlib.use("Agg")  # (no display: files only)

import matplotlib.pyplot as plt


Rows = list[dict[str, Any]]

# Reproducible files: no date, a fixed hash salt for the SVG ids.
plt.rcParams.update(
    {
        "svg.hashsalt": "decisiontelecom-viber",
        "svg.fonttype": "none",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)
METADATA = {"Date": None, "Creator": "benchmarks/charts.py"}

SERVER_LIMIT = 200  # requests/s: the sandbox of the limiter workloads
WINDOW = 0.5  # seconds over which the sent rate is measured


def _get(rows: Rows, workload: str, client: str = "sdk") -> dict[str, Any] | None:
    for row in rows:
        if (
            row.get("workload") == workload
            and row.get("client") == client
            and "error" not in row
        ):
            return row
    return None


def throughput(rows: Rows, path: Path) -> bool:
    """Messages/s and CPU µs per message, the SDK against the baselines."""
    workloads = ["no latency", "50 ms latency"]
    clients = [r["client"] for r in rows if r.get("workload") == workloads[0]]
    if not clients:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for axis, (title, value) in zip(
        axes,
        [
            ("messages/s", lambda r: r["n"] / r["elapsed"]),
            ("CPU µs per message", lambda r: r["cpu"] / max(1, r["n"]) * 1e6),
        ],
        strict=True,
    ):
        width = 0.8 / len(clients)
        for index, client in enumerate(clients):
            values = []
            for workload in workloads:
                row = _get(rows, workload, client)
                values.append(value(row) if row else 0.0)
            positions = [w + index * width for w in range(len(workloads))]
            axis.bar(positions, values, width, label=client)
        axis.set_xticks([w + 0.4 - width / 2 for w in range(len(workloads))])
        axis.set_xticklabels(workloads)
        axis.set_title(title)
    axes[0].legend(fontsize=7, frameon=False)
    figure.suptitle("Throughput and CPU, 64 in flight (higher / lower is better)")
    _save(figure, path)
    return True


def _sent_rate(series: list[list[Any]]) -> tuple[list[float], list[float]]:
    """Messages accepted per second over the last WINDOW, at each sample."""
    times, rates = [], []
    for index, (at, _, sent, _) in enumerate(series):
        back = index
        while back > 0 and at - series[back - 1][0] <= WINDOW:
            back -= 1
        span = at - series[back][0]
        if span > 0:
            times.append(at)
            rates.append((sent - series[back][2]) / span)
    return times, rates


def limiter(rows: Rows, path: Path) -> bool:
    """The limiter's rate, the rate sent and the 429s over time, per dialect."""
    found = [
        r
        for r in rows
        if r.get("workload", "").startswith("200/s, headers: ")
        and r.get("client") == "sdk"
        and r.get("series")
    ]
    if not found:
        return False
    figure, axes = plt.subplots(
        len(found), 1, figsize=(8, 1.9 * len(found)), sharex=True, squeeze=False
    )
    for axis, row in zip(axes[:, 0], found, strict=True):
        series = row["series"]
        times = [s[0] for s in series]
        axis.plot(
            times,
            [s[1] for s in series],
            label="limiter's rate",
            color="tab:purple",
            linewidth=1.2,
        )
        sent_times, sent = _sent_rate(series)
        axis.plot(
            sent_times, sent, label="accepted/s", color="tab:green", linewidth=0.9
        )
        axis.axhline(SERVER_LIMIT, color="grey", linestyle="--", linewidth=0.8)
        axis.set_ylim(0, SERVER_LIMIT * 1.6)
        axis.set_ylabel("req/s")
        refused = axis.twinx()
        refused.step(
            times, [s[3] for s in series], where="post", color="tab:red", linewidth=0.9
        )
        refused.set_ylabel("429s", color="tab:red")
        refused.set_ylim(bottom=0)
        dialect = row["workload"].removeprefix("200/s, headers: ")
        axis.set_title(
            f"headers: {dialect} — {row['accepted']:,} sent, "
            f"{row['rate_limited']} 429s",
            fontsize=8,
            loc="left",
        )
    axes[0, 0].legend(fontsize=7, frameon=False, loc="upper right")
    axes[-1, 0].set_xlabel("seconds (dashed: the server's limit, 200/s)")
    figure.suptitle("The limiter converging on the server's limit")
    _save(figure, path)
    return True


def single_sends(rows: Rows, path: Path) -> bool:
    """Single-send latency: idle, and during a campaign of 64 and 512 in flight."""
    named = [
        ("idle", "single sends, idle"),
        ("during c=64", "single sends during a campaign, c=64"),
        ("during c=512", "single sends during a campaign, c=512"),
    ]
    found = [
        (label, row)
        for label, name in named
        if (row := _get(rows, name)) is not None and row.get("singles")
    ]
    if not found:
        return False
    figure, axis = plt.subplots(figsize=(6, 3))
    for label, row in found:
        ordered = sorted(row["singles"])
        share = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axis.step([v * 1e3 for v in ordered], share, where="post", label=label)
    axis.set_xlabel("send_message latency, ms")
    axis.set_ylabel("share of sends")
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=7, frameon=False, loc="lower right")
    axis.set_title("Single sends (priority high) beside a campaign, 200/s server")
    _save(figure, path)
    return True


CHARTS: dict[str, Callable[[Rows, Path], bool]] = {
    "bench-throughput.svg": throughput,
    "limiter-dialects.svg": limiter,
    "single-sends-latency.svg": single_sends,
}


def write(rows: Rows, directory: Path) -> list[Path]:
    """Draw every chart the rows have data for; the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in CHARTS.items():
        if draw(rows, directory / name):
            written.append(directory / name)
    return written


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, format="svg", metadata=METADATA)
    plt.close(figure)
