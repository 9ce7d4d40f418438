"""The command line, driven against the sandbox: output, files, exit codes, resume."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from decisiontelecom_viber.cli import ExitCode, main
from decisiontelecom_viber.sandbox import SandboxConfig, SandboxServer, serve_sandbox

from .servers import unused_port


pytestmark = pytest.mark.integration

Run = tuple[int, str, str]


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    viber_sandbox: SandboxServer,
) -> object:
    """Run the CLI in process with the sandbox's key and URL in the environment."""
    monkeypatch.setenv("DECISIONTELECOM_ACCESS_KEY", viber_sandbox.access_key)
    monkeypatch.setenv("DECISIONTELECOM_BASE_URL", viber_sandbox.base_url)
    # The command line sets the SDK logger's level, as a program may; the
    # other tests of this process must not inherit it.
    sdk_logger = logging.getLogger("decisiontelecom_viber")
    monkeypatch.setattr(sdk_logger, "level", sdk_logger.level)

    def invoke(*args: str) -> Run:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


SEND = ("send", "--sender", "Acme", "--receiver", "380501234567", "--text", "hi")


class TestSend:
    def test_prints_the_message_id(
        self, run: object, viber_sandbox: SandboxServer
    ) -> None:
        """`send` prints the ID; the sandbox received exactly that message."""
        code, out, _ = run(*SEND)  # type: ignore[operator]

        assert ExitCode.OK == code
        assert "hi" == viber_sandbox.sandbox.message(int(out)).text

    def test_json_and_every_field(
        self, run: object, viber_sandbox: SandboxServer
    ) -> None:
        """--json output; image flags make a promotional 108 message."""
        code, out, _ = run(  # type: ignore[operator]
            "send",
            "--json",
            "--sender",
            "Acme",
            "--receiver",
            "380501234567",
            "--text",
            "Sale",
            "--image-url",
            "https://cdn.example.com/a.png",
            "--button-caption",
            "Go",
            "--button-action",
            "https://example.com",
            "--validity-period",
            "3600",
            "--callback-url",
            "https://h.example.com/cb",
        )

        payload = viber_sandbox.sandbox.message(json.loads(out)["message_id"]).payload
        assert ExitCode.OK == code
        assert (108, 1, 3600) == (
            payload["message_type"],
            payload["source_type"],
            payload["validity_period"],
        )

    def test_missing_key_says_how_to_set_it(
        self, run: object, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No key: exit 3 and one line naming the environment variable."""
        monkeypatch.delenv("DECISIONTELECOM_ACCESS_KEY")

        code, _, err = run(*SEND)  # type: ignore[operator]

        assert ExitCode.CONFIGURATION == code
        assert "DECISIONTELECOM_ACCESS_KEY" in err
        assert "Traceback" not in err

    def test_invalid_message_is_one_line(self, run: object) -> None:
        """A validation error: exit 4, one line, no traceback."""
        code, _, err = run(*SEND[:-1], "x" * 1001)  # type: ignore[operator]

        assert ExitCode.INVALID == code
        assert 1 == len(err.strip().splitlines())
        assert err.startswith("error: invalid message: text:")

    def test_debug_shows_the_traceback(self, run: object) -> None:
        """--debug lets the exception through."""
        from decisiontelecom_viber import ValidationError

        with pytest.raises(ValidationError):
            run("--debug", *SEND[:-1], "x" * 1001)  # type: ignore[operator]

    def test_an_invalid_number_is_refused_before_sending(
        self, run: object, viber_sandbox: SandboxServer
    ) -> None:
        """A receiver with "+": exit 4, naming the field, nothing sent."""
        code, _, err = run(  # type: ignore[operator]
            "send", "--sender", "Acme", "--receiver", "+380501234567", "--text", "hi"
        )

        assert ExitCode.INVALID == code
        assert "receiver" in err
        assert "380501234567" not in err
        assert 0 == viber_sandbox.sandbox.stats.requests

    @pytest.mark.viber_sandbox(balance=0)
    def test_refused_by_the_api(self, run: object) -> None:
        """The API refuses the message (no balance): exit 5."""
        code, _, err = run(*SEND)  # type: ignore[operator]

        assert ExitCode.REFUSED == code
        assert "balance" in err.lower()

    def test_unreachable(self, run: object) -> None:
        """Nothing listening: exit 6."""
        code, _, err = run(  # type: ignore[operator]
            *SEND,
            "--attempts",
            "1",
            "--base-url",
            f"http://127.0.0.1:{unused_port()}/v1/api",
        )

        assert ExitCode.UNREACHABLE == code
        assert "could not reach" in err

    @pytest.mark.viber_sandbox(fault_disconnect_after=1.0)
    def test_outcome_unknown(self, run: object) -> None:
        """A broken connection after acceptance: exit 7, and advice."""
        code, _, err = run(*SEND)  # type: ignore[operator]

        assert ExitCode.OUTCOME_UNKNOWN == code
        assert "check its status" in err


class TestStatus:
    @pytest.mark.viber_sandbox(time_scale=1000.0, seen_fraction=0.0)
    def test_status_and_wait(self, run: object) -> None:
        """`status` prints one line per ID; `wait` returns once it is final."""
        _, out, _ = run(*SEND)  # type: ignore[operator]
        message_id = out.strip()

        code, waited, _ = run("wait", message_id, "--interval", "0.5", "--json")  # type: ignore[operator]
        status_code, lines, _ = run("status", message_id, message_id)  # type: ignore[operator]

        assert ExitCode.OK == code
        assert "delivered" == json.loads(waited)["status_name"]
        assert ExitCode.OK == status_code
        assert [f"{message_id}\tdelivered"] * 2 == lines.strip().splitlines()

    @pytest.mark.viber_sandbox(delivered_after=10_000.0)
    def test_wait_times_out(self, run: object) -> None:
        """No final status in time: exit 8."""
        _, out, _ = run(*SEND)  # type: ignore[operator]

        code, _, err = run(  # type: ignore[operator]
            "wait", out.strip(), "--timeout", "0.3", "--interval", "0.5"
        )

        assert ExitCode.TIMEOUT == code
        assert "no final status" in err

    def test_unknown_id(self, run: object) -> None:
        """An unknown ID is refused: exit 5."""
        code, _, err = run("status", "999999")  # type: ignore[operator]

        assert ExitCode.REFUSED == code
        assert "999999" in err


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    return path


class TestBulk:
    def test_csv_in_csv_out(
        self, run: object, tmp_path: Path, viber_sandbox: SandboxServer
    ) -> None:
        """One result row per input row; malformed rows fail, never crash."""
        source = write_csv(
            tmp_path / "in.csv",
            [
                ["receiver", "text", "message_type"],
                ["380500000001", "one", ""],
                ["380500000002", "two", "text"],
                ["380500000003", "three", "nonsense"],
                ["380500000004", "", ""],
                ["380500000005", "five", "106", "extra cell"],
                ["380500000006", "six", "106"],
            ],
        )
        output = tmp_path / "out.csv"

        code, _, err = run(  # type: ignore[operator]
            "bulk",
            str(source),
            "--output",
            str(output),
            "--sender",
            "Acme",
            "--no-progress",
        )

        rows = list(csv.DictReader(output.read_text().splitlines()))
        assert ExitCode.PARTIAL == code
        assert ["1", "2", "3", "4", "5", "6"] == [r["row"] for r in rows]
        assert ["sent", "sent", "failed", "failed", "failed", "sent"] == [
            r["outcome"] for r in rows
        ]
        assert "ValidationError" == rows[2]["error_type"]
        assert "more cells" in rows[4]["error"]
        assert 3 == viber_sandbox.sandbox.stats.accepted
        assert "sent 3, failed 3, unknown 0" in err

    def test_jsonl_in_jsonl_out_all_sent(self, run: object, tmp_path: Path) -> None:
        """JSON Lines both ways; all sent: exit 0."""
        source = tmp_path / "in.jsonl"
        source.write_text(
            "".join(
                json.dumps(
                    {"sender": "A", "receiver": f"3805000000{n:02d}", "text": "t"}
                )
                + "\n"
                for n in range(20)
            )
        )
        output = tmp_path / "out.jsonl"

        code, _, _ = run(  # type: ignore[operator]
            "bulk",
            str(source),
            "-o",
            str(output),
            "--concurrency",
            "4",
            "--rate",
            "500",
            "--no-progress",
        )

        results = [json.loads(line) for line in output.read_text().splitlines()]
        assert ExitCode.OK == code
        assert list(range(1, 21)) == [r["row"] for r in results]
        assert {"sent"} == {r["outcome"] for r in results}

    def test_bad_json_line_is_a_failed_row(self, run: object, tmp_path: Path) -> None:
        """A line that is not JSON fails alone."""
        source = tmp_path / "in.jsonl"
        source.write_text(
            '{"sender": "A", "receiver": "380501234567", "text": "ok"}\n'
            "{not json\n[1, 2]\n"
        )
        output = tmp_path / "out.jsonl"

        code, _, _ = run("bulk", str(source), "-o", str(output), "--no-progress")  # type: ignore[operator]

        outcomes = [
            json.loads(line)["outcome"] for line in output.read_text().splitlines()
        ]
        assert ExitCode.PARTIAL == code
        assert ["sent", "failed", "failed"] == outcomes

    def test_existing_results_need_resume(self, run: object, tmp_path: Path) -> None:
        """A second run refuses to start over; --resume sends nothing twice."""
        source = write_csv(
            tmp_path / "in.csv",
            [
                ["sender", "receiver", "text"],
                ["A", "380500000001", "x"],
                ["A", "380500000002", "y"],
            ],
        )
        output = tmp_path / "out.csv"
        args = ("bulk", str(source), "-o", str(output), "--no-progress")
        run(*args)  # type: ignore[operator]

        again, _, err = run(*args)  # type: ignore[operator]
        resumed, _, _ = run(*args, "--resume")  # type: ignore[operator]

        assert ExitCode.INVALID == again
        assert "--resume" in err
        assert ExitCode.OK == resumed

    def test_unsupported_extension(self, run: object, tmp_path: Path) -> None:
        """Only .csv and .jsonl files: a usage error otherwise."""
        source = tmp_path / "in.txt"
        source.write_text("x")

        code, _, err = run("bulk", str(source), "-o", str(tmp_path / "o.csv"))  # type: ignore[operator]

        assert ExitCode.USAGE == code
        assert ".csv" in err


@pytest.fixture
def slow_sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(access_key="kill-key", latency=0.05)
    with serve_sandbox(config) as server:
        yield server


def test_resume_after_kill_9_sends_nobody_twice(
    tmp_path: Path, slow_sandbox: SandboxServer
) -> None:
    """kill -9 mid-run, then --resume: every row once, nobody messaged twice."""
    source = tmp_path / "in.jsonl"
    count = 400
    source.write_text(
        "".join(
            json.dumps({"receiver": f"38070{n:07d}", "text": f"row {n}"}) + "\n"
            for n in range(count)
        )
    )
    output = tmp_path / "out.jsonl"
    command = [
        sys.executable,
        "-m",
        "decisiontelecom_viber",
        "bulk",
        str(source),
        "-o",
        str(output),
        "--sender",
        "Acme",
        "--concurrency",
        "16",
        "--rate",
        "1000",
        "--no-progress",
        "--base-url",
        slow_sandbox.base_url,
    ]
    env = {**os.environ, "DECISIONTELECOM_ACCESS_KEY": "kill-key"}
    first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)  # noqa: S603
    deadline = time.monotonic() + 20
    while slow_sandbox.sandbox.stats.accepted < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    accepted_at_kill = slow_sandbox.sandbox.stats.accepted

    resumed = subprocess.run(  # noqa: S603
        [*command, "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    results = [json.loads(line) for line in output.read_text().splitlines()]
    texts = [m.text for m in slow_sandbox.sandbox.messages()]
    unknown = [r for r in results if r["outcome"] == "unknown"]
    assert -signal.SIGKILL == first.returncode
    assert 100 <= accepted_at_kill < count
    assert list(range(1, count + 1)) == [r["row"] for r in results]
    assert 0 == slow_sandbox.sandbox.stats.duplicates
    assert len(texts) == len(set(texts))
    assert 1 <= len(unknown) <= 2 * 16
    assert {"sent", "unknown"} == {r["outcome"] for r in results}
    assert ExitCode.PARTIAL == resumed.returncode
    sent_ids = {r["message_id"] for r in results if r["outcome"] == "sent"}
    assert sent_ids <= {m.message_id for m in slow_sandbox.sandbox.messages()}


def test_sandbox_command_serves(tmp_path: Path) -> None:
    """`decisiontelecom-viber sandbox` serves the fake API with its knobs."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "decisiontelecom_viber",
            "sandbox",
            "--port",
            "0",
            "--rate",
            "7",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().rsplit(" ", 1)[-1].strip()
        import httpx

        state = httpx.get(base_url.replace("/v1/api", "/__sandbox/state")).json()
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    assert 7 == state["config"]["rate_limit"]


def test_demo_runs_end_to_end_quickly() -> None:
    """The demo needs no account, exits 0 and finishes (12-17 s on a quiet
    machine; the bound only catches a hang: on a loaded CI runner its
    callback wait and servers' shutdown stretch it past 30 s)."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "decisiontelecom_viber", "demo", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - start

    assert 0 == done.returncode, done.stderr
    assert elapsed < 60
    for expected in (
        "What happened",
        "429s absorbed",
        "2Way replies received",
        "Final statuses",
        "duplicates at the API",
    ):
        assert expected in done.stdout
    # Every callback reached the demo's receiver.
    assert "callbacks the sandbox" in done.stdout  # (the row; rich may wrap it)
    assert "never reached the receiver" not in done.stdout


def test_help_and_missing_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--help lists the commands; without the extra, a hint to install it."""
    assert ExitCode.OK == main(["--help"])
    listing = capsys.readouterr().out
    for command in ("send", "status", "wait", "bulk", "sandbox", "demo"):
        assert command in listing

    monkeypatch.setitem(sys.modules, "click", None)
    monkeypatch.delitem(sys.modules, "decisiontelecom_viber.cli._main", raising=False)
    code = main(["--help"])
    assert ExitCode.CONFIGURATION == code
    assert "decisiontelecom-viber[cli]" in capsys.readouterr().err


class TestBulkInput:
    """The input is checked before any request (exit 2, nothing sent)."""

    def bulk(self, run: object, source: Path, *extra: str) -> Run:
        output = source.with_name("out.csv")
        return run("bulk", str(source), "-o", str(output), "--no-progress", *extra)  # type: ignore[operator,no-any-return]

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (["sender", "reciever", "text"], "unknown column(s) 'reciever'"),
            (["sender", "text"], "no receiver column"),
        ],
    )
    def test_a_bad_header_is_one_error(
        self,
        run: object,
        tmp_path: Path,
        viber_sandbox: SandboxServer,
        header: list[str],
        expected: str,
    ) -> None:
        source = write_csv(tmp_path / "in.csv", [header, ["A", "380500000001", "t"]])

        code, _, err = self.bulk(run, source)

        assert ExitCode.USAGE == code
        assert expected in err
        assert "the columns are: sender, receiver" in err
        assert 0 == viber_sandbox.sandbox.stats.requests
        assert not (tmp_path / "out.csv.journal").exists()

    def test_a_flag_may_give_a_missing_column(
        self, run: object, tmp_path: Path
    ) -> None:
        source = write_csv(
            tmp_path / "in.csv", [["receiver", "text"], ["380500000001", "t"]]
        )

        code, _, _ = self.bulk(run, source, "--sender", "Acme")

        assert ExitCode.OK == code

    @pytest.mark.parametrize(
        ("delimiter", "flag"), [(";", ()), ("\t", ()), (";", ("--delimiter", ";"))]
    )
    def test_semicolons_and_tabs(
        self,
        run: object,
        tmp_path: Path,
        viber_sandbox: SandboxServer,
        delimiter: str,
        flag: tuple[str, ...],
    ) -> None:
        """Excel's ";" (many locales) and tabs are detected, or given."""
        source = tmp_path / "in.csv"
        source.write_text(
            "\n".join(
                delimiter.join(cells)
                for cells in [
                    ["sender", "receiver", "text"],
                    ["A", "380500000001", "hello, world"],
                    ["A", "380500000002", "two"],
                ]
            )
            + "\n"
        )

        code, _, err = self.bulk(run, source, *flag)

        assert ExitCode.OK == code, err
        assert {"hello, world", "two"} == {
            m.text for m in viber_sandbox.sandbox.messages()
        }

    def test_the_wrong_delimiter_is_named(self, run: object, tmp_path: Path) -> None:
        source = tmp_path / "in.csv"
        source.write_text("sender;receiver;text\nA;380500000001;t\n")

        code, _, err = self.bulk(run, source, "--delimiter", ",")

        assert ExitCode.USAGE == code
        assert "--delimiter" in err

    @pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
    def test_an_empty_file(self, run: object, tmp_path: Path, name: str) -> None:
        source = tmp_path / name
        source.write_text("")

        code, _, err = self.bulk(run, source)

        assert ExitCode.USAGE == code
        assert "is empty" in err

    def test_an_unclosed_quote_is_refused_up_front(
        self, run: object, tmp_path: Path, viber_sandbox: SandboxServer
    ) -> None:
        """It would swallow every line after it into one text."""
        source = tmp_path / "in.csv"
        source.write_text(
            'sender,receiver,text\nA,380500000001,ok\nA,380500000002,"oops\n'
            "A,380500000003,three\n"
        )

        code, _, err = self.bulk(run, source)

        assert ExitCode.USAGE == code
        assert "line 3" in err
        assert "never closed" in err
        assert 0 == viber_sandbox.sandbox.stats.requests

    def test_a_short_row_fails_alone(
        self, run: object, tmp_path: Path, viber_sandbox: SandboxServer
    ) -> None:
        source = tmp_path / "in.csv"
        source.write_text(
            "sender,receiver,text\nA,380500000001,ok\nA,380500000002\nA,380500000003,x\n"
        )

        code, _, _ = self.bulk(run, source)

        rows = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
        assert ExitCode.PARTIAL == code
        assert ["sent", "failed", "sent"] == [r["outcome"] for r in rows]
        assert "fewer cells" in rows[1]["error"]
        assert 2 == viber_sandbox.sandbox.stats.accepted


