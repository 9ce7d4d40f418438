"""The Lua scripts ship as package data and load through importlib.resources."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import decisiontelecom_viber
from decisiontelecom_viber._ratecontrol import (
    _BLIND_DECREASE,
    _CLIMB,
    _DECREASE,
    _INTERVAL,
    _PROBE,
    _QUIET,
    _RAMP,
    _SEARCH,
)
from decisiontelecom_viber._ratelimit import _MIN_SAMPLE_SECONDS
from decisiontelecom_viber.redis import _lua


SCRIPTS = ["acquire", "flush", "report", "claim", "mark", "settle"]
LIMITER = ["limiter_prelude", "acquire", "flush", "report"]


def lua_files() -> dict[str, str]:
    folder = resources.files("decisiontelecom_viber.redis").joinpath("lua")
    return {
        entry.name.removesuffix(".lua"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }


def test_every_script_is_its_prelude_and_its_body() -> None:
    files = lua_files()

    assert {*SCRIPTS, "limiter_prelude", "guard_prelude"} == set(files)
    for name in SCRIPTS:
        prelude = "limiter_prelude" if name in LIMITER else "guard_prelude"
        assert files[prelude] + "\n" + files[name] == _lua.script_source(name)


def test_the_limiter_lua_retypes_no_tuning_number() -> None:
    """Its constants come from Python (ARGV[10]), not from literals."""
    for name in LIMITER:
        code = "\n".join(
            line.split("--", 1)[0] for line in lua_files()[name].splitlines()
        )
        code = re.sub(r"(ARGV|KEYS)\[\d+\]", "", code)  # (positions)
        # (1000000: microseconds in Redis's TIME; '%.17g': a format.)
        literals = set(re.findall(r"(?<![\w.%])\d+\.\d+|(?<![\w.%])\d{2,}", code))
        assert set() == literals - {"1000000", "17"}, name


def test_the_tuning_is_the_python_limiters_own() -> None:
    tuning = json.loads(_lua.LIMITER_TUNING)

    assert _CLIMB == tuning["climb"]
    assert _PROBE == tuning["probe"]
    assert _QUIET == tuning["quiet"]
    assert _DECREASE == tuning["decrease"]
    assert _BLIND_DECREASE == tuning["blind_decrease"]
    assert _SEARCH == tuning["search"]
    assert _RAMP == tuning["ramp"]
    assert _INTERVAL == tuning["interval"]
    assert _MIN_SAMPLE_SECONDS == tuning["min_sample"]


def test_the_scripts_load_from_a_zipped_package(tmp_path: Path) -> None:
    """Not from files next to the source: from wherever the package is."""
    package = Path(decisiontelecom_viber.__file__).parent
    archive = tmp_path / "site.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in package.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                zipped.write(path, path.relative_to(package.parent).as_posix())
    probe = (
        "import decisiontelecom_viber.redis._lua as lua, sys;"
        "assert '.zip' in lua.__file__, lua.__file__;"
        f"print(sum(len(lua.script_source(n)) for n in {SCRIPTS!r}))"
    )

    done = subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(archive)},
        cwd=tmp_path,  # (not the checkout: its package would come first)
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert 0 == done.returncode, done.stderr
    expected = sum(len(_lua.script_source(name)) for name in SCRIPTS)
    assert expected == int(done.stdout)
