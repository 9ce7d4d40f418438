"""The public surface: one explicit, sorted __all__; private modules stay private."""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import types
import typing

import decisiontelecom_viber


PACKAGE = pathlib.Path(decisiontelecom_viber.__file__).parent


def test_all_is_sorted_and_complete() -> None:
    """__all__ lists every public name, sorted, and nothing else."""
    public = {
        name
        for name, value in vars(decisiontelecom_viber).items()
        # Subpackages (sandbox) are public modules of their own; "@" names
        # are pytest's assertion-rewriting helpers.
        if not name.startswith(("_", "@"))
        and name not in {"annotations", "Any"}
        and not isinstance(value, types.ModuleType)
    }

    assert sorted(decisiontelecom_viber.__all__) == decisiontelecom_viber.__all__
    assert public == set(decisiontelecom_viber.__all__)


def test_public_classes_show_the_public_module() -> None:
    """Reprs and tracebacks show decisiontelecom_viber.X, not a private module."""
    for name in decisiontelecom_viber.__all__:
        obj = getattr(decisiontelecom_viber, name)
        # Type aliases (ProgressCallback) are not classes, whatever 3.10 says.
        if isinstance(obj, type) and typing.get_origin(obj) is None:
            assert "decisiontelecom_viber" == obj.__module__, name


def test_version_matches_the_metadata() -> None:
    """__version__ is the installed distribution's version."""
    assert (
        importlib.metadata.version("decisiontelecom-viber")
        == decisiontelecom_viber.__version__
    )


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_foreign_libraries_stay_behind_one_module_each() -> None:
    """tenacity only in _retry; aiohttp and httpx_aiohttp only in _transport."""
    users: dict[str, set[str]] = {
        "tenacity": set(),
        "aiohttp": set(),
        "httpx_aiohttp": set(),
    }
    for path in PACKAGE.rglob("*.py"):
        for module in imported_modules(path) & users.keys():
            users[module].add(path.relative_to(PACKAGE).as_posix())

    assert {"_retry.py"} == users["tenacity"]
    assert {"_transport.py"} == users["aiohttp"]
    assert {"_transport.py"} == users["httpx_aiohttp"]


def test_package_is_typed() -> None:
    """py.typed ships with the package."""
    assert (PACKAGE / "py.typed").is_file()
