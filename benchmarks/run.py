"""Run every workload against every client and print the table (Markdown).

    python benchmarks/run.py [--quick] [--only WORKLOAD ...] [--json FILE]

Each server runs in its own process on loopback (the minimal fast server for
throughput, the sandbox under uvicorn for rate limits), and each client run in
its own process, so CPU time and peak RSS are the client's alone. Targets
(issue 4) are checked and reported under the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


HERE = Path(__file__).resolve().parent
KEY = "bench-key"
CLIENTS = ["sdk", "httpx-aiohttp", "aiohttp", "httpx"]


@contextlib.contextmanager
def fast_server(latency: float = 0.0) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "fast_server.py"), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1/api"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout:
            process.stdout.close()


@contextlib.contextmanager
def sandbox(*flags: str) -> Iterator[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "decisiontelecom_viber.sandbox",
            "--port",
            "0",
            "--access-key",
            KEY,
            "--no-record-requests",
            *flags,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().rsplit(" ", 1)[-1].strip()
        warm(url)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout:
            process.stdout.close()


def warm(url: str) -> None:
    """A few requests to a fresh sandbox, then time for its bucket to refill.

    A cold server answers its first requests only after importing and
    setting up (100-200 ms here), then takes everything queued at once:
    a burst a running server would never see. (Yii2 refills at whole
    seconds: the wait covers two.)
    """
    sys.path.insert(0, str(HERE))
    from clients import body, headers

    for n in range(3):
        request = urllib.request.Request(
            f"{url}/send-viber", data=body(10**7 + n), headers=headers(KEY)
        )
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10).close()
    time.sleep(2.1)


def redis_run(url: str, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import redis_workers

    try:
        return redis_workers.run(url, KEY, n)
    except (RuntimeError, OSError) as error:
        return {"client": "sdk", "error": str(error).splitlines()[-1:]}


def run_script(script: str, name: str, url: str, n: int, *extra: str) -> Any:
    """Run a measuring script in its own process; its last stdout line (JSON).

    A failed run is ``{"client": name, "error": [its last stderr line]}``.
    """
    try:
        output = _run_script(script, name, url, n, *extra)
    except subprocess.TimeoutExpired:
        return {"client": name, "error": ["timed out after 600 s"]}
    if output.returncode:
        return {"client": name, "error": output.stderr.strip().splitlines()[-1:]}
    return json.loads(output.stdout.strip().splitlines()[-1])


def _run_script(
    script: str, name: str, url: str, n: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(HERE / script),
            name,
            "--url",
            url,
            "--key",
            KEY,
            "-n",
            str(n),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def client_run(client: str, url: str, n: int, *extra: str) -> dict[str, Any]:
    return dict(run_script("clients.py", client, url, n, *extra))


def sync_run(url: str, mode: str, n: int) -> list[dict[str, Any]]:
    got = run_script("sync_clients.py", mode, url, n)
    return [got] if isinstance(got, dict) else list(got)


TELEMETRY_MODES = ("absent", "off", "no-sdk", "sdk")


def telemetry_run(url: str, n: int, rounds: int = 3) -> list[dict[str, Any]]:
    """Each OpenTelemetry mode in its own process, in alternating rounds
    (this machine's speed drifts); a row per mode sums its rounds."""
    totals: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for mode in TELEMETRY_MODES:
            got = run_script("telemetry_cost.py", mode, url, n // rounds)
            if "error" in got:
                return [got]
            row = totals.setdefault(
                mode,
                {"client": got["client"], "n": 0, "elapsed": 0.0, "cpu": 0.0,
                 "accepted": 0, "peak_rss_mb": 0.0},
            )  # fmt: skip
            for key in ("n", "elapsed", "cpu", "accepted"):
                row[key] += got[key]
            row["peak_rss_mb"] = max(row["peak_rss_mb"], got["peak_rss_mb"])
    return list(totals.values())


SDK_ONLY = ["sdk"]
LIMITED = ("--rate", "200", "--burst", "20")
# Single sends during a campaign (and alone, for the idle baseline).
SINGLES = ["--singles", "40", "--singles-every", "0.1"]


def workloads(quick: bool) -> list[dict[str, Any]]:
    scale = 10 if quick else 1
    n = 2_000 // scale
    dialects = [
        ("none", LIMITED),
        ("Yii2 200/1 s", ("--rate", "200", "--rate-limit-headers", "yii2")),
        (
            "Yii2 600/3 s",
            (
                "--rate",
                "200",
                "--rate-limit-headers",
                "yii2",
                "--rate-limit-window",
                "3",
            ),
        ),
        ("full-reset", (*LIMITED, "--rate-limit-headers", "full-reset")),
        ("next-token", (*LIMITED, "--rate-limit-headers", "next-token")),
    ]
    return [
        {
            "name": "no latency",
            "server": ("fast", 0.0),
            "n": 10_000 // scale,
            "args": ["-c", "64", "--warmup", "1000"],
        },
        {
            "name": "50 ms latency",
            "server": ("fast", 0.05),
            "n": 5_000 // scale,
            "args": ["-c", "64", "--warmup", "200"],
        },
        *(
            {
                "name": f"200/s, headers: {dialect}",
                "server": ("sandbox", flags),
                "n": n,
                "args": ["-c", "64"],
                "clients": SDK_ONLY,
                "capacity": 600
                if "600" in dialect
                else 200
                if "Yii2" in dialect
                else 20,
            }
            for dialect, flags in dialects
        ),
        {
            "name": "RateLimit(rate=200, burst=20) vs 200/s burst 20",
            "server": ("sandbox", LIMITED),
            "n": n,
            "args": ["-c", "64", "--rate", "200", "--burst", "20"],
            "clients": SDK_ONLY,
        },
        {
            "name": "RateLimit(rate=100, burst=10) vs 200/s burst 20",
            "server": ("sandbox", LIMITED),
            "n": n,
            "args": ["-c", "64", "--rate", "100", "--burst", "10"],
            "clients": SDK_ONLY,
        },
        {
            "name": "single sends, idle",
            "server": ("sandbox", LIMITED),
            "n": 0,
            "args": ["-c", "64", *SINGLES],
            "clients": SDK_ONLY,
        },
        *(
            {
                "name": f"campaign alone, c={concurrency}",
                "server": ("sandbox", LIMITED),
                "n": n,
                "args": ["-c", str(concurrency)],
                "clients": SDK_ONLY,
            }
            for concurrency in (64, 512)
        ),
        *(
            {
                "name": f"single sends during a campaign, c={concurrency}",
                "server": ("sandbox", LIMITED),
                "n": n,
                "args": ["-c", str(concurrency), *SINGLES],
                "clients": SDK_ONLY,
            }
            for concurrency in (64, 512)
        ),
        {
            "name": "4 workers through Redis, no configuration",
            "server": ("sandbox", LIMITED),
            "n": 1_600 // scale,
            "runner": "redis",
            "clients": SDK_ONLY,
        },
        {
            "name": "sync: sequential single sends",
            "server": ("fast", 0.0),
            "n": 2_000 // scale,
            "runner": "sync",
            "mode": "sequential",
            "clients": SDK_ONLY,
        },
        {
            "name": "sync: send_messages, c=64",
            "server": ("fast", 0.0),
            "n": 10_000 // scale,
            "runner": "sync",
            "mode": "bulk",
            "clients": SDK_ONLY,
        },
        {
            "name": "sync: 8 threads, RateLimit(rate=100) vs 100/s burst 10",
            "server": ("sandbox", ("--rate", "100", "--burst", "10")),
            "n": 800 // scale,
            "runner": "sync",
            "mode": "threads",
            "clients": SDK_ONLY,
        },
        {
            "name": "OpenTelemetry: send_messages, c=64",
            "server": ("fast", 0.0),
            "n": 15_000 // scale,
            "runner": "telemetry",
            "clients": SDK_ONLY,
        },
        {
            "name": "1,000 from a generator",
            "server": ("fast", 0.0),
            "n": 1_000,
            "args": ["-c", "64", "--generator"],
        },
        {
            "name": "100,000 from a generator",
            "server": ("fast", 0.0),
            "n": 100_000 // scale,
            "args": ["-c", "64", "--generator"],
        },
    ]


def serve(spec: tuple[str, Any]) -> contextlib.AbstractContextManager[str]:
    kind, option = spec
    return fast_server(option) if kind == "fast" else sandbox(*option)


def measure(selected: list[str] | None, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for workload in workloads(quick):
        if selected and not any(s in workload["name"] for s in selected):
            continue
        for client in workload.get("clients", CLIENTS):
            # A fresh server per client: the sandbox's bucket starts full.
            with serve(workload["server"]) as url:
                if workload.get("runner") == "redis":
                    got = [redis_run(url, workload["n"])]
                elif workload.get("runner") == "sync":
                    got = sync_run(url, workload["mode"], workload["n"])
                elif workload.get("runner") == "telemetry":
                    got = telemetry_run(url, workload["n"])
                else:
                    got = [client_run(client, url, workload["n"], *workload["args"])]
            for row in got:
                row["workload"] = workload["name"]
                row["capacity"] = workload.get("capacity", 20)
                row.setdefault("accepted", 0)
                row.setdefault("rate_limited", 0)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Workload | Client | Messages/s | CPU s | CPU µs/msg | Peak RSS MB | 429s | Accepted | Wall s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(
                f"| {row['workload']} | {row['client']} | error: {row['error']} |||||||"
            )
            continue
        n = max(1, row["n"])
        rate = row["n"] / row["elapsed"] if row["elapsed"] else 0.0
        singles = ""
        if row.get("singles_p50") is not None:
            singles = (
                f" (singles p50 {row['singles_p50'] * 1e3:.1f} ms, "
                f"p99 {row['singles_p99'] * 1e3:.1f} ms)"
            )
        lines.append(
            f"| {row['workload']}{singles} | {row['client']} | {rate:,.0f} | "
            f"{row['cpu']:.2f} | {row['cpu'] / n * 1e6:.0f} | "
            f"{row['peak_rss_mb']:.1f} | {row['rate_limited']} | "
            f"{row['accepted']:,} | {row['elapsed']:.2f} |"
        )
    return "\n".join(lines)


def checks(rows: list[dict[str, Any]]) -> list[str]:
    def get(workload: str, client: str) -> dict[str, Any] | None:
        for row in rows:
            if (
                row.get("workload") == workload
                and row["client"] == client
                and "error" not in row
            ):
                return row
        return None

    out = []
    sdk, lean = get("no latency", "sdk"), get("no latency", "httpx-aiohttp")
    if sdk and lean:
        speed = (sdk["n"] / sdk["elapsed"]) / (lean["n"] / lean["elapsed"])
        cpu = (sdk["cpu"] / sdk["n"]) / (lean["cpu"] / lean["n"])
        out.append(
            f"no latency: {speed:.2f}x the lean path's messages/s (>= 0.85) "
            f"{'PASS' if speed >= 0.85 else 'FAIL'}; {cpu:.2f}x its CPU/message "
            f"(<= 1.15) {'PASS' if cpu <= 1.15 else 'FAIL'}"
        )
    sdk, raw = get("50 ms latency", "sdk"), get("50 ms latency", "aiohttp")
    if sdk and raw:
        ratio = (sdk["n"] / sdk["elapsed"]) / (raw["n"] / raw["elapsed"])
        out.append(
            f"50 ms latency: {ratio:.3f}x raw aiohttp (>= 0.95) "
            f"{'PASS' if ratio >= 0.95 else 'FAIL'}"
        )
    for row in rows:
        name = row.get("workload", "")
        if not name.startswith("200/s, headers: ") or "error" in row:
            continue
        limit = 0.02 if name.endswith("none") else 0.005
        ideal = (row["n"] - row["capacity"]) / 200
        share = row["rate_limited"] / row["n"]
        ok = (
            row["accepted"] == row["n"]
            and row["elapsed"] <= 1.05 * ideal
            and share <= limit
        )
        out.append(
            f"{name}: {row['accepted']}/{row['n']} accepted, "
            f"{row['elapsed'] / ideal:.3f}x ideal (<= 1.05), 429s "
            f"{share:.2%} (<= {limit:.1%}) {'PASS' if ok else 'FAIL'}"
        )
    for name, rate, burst, limit in (
        ("RateLimit(rate=200, burst=20) vs 200/s burst 20", 200, 20, 0.005),
        ("RateLimit(rate=100, burst=10) vs 200/s burst 20", 100, 10, 0.0),
    ):
        sdk = get(name, "sdk")
        if sdk:
            ideal = (sdk["n"] - burst) / rate
            share = sdk["rate_limited"] / sdk["n"]
            ok = (
                sdk["accepted"] == sdk["n"]
                and sdk["elapsed"] <= 1.05 * ideal
                and share <= limit
            )
            out.append(
                f"{name}: {sdk['accepted']}/{sdk['n']} accepted, "
                f"{sdk['elapsed'] / ideal:.3f}x ideal (<= 1.05), 429s "
                f"{share:.2%} (<= {limit:.1%}) {'PASS' if ok else 'FAIL'}"
            )
    idle = get("single sends, idle", "sdk")
    for concurrency in (64, 512):
        during = get(f"single sends during a campaign, c={concurrency}", "sdk")
        alone = get(f"campaign alone, c={concurrency}", "sdk")
        if idle and during and alone and idle["singles_p50"] is not None:
            bound = idle["singles_p50"] + 0.025
            # The account's throughput: campaign and single sends together.
            singles = 40
            speed = ((during["n"] + singles) / during["elapsed"]) / (
                alone["n"] / alone["elapsed"]
            )
            ok = during["singles_p99"] <= bound and speed >= 0.98
            out.append(
                f"single sends during a campaign, c={concurrency}: p99 "
                f"{during['singles_p99'] * 1e3:.1f} ms (<= idle p50 "
                f"{idle['singles_p50'] * 1e3:.1f} + 25 ms); throughput "
                f"{speed:.3f}x the campaign alone (>= 0.98) {'PASS' if ok else 'FAIL'}"
            )
    redis = get("4 workers through Redis, no configuration", "sdk")
    if redis:
        achieved = (redis["accepted"] - 20) / redis["elapsed"] / 200
        share = redis["rate_limited"] / redis["n"]
        ok = redis["accepted"] == redis["n"] and achieved >= 0.95 and share <= 0.02
        out.append(
            f"4 workers through Redis: {redis['accepted']}/{redis['n']} sent, "
            f"{achieved:.1%} of the limit (>= 95%), 429s {share:.2%} (<= 2%) "
            f"{'PASS' if ok else 'FAIL'}"
        )
    out.extend(sync_checks(get))
    out.extend(telemetry_checks(get))
    small, big = (
        get("1,000 from a generator", "sdk"),
        get("100,000 from a generator", "sdk"),
    )
    if small and big:
        growth = big["peak_rss_mb"] - small["peak_rss_mb"]
        out.append(
            f"100,000 streamed: peak RSS +{growth:.1f} MB over 1,000 (<= 25) "
            f"{'PASS' if growth <= 25 else 'FAIL'}"
        )
    return out


def sync_checks(get: Any) -> list[str]:
    """Issue 17's targets: the sync client against the async one, same run."""
    out = []
    name = "sync: sequential single sends"
    base, sync = get(name, "sdk"), get(name, "sdk-sync")
    if base and sync:
        extra = (sync["elapsed"] / sync["n"] - base["elapsed"] / base["n"]) * 1e6
        out.append(
            f"sync sequential sends: {sync['elapsed'] / sync['n'] * 1e6:.0f} µs "
            f"a call vs async {base['elapsed'] / base['n'] * 1e6:.0f} µs: "
            f"+{extra:.0f} µs (<= 150) {'PASS' if extra <= 150 else 'FAIL'}"
        )
    name = "sync: send_messages, c=64"
    base, sync = get(name, "sdk"), get(name, "sdk-sync")
    if base and sync:
        ratio = (sync["accepted"] / sync["elapsed"]) / (
            base["accepted"] / base["elapsed"]
        )
        out.append(
            f"sync send_messages: {ratio:.2f}x the async client's messages/s "
            f"(>= 0.9) {'PASS' if ratio >= 0.9 else 'FAIL'}"
        )
    threads = get(
        "sync: 8 threads, RateLimit(rate=100) vs 100/s burst 10", "sdk-sync, 8 threads"
    )
    if threads:
        achieved = threads["accepted"] / threads["elapsed"] / 100
        share = threads["rate_limited"] / threads["n"]
        lost = threads["n"] - threads["accepted"]
        ok = achieved >= 0.95 and share <= 0.02 and lost == 0
        out.append(
            f"8 threads, one ViberClient: {threads['accepted']}/{threads['n']} sent "
            f"({lost} lost), {achieved:.1%} of the limit (>= 95%), 429s "
            f"{share:.2%} (<= 2%) {'PASS' if ok else 'FAIL'}"
        )
    return out


def telemetry_checks(get: Any) -> list[str]:
    """What OpenTelemetry costs per message, against the package absent."""
    name = "OpenTelemetry: send_messages, c=64"
    base = get(name, "sdk, otel absent")
    if not base:
        return []
    out = []
    for mode in TELEMETRY_MODES[1:]:
        row = get(name, f"sdk, otel {mode}")
        if row:
            extra = (row["cpu"] / row["n"] - base["cpu"] / base["n"]) * 1e6
            out.append(
                f"OpenTelemetry {mode}: {extra:+.0f} µs CPU a message over the "
                f"package absent ({base['cpu'] / base['n'] * 1e6:.0f} µs)"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--only", nargs="*", help="workloads whose name contains these")
    parser.add_argument("--json", type=Path, help="also write the raw rows here")
    parser.add_argument(
        "--charts",
        type=Path,
        default=HERE.parent / "docs" / "images",
        help="where the SVG charts go (docs/images)",
    )
    parser.add_argument("--no-charts", action="store_true", help="draw no charts")
    parser.add_argument(
        "--replay",
        type=Path,
        help="measure nothing: tables and charts from a run's rows (its stderr)",
    )
    args = parser.parse_args()
    if args.replay:
        rows = [
            json.loads(line)
            for line in args.replay.read_text().splitlines()
            if line.startswith("{")
        ]
    else:
        rows = measure(args.only, args.quick)
    if not args.no_charts:
        import charts  # (matplotlib: only when drawing)

        for path in charts.write(rows, args.charts):
            print(f"wrote {path}", file=sys.stderr)
    print(table(rows))
    print()
    for line in checks(rows):
        print(f"- {line}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