class TestSmallThings:
    def test_errors_name_flags_not_the_python_api(
        self, run: object, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("DECISIONTELECOM_ACCESS_KEY")
        code, _, err = run(*SEND)  # type: ignore[operator]
        assert ExitCode.CONFIGURATION == code
        assert "--access-key" in err
        assert "AsyncViberClient" not in err

        code, _, err = run(  # type: ignore[operator]
            *SEND, "--access-key", "k", "--base-url", "http://api.example.com/v1"
        )
        assert ExitCode.CONFIGURATION == code
        assert "--allow-insecure-http" in err
        assert "--base-url" in err
        assert "allow_insecure_http=True" not in err

    @pytest.mark.parametrize(
        "option", [("--interval", "0"), ("--interval", "0.1"), ("--timeout", "-1")]
    )
    def test_wait_refuses_a_busy_loop(
        self, run: object, option: tuple[str, str]
    ) -> None:
        code, _, _ = run("wait", "5", *option)  # type: ignore[operator]
        assert ExitCode.USAGE == code


class TestBulkInputEdges:
    """Found by an attack: each once lost or doubled a row, or misled."""

    def bulk(self, run: object, source: Path, *extra: str) -> Run:
        output = source.with_name("out.csv")
        return run("bulk", str(source), "-o", str(output), "--no-progress", *extra)  # type: ignore[operator,no-any-return]

    def test_a_resume_with_another_delimiter_is_refused(
        self, run: object, tmp_path: Path, viber_sandbox: SandboxServer
    ) -> None:
        """Another delimiter numbers the rows differently: a resume with it
        resent one row and called another sent."""
        source = tmp_path / "in.csv"
        source.write_text('text\nt1\nx;"t2\nmore"\nt4\n')
        args = ("--receiver", "380500000001", "--sender", "A")
        first, _, _ = self.bulk(run, source, *args, "--delimiter", ";")

        code, _, err = self.bulk(run, source, *args, "--resume")

        assert ExitCode.INVALID == code
        assert "--delimiter ';'" in err
        assert first == ExitCode.PARTIAL or first == ExitCode.OK
        assert 0 == viber_sandbox.sandbox.stats.duplicates

    def test_a_column_twice_is_one_error(self, run: object, tmp_path: Path) -> None:
        source = write_csv(
            tmp_path / "in.csv",
            [["receiver", "text", "text"], ["380500000001", "a", "b"]],
        )

        code, _, err = self.bulk(run, source, "--sender", "A")

        assert ExitCode.USAGE == code
        assert "'text' appear twice" in err

    def test_blank_lines_before_the_header(
        self, run: object, tmp_path: Path, viber_sandbox: SandboxServer
    ) -> None:
        source = tmp_path / "in.csv"
        source.write_text("\n\nsender;receiver;text\nA;380500000001;hi\n")

        code, _, err = self.bulk(run, source)

        assert ExitCode.OK == code, err
        assert ["hi"] == [m.text for m in viber_sandbox.sandbox.messages()]

    def test_an_unclosed_quote_names_its_own_line(
        self, run: object, tmp_path: Path
    ) -> None:
        source = tmp_path / "in.csv"
        source.write_text('sender,receiver,text\nA,"380500000001,hi\n')

        code, _, err = self.bulk(run, source)

        assert ExitCode.USAGE == code
        assert "line 2: a quote opened there is never closed" in err

    def test_a_huge_cell_fails_its_row_alone(
        self, run: object, tmp_path: Path, viber_sandbox: SandboxServer
    ) -> None:
        source = tmp_path / "in.csv"
        source.write_text(
            "sender,receiver,text\nA,380500000001,ok\n"
            f"A,380500000002,{'x' * 200_000}\nA,380500000003,ok too\n"
        )

        code, _, _ = self.bulk(run, source)

        rows = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
        assert ExitCode.PARTIAL == code
        assert ["sent", "failed", "sent"] == [r["outcome"] for r in rows]
        assert 2 == viber_sandbox.sandbox.stats.accepted

    def test_an_impossible_journal_name_is_one_error(
        self, run: object, tmp_path: Path
    ) -> None:
        source = write_csv(tmp_path / "in.csv", [["receiver"], ["380500000001"]])
        output = tmp_path / ("o" * 245 + ".csv")  # + ".journal": too long

        code, _, err = run("bulk", str(source), "-o", str(output), "--sender", "A")  # type: ignore[operator]

        assert ExitCode.INVALID == code
        assert err.startswith("error: cannot use the journal")
