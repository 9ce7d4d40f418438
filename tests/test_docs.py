"""Every code example in README.md and docs/ runs against the sandbox.

Python blocks of a page run in order, in one namespace and one event loop
(top-level ``await`` allowed), with the sandbox's key and URL in
``DECISIONTELECOM_ACCESS_KEY`` and ``DECISIONTELECOM_BASE_URL``, and a few
names the prose assumes: ``client``, ``message``, ``messages``, ``SECRET``,
``OLD_SECRET``. A block whose first line is ``# not run: <why>`` is shown
only (the vendor SDK's code on the migration page). Console lines that call
``decisiontelecom-viber`` run through the CLI's entry point and must neither
crash nor be refused as bad usage.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import re
import shlex
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from decisiontelecom_viber import AsyncViberClient, RetryPolicy, ViberMessage
from decisiontelecom_viber.cli import ExitCode, main
from decisiontelecom_viber.sandbox import SandboxConfig, SandboxServer, serve_sandbox


ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Console commands not run here: they serve until interrupted, or are slow
# and run in tests/test_cli.py.
# (--listen: a receiver on a fixed port, for the API to reach; tested in
# tests/test_cli_reconcile.py.)
NOT_RUN = (" sandbox", " demo", " --listen")

pytestmark = pytest.mark.integration


SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$')
EXAMPLES = ROOT / "docs" / "examples"


def blocks(page: Path, language: str) -> list[str]:
    """The page's code blocks in *language*, with included files read in."""
    found = []
    for lang, body in FENCE.findall(page.read_text()):
        if lang != language:
            continue
        included = SNIPPET.match(body.strip())
        if included is not None:
            path = ROOT / included.group(1)
            if path.name.startswith("test_"):
                continue  # a pytest file: run by test_example_test_files
            body = path.read_text()
        found.append(body)
    return found


def pages_with(language: str) -> list[Path]:
    return [page for page in PAGES if blocks(page, language)]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(access_key="docs-key", time_scale=1000.0, reply_fraction=1.0)
    with serve_sandbox(config) as server:
        yield server


