"""Unknown bulk rows settled by their signed status callbacks, through the CLI.

A real sandbox breaks answers after accepting the message, then POSTs its
status callbacks to the receiver that ``bulk --listen`` (or ``reconcile``)
runs, in a real subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from decisiontelecom_viber import MessageStatus, StatusCallback, signed_callback_url
from decisiontelecom_viber.cli import ExitCode, main
from decisiontelecom_viber.cli._journal import Journal, RowResult
from decisiontelecom_viber.cli._reconcile import RowReconciler
from decisiontelecom_viber.sandbox import SandboxConfig, SandboxServer, serve_sandbox

from .servers import unused_port
from .test_cli_job import rows_file


pytestmark = pytest.mark.integration

KEY = "reconcile-key"
SECRET = "cli-callback-secret-0123456789abcdef"
ENV = {**os.environ, "DECISIONTELECOM_ACCESS_KEY": KEY}


def bulk(source: Path, output: Path, api: SandboxServer, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "decisiontelecom_viber", "bulk", str(source)),
        *("-o", str(output), "--sender", "Acme", "--no-progress"),
        *("--base-url", api.base_url, "--attempts", "1", *extra),
    ]


def run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        args, env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def results(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.read_text().splitlines()]


def truth(api: SandboxServer) -> dict[int, int]:
    """Row -> the message ID the sandbox gave it (from the signed reference)."""
    found = {}
    for message in api.sandbox.messages_json():
        query = parse_qs(urlsplit(str(message["payload"]["callback_url"])).query)
        found[int(query["ref"][0].rpartition(":")[2])] = int(message["message_id"])
    return found


def faulty(**changes: Any) -> SandboxConfig:
    return SandboxConfig(
        access_key=KEY,
        fault_disconnect_after=0.05,
        fault_truncated_body=0.05,
        seed=11,
        **changes,
    )


def test_bulk_listen_settles_rows_whose_answer_was_lost(tmp_path: Path) -> None:
    """10 % of the answers broken after acceptance: every row ends sent, right ID."""
    port = unused_port()
    url = f"http://127.0.0.1:{port}/viber/callbacks"
    with serve_sandbox(faulty(sent_after=0.2, delivered_after=60.0)) as api:
        source = rows_file(tmp_path / "in.jsonl", 200)
        output = tmp_path / "out.jsonl"
        done = run(
            bulk(
                source,
                output,
                api,
                *("--callback-url", url, "--callback-secret", SECRET),
                *("--listen", f"127.0.0.1:{port}", "--reconcile-wait", "20"),
            )
        )
        ids = truth(api)
        stats = api.sandbox.stats

    rows = results(output)
    assert ExitCode.OK == done.returncode, done.stderr
    assert "callbacks settled" in done.stderr
    settled = int(done.stderr.split("callbacks settled ")[1].split()[0])
    assert settled >= 5  # the faults happened, and were settled
    assert {"sent"} == {r["outcome"] for r in rows}
    assert {r["row"]: r["message_id"] for r in rows} == ids
    assert (200, 0) == (stats.accepted, stats.duplicates)


def test_reconcile_settles_a_finished_runs_unknown_rows(tmp_path: Path) -> None:
    """The rows' later callbacks (delivered), after the run: forged ones refused."""
    port = unused_port()
    url = f"http://127.0.0.1:{port}/viber/callbacks"
    # "delivered" 4-12 s after acceptance: after the run, while reconcile runs.
    config = faulty(sent_after=0.1, delivered_after=8.0)
    with serve_sandbox(config) as api:
        source = rows_file(tmp_path / "in.jsonl", 100)
        output = tmp_path / "out.jsonl"
        first = run(
            bulk(
                source, output, api, "--callback-url", url, "--callback-secret", SECRET
            )
        )
        unknown = {r["row"] for r in results(output) if r["outcome"] == "unknown"}
        journal = output.with_name(output.name + ".journal")
        run_id = json.loads(journal.read_text().splitlines()[0])["run"]
        listener = subprocess.Popen(  # noqa: S603
            [
                *(sys.executable, "-m", "decisiontelecom_viber", "reconcile"),
                *(str(output), "--listen", f"127.0.0.1:{port}"),
                *("--callback-secret", SECRET, "--timeout", "30"),
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        forged = _forge(url, min(unknown), run_id, port)
        _, err = listener.communicate(timeout=60)
        ids = truth(api)

    rows = results(output)
    assert ExitCode.PARTIAL == first.returncode, first.stderr
    assert unknown, "no answer was broken"
    assert [403, 403, 200] == forged
    assert ExitCode.OK == listener.returncode, err
    assert f"settled {len(unknown)} row(s) as sent" in err
    assert {"sent"} == {r["outcome"] for r in rows}
    assert {r["row"]: r["message_id"] for r in rows} == ids


def _forge(url: str, row: int, run_id: str, port: int) -> list[int]:
    """Callbacks that must settle nothing: wrong secret, unsigned, another run."""
    deadline = time.monotonic() + 20
    while True:  # until the listener is up
        try:
            httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "reconcile did not listen"
            time.sleep(0.05)
    body = b'{"message_id": 999999, "status": 1}'
    attempts = [
        signed_callback_url(url, "not-the-secret", reference=f"{run_id}:{row}"),
        f"{url}?ref={run_id}:{row}",
        signed_callback_url(url, SECRET, reference=f"another-run:{row}"),
    ]
    return [
        httpx.post(target, content=body, timeout=5).status_code for target in attempts
    ]


class TestUsage:
    """Refused before anything is sent or listened on, with one clear line."""

    @pytest.mark.parametrize(
        ("options", "said"),
        [
            (["--callback-secret", SECRET], "--callback-secret needs --callback-url"),
            (
                ["--callback-url", "https://example.com/cb", "--listen", "127.0.0.1:1"],
                "--listen needs --callback-secret",
            ),
        ],
        ids=["secret-without-url", "listen-without-secret"],
    )
    def test_callback_options_need_each_other(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        options: list[str],
        said: str,
    ) -> None:
        source = rows_file(tmp_path / "in.jsonl", 1)
        output = tmp_path / "o.jsonl"
        code = main(["bulk", str(source), "-o", str(output), "--sender", "A", *options])
        assert ExitCode.USAGE == code
        assert said in capsys.readouterr().err

    def test_an_address_in_use_is_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = rows_file(tmp_path / "in.jsonl", 1)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with serve_sandbox(SandboxConfig(access_key=KEY)) as api:
                args = bulk(
                    source,
                    tmp_path / "o.jsonl",
                    api,
                    *("--callback-url", "https://example.com/cb"),
                    *("--callback-secret", SECRET),
                    *("--listen", f"127.0.0.1:{port}"),
                )
                code = main([*args[3:], "--access-key", KEY])
                requests = api.sandbox.stats.requests
        assert ExitCode.INVALID == code
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
        assert 0 == requests

    def test_reconcile_needs_a_journal(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        output = tmp_path / "o.jsonl"
        code = main(
            [
                "reconcile",
                str(output),
                "--listen",
                "127.0.0.1:0",
                "--callback-secret",
                SECRET,
            ]
        )
        assert ExitCode.INVALID == code
        assert "does not exist: nothing to reconcile" in capsys.readouterr().err


async def test_a_callback_of_a_failed_row_being_resent_is_kept(tmp_path: Path) -> None:
    """A resume sends failed rows again: their callback waits for the answer.

    (Found by an attack: it was a "conflict", and the row ended unknown.)
    """
    source = rows_file(tmp_path / "in.jsonl", 1)
    journal = Journal(tmp_path / "out.jsonl.journal", source, resume=False)
    try:
        journal.record(RowResult(1, "failed", None, "AuthenticationError", "401"))
        called_back: dict[int, int] = {}
        reconciler = RowReconciler(journal, called_back)
        await reconciler(
            StatusCallback(
                message_id=77,
                status=MessageStatus.SENT,
                reference=f"{journal.run_id}:1",
                authenticated=True,
            )
        )
    finally:
        journal.close()

    assert {1: 77} == called_back
    assert 0 == reconciler.counts.conflicts
