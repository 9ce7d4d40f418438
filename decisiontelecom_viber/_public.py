"""Make public classes show their public module in reprs and tracebacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any


__all__ = ["publish"]


def publish(namespace: Mapping[str, Any], names: Iterable[str], module: str) -> None:
    """Set ``__module__`` of the classes among *names* to *module* (as httpx does).

    On Python 3.10 some generic aliases pass ``isinstance(x, type)`` but are
    read-only: they keep their module.
    """
    for name in names:
        obj = namespace[name]
        if isinstance(obj, type):
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = module
