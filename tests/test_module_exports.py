"""One rule for private modules' ``__all__``: exactly what others import.

The public surface is `decisiontelecom_viber.__all__` (test_public_api). A
private module's ``__all__`` says which of its names the rest of the project
uses — the package, its tests, benchmarks and docs examples — so that a name
nobody imports any more, or a new one imported from elsewhere, shows up in
review. A private module may also have no ``__all__``. Underscore names never
count: importing one is a declared exception (ruff's SLF001 settings say so).
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "decisiontelecom_viber"
IMPORTERS = [
    *PACKAGE.rglob("*.py"),
    *(ROOT / "tests").rglob("*.py"),
    *(ROOT / "benchmarks").rglob("*.py"),
    *(ROOT / "docs").rglob("*.py"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _target(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported_names() -> dict[str, set[str]]:
    """Module -> the names other files import from it (or read off it)."""
    used: dict[str, set[str]] = collections.defaultdict(set)
    for path in IMPORTERS:
        importer = module_name(path)
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}  # `from . import _validation as v`
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(node, importer, path.name == "__init__.py")
                for alias in node.names:
                    if f"{target}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
                    else:
                        used[target].add(alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                used[aliases[node.value.id]].add(node.attr)
    return used


def declared_all(path: Path) -> set[str] | None:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__"
            for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return None


PRIVATE = sorted(
    name
    for name, path in MODULES.items()
    if name.rsplit(".", 1)[-1].startswith("_") and path.name != "__init__.py"
)


@pytest.fixture(scope="module")
def used() -> dict[str, set[str]]:
    return imported_names()


@pytest.mark.parametrize("module", PRIVATE)
def test_private_all_lists_exactly_what_others_import(
    module: str, used: dict[str, set[str]]
) -> None:
    declared = declared_all(MODULES[module])
    if declared is None:
        return  # no __all__ is the other half of the rule
    wanted = {name for name in used.get(module, set()) if not name.startswith("_")}
    assert (set(), set()) == (declared - wanted, wanted - declared), (
        "(listed but imported nowhere, imported but not listed)"
    )


def test_the_scan_sees_module_aliases(used: dict[str, set[str]]) -> None:
    """`_models` reads `_validation` through an alias (`v.check_text`)."""
    assert "check_text" in used["decisiontelecom_viber._validation"]
    assert "RetryPolicy" in used["decisiontelecom_viber._retry"]