@pytest.fixture
def environment(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> SandboxServer:
    sandbox.sandbox.reset()
    monkeypatch.setenv("DECISIONTELECOM_ACCESS_KEY", sandbox.access_key)
    monkeypatch.setenv("DECISIONTELECOM_BASE_URL", sandbox.base_url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipients.csv").write_text(
        "receiver,text\n380501234567,Hello\n380501234568,Hello again\n"
    )
    return sandbox


def run_python_page(page: Path) -> None:
    loop = asyncio.new_event_loop()
    client = AsyncViberClient(retry=RetryPolicy(wait_initial=0.01, wait_max=0.05))
    namespace: dict[str, Any] = {
        "__name__": "docs_example",
        "client": client,
        "message": ViberMessage.transactional(
            sender="Acme", receiver="380501234567", text="Hello from the docs"
        ),
        "messages": [
            ViberMessage.transactional(
                sender="Acme", receiver=f"3805000000{n:02d}", text="hi"
            )
            for n in range(5)
        ],
        "SECRET": "docs-secret-0123456789abcdef0123",
        "OLD_SECRET": "docs-retired-secret-0123456789ab",
    }
    try:
        for number, source in enumerate(blocks(page, "python"), 1):
            if source.startswith("# not run:"):
                continue
            code = compile(
                source,
                f"{page.name} (python block {number})",
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
            with contextlib.redirect_stdout(io.StringIO()):
                result = eval(code, namespace)  # noqa: S307 - our own docs
                if asyncio.iscoroutine(result):
                    loop.run_until_complete(result)
        loop.run_until_complete(client.aclose())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.mark.parametrize("page", pages_with("python"), ids=lambda p: p.name)
def test_python_examples_run(page: Path, environment: SandboxServer) -> None:
    """The page's Python examples run, in order, against the sandbox."""
    run_python_page(page)


def console_commands(page: Path) -> list[list[str]]:
    commands = []
    for body in blocks(page, "console"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line.removeprefix("$ "), comments=True)
            if words[:1] == ["decisiontelecom-viber"]:
                arguments = words[1:]
            elif words[:3] == ["python", "-m", "decisiontelecom_viber"]:
                arguments = words[3:]
            else:
                continue
            if not any(skip in " " + " ".join(arguments) for skip in NOT_RUN):
                commands.append(arguments)
    return commands


@pytest.mark.parametrize(
    "page",
    [page for page in PAGES if console_commands(page)],
    ids=lambda p: p.name,
)
def test_console_examples_run(
    page: Path, environment: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every documented command line parses and runs (placeholders may be refused)."""
    for arguments in console_commands(page):
        code = main(
            [*arguments, "--no-progress"] if arguments[0] == "bulk" else arguments
        )
        output = capsys.readouterr()
        assert code not in (ExitCode.ERROR, ExitCode.USAGE), (arguments, output.err)


@pytest.mark.parametrize(
    "example", sorted(EXAMPLES.glob("test_*.py")), ids=lambda p: p.name
)
def test_example_test_files(example: Path, pytester: pytest.Pytester) -> None:
    """Example test files in the docs pass as a user's test suite would run them.

    No ini file: a user's project has none of ours (pytest-asyncio's default
    strict mode, warnings as warnings).
    """
    pytester.makepyfile(**{example.stem: example.read_text()})

    result = pytester.runpytest_subprocess("-p", "pytest_asyncio")

    source = example.read_text()
    tests = source.count("\nasync def test_") + source.count("\ndef test_")
    assert tests > 0
    result.assert_outcomes(passed=tests)


def test_examples_were_found() -> None:
    """The extraction sees the examples (a broken pattern would skip them all)."""
    assert len(pages_with("python")) >= 6
    assert sum(len(console_commands(page)) for page in PAGES) >= 10


def test_every_public_name_is_in_the_reference() -> None:
    """docs/reference.md documents every name the package exports."""
    import decisiontelecom_viber
    import decisiontelecom_viber.redis
    import decisiontelecom_viber.sandbox

    reference = (ROOT / "docs" / "reference.md").read_text()
    documented = set(re.findall(r"^::: (\S+)", reference, re.MULTILINE))
    missing = []
    for module in (
        decisiontelecom_viber,
        decisiontelecom_viber.redis,
        decisiontelecom_viber.sandbox,
    ):
        for name in module.__all__:
            obj = getattr(module, name)
            if typing.get_origin(obj) is not None or not (
                isinstance(obj, type) or inspect.isfunction(obj)
            ):
                continue  # type aliases are described in the prose
            if f"{module.__name__}.{name}" not in documented:
                missing.append(f"{module.__name__}.{name}")

    assert [] == missing


def test_the_exit_code_table_lists_every_code() -> None:
    """docs/cli.md's table and `ExitCode` name the same codes."""
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text[text.index("## Exit codes") :]
    listed = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    assert {int(code) for code in ExitCode} == listed


IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")


def test_every_image_referenced_exists_and_every_chart_is_referenced() -> None:
    """The pages' images are files of the repository, and each chart that
    ``nox -s bench`` draws into docs/images is shown on some page."""
    referenced = set()
    for page in PAGES:
        for target in IMAGE.findall(page.read_text()):
            path = (page.parent / target).resolve()
            assert path.is_file(), f"{page.name}: {target} does not exist"
            referenced.add(path)
    charts = {path.resolve() for path in (ROOT / "docs" / "images").glob("*")}
    assert charts, "docs/images holds the benchmark charts"
    assert charts - referenced == set()
    # What benchmarks/charts.py draws (read, not imported: it needs matplotlib).
    tree = ast.parse((ROOT / "benchmarks" / "charts.py").read_text())
    (table,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "CHARTS"
    ]
    assert isinstance(table, ast.Dict)
    drawn = {ast.literal_eval(key) for key in table.keys if key is not None}
    assert {(ROOT / "docs" / "images" / name).resolve() for name in drawn} == charts
