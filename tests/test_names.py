"""Names cited in backticks in docstrings and docs resolve to something real.

A docstring that says "see `SendStream`" after `SendStream` was renamed is a
small lie that grows. This test reads every docstring in the package and
every page in docs/ and README.md (code blocks aside, which the docs tests
run), takes each backticked name that claims to be ours — a private name
(``_pipeline``), a test's name, a CamelCase class name, or a dotted path
starting with one of our names — and checks it is defined: a module, a class,
a function, a method, an attribute, a parameter, in the package, its tests or
its benchmarks, or in one of the foreign modules the docs talk about.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from collections.abc import Iterator
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "decisiontelecom_viber"
SOURCES = [
    *PACKAGE.rglob("*.py"),
    *(ROOT / "tests").rglob("*.py"),
    *(ROOT / "benchmarks").rglob("*.py"),
]
PAGES = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]

# Modules whose names the docs cite (the vendor's SDK in migrating.md,
# exceptions' own attributes, the libraries we integrate with).
FOREIGN = [
    "asyncio",
    "httpx",
    "decisiontelecom.viber",
    "decisiontelecom.viber.ViberMessageType",
    "decisiontelecom.viber_plus_sms",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.trace.sampling",
]
# Names that are not Python at all: OpenTelemetry's semantic-convention
# attribute keys, and arq's job-ID keyword.
NOT_PYTHON = {"error.type", "http.response.status_code", "_job_id"}

# One backticked name, maybe called: `name`, `a.b.c`, `name()`.
TOKEN = re.compile(r"(?<!`)`([A-Za-z_][\w.]*?)(?:\(\))?`(?!`)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CAMEL = re.compile(r"^[A-Z][a-z0-9]+[A-Z]")


def _definitions(tree: ast.AST, module: str) -> Iterator[str]:
    yield module
    yield module.rsplit(".", 1)[-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name
            arguments = node.args
            for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                yield arg.arg
        elif isinstance(node, ast.ClassDef):
            yield node.name
            for member in node.body:
                for name in _assigned(member):
                    yield name
                    yield f"{node.name}.{name}"
        else:
            yield from _assigned(node)


def _assigned(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        yield node.name
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        yield node.target.id
    elif isinstance(node, ast.Assign):
        yield from (t.id for t in node.targets if isinstance(t, ast.Name))


def _index() -> set[str]:
    names: set[str] = set()
    for path in SOURCES:
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names.update(_definitions(ast.parse(path.read_text()), module))
    return names


INDEX = _index()


def _claims_to_be_ours(name: str) -> bool:
    first = name.split(".")[0]
    return (
        name.startswith(("_", "test_"))
        or bool(CAMEL.match(name))
        or ("." in name and (first in INDEX or first == "decisiontelecom_viber"))
    )


def _importable(parts: list[str]) -> bool:
    """A dotted path into an installed package (`redis.asyncio.Redis`)."""
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                found = getattr(found, part)
        except AttributeError:
            return False
        return True
    return False


def _foreign(parts: list[str]) -> bool:
    if len(parts) > 1 and _importable(parts):
        return True
    if any(_importable([*prefix.split("."), *parts]) for prefix in FOREIGN):
        return True
    # An attribute every exception has (`__cause__`, `__traceback__`).
    return len(parts) == 1 and parts[0] in dir(BaseException())


def _resolves(name: str) -> bool:
    parts = name.split(".")
    if name in INDEX or name in NOT_PYTHON or hasattr(builtins, name):
        return True
    # `module.attr`, `Class.method`, `instance.attribute`: the last two parts
    # or the last part, as long as the first is ours too.
    if ".".join(parts[-2:]) in INDEX or (len(parts) > 1 and parts[-1] in INDEX):
        return True
    return _foreign(parts)


def _cited() -> Iterator[tuple[str, str]]:
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(
                node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                docstring = ast.get_docstring(node) or ""
                for match in TOKEN.finditer(docstring):
                    yield str(path.relative_to(ROOT)), match.group(1)
    for page in PAGES:
        prose = CODE_BLOCK.sub("", page.read_text())
        for match in TOKEN.finditer(prose):
            yield str(page.relative_to(ROOT)), match.group(1)


def test_backticked_names_resolve() -> None:
    stale = sorted(
        {
            f"{where}: `{name}`"
            for where, name in _cited()
            if _claims_to_be_ours(name) and not _resolves(name)
        }
    )
    assert [] == stale


def test_the_check_catches_a_stale_name() -> None:
    """The checker itself: a renamed class, a gone module function, a typo."""
    for name in ("SendStream", "_transport.translate_errors", "test_no_such_test"):
        assert _claims_to_be_ours(name)
        assert not _resolves(name)
    for name in ("AsyncViberClient.send_message", "_pipeline", "RetryPolicy"):
        assert _resolves(name)
