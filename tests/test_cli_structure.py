"""The command line's modules: a complete group on import, imports without a loop."""

from __future__ import annotations

import graphlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from decisiontelecom_viber._constants import DEFAULT_BASE_URL, DEFAULT_CONCURRENCY
from decisiontelecom_viber._retry import RetryPolicy

from .test_import_graph import GRAPH


PACKAGE = "decisiontelecom_viber.cli"
CLI = Path(__file__).resolve().parent.parent / "decisiontelecom_viber" / "cli"
COMMANDS = {"send", "status", "wait", "bulk", "reconcile", "sandbox", "demo"}
API_COMMANDS = ("send", "status", "wait", "bulk")


def test_the_group_has_every_command_once_imported() -> None:
    """A fresh interpreter that only imports the group (no `run_cli`, no
    `main`) sees every command, in the group and in its --help."""
    script = textwrap.dedent(
        """
        import json

        import decisiontelecom_viber.cli
        from click.testing import CliRunner
        from decisiontelecom_viber.cli._main import cli

        listing = CliRunner().invoke(cli, ["--help"]).output
        print(json.dumps({"commands": sorted(cli.commands), "help": listing}))
        """
    )

    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 0 == done.returncode, done.stderr
    seen = json.loads(done.stdout)
    assert sorted(COMMANDS) == seen["commands"]
    listed = {line.split()[0] for line in seen["help"].splitlines()[1:] if line}
    assert COMMANDS <= listed


def test_the_cli_modules_import_without_a_cycle() -> None:
    """The import graph of decisiontelecom_viber.cli.* (function-level
    imports included) is acyclic: imports point toward the root."""
    modules = {name for name in GRAPH if name.startswith(PACKAGE)}
    graph = {name: GRAPH[name] & modules for name in modules}

    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")
    # Not vacuous: the group's module imports the commands.
    commands = {f"{PACKAGE}._{name}" for name in ("single", "bulk", "demo")}
    assert commands <= graph[f"{PACKAGE}._main"]


def test_the_api_commands_share_the_client_options() -> None:
    """The four client options of every API command, with the SDK's
    defaults rather than retyped ones."""
    from decisiontelecom_viber.cli._main import cli

    for name in API_COMMANDS:
        options = {param.name: param for param in cli.commands[name].params}
        assert {"access_key", "base_url", "allow_insecure_http", "attempts"} <= set(
            options
        ), name
        assert RetryPolicy().attempts == options["attempts"].default
        assert DEFAULT_BASE_URL == options["base_url"].default
    bulk = {param.name: param for param in cli.commands["bulk"].params}
    assert DEFAULT_CONCURRENCY == bulk["concurrency"].default


def test_client_options_keep_the_key_out_of_their_repr() -> None:
    from decisiontelecom_viber.cli._common import ClientOptions

    options = ClientOptions("secret-access-key")

    assert "secret-access-key" not in repr(options)
    assert RetryPolicy().attempts == options.attempts
