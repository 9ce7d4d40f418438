"""Imports point one way: the package's module graph has no cycle.

Every import counts — at module level, under ``TYPE_CHECKING`` (a type
living in its consumer is how the last loop began) and inside functions (a
lazy import hides a loop without removing it). ``from . import _x`` is an
edge to ``_x``, not to the package.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "decisiontelecom_viber"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PATHS = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(path) for path in PATHS}


def imports(path: Path) -> set[str]:
    """The package's modules that *path* imports, wherever the import is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                if node.module:
                    base += "." + node.module
            else:
                base = node.module or ""
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            if submodules <= MODULES:
                found.update(submodules)  # `from . import _x, _y`
            else:
                found.add(base)
    return (found & MODULES) - {name}


GRAPH = {module_name(path): imports(path) for path in PATHS}


def test_the_package_imports_without_a_cycle() -> None:
    try:
        order = tuple(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")
    # Not vacuous: the errors come before the client, the client before the
    # public surface.
    assert order.index("decisiontelecom_viber._errors") < order.index(
        "decisiontelecom_viber._client"
    )
    assert order.index("decisiontelecom_viber._client") < order.index(
        "decisiontelecom_viber"
    )


def test_the_scan_finds_a_cycle() -> None:
    """The checker itself: a loop made on purpose is reported."""
    looped = {
        **GRAPH,
        "decisiontelecom_viber._errors": {"decisiontelecom_viber._client"},
    }
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(looped).static_order())
