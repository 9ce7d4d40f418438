"""The ``decisiontelecom-viber`` command line (needs the ``[cli]`` extra).

``decisiontelecom-viber --help`` (or ``python -m decisiontelecom_viber``)
lists the commands: ``send``, ``status``, ``wait``, ``bulk``, ``reconcile``,
``sandbox`` and ``demo``. Exit codes are listed in `ExitCode`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._exit import ExitCode


__all__ = ["ExitCode", "main"]

_HINT = (
    "the command line needs its extra: "
    "python -m pip install 'decisiontelecom-viber[cli]'"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Without Click and Rich installed, print how to install them instead.
    """
    try:
        from ._main import run_cli
    except ImportError as error:
        missing = getattr(error, "name", None) or "a dependency"
        print(f"error: {_HINT} ({missing} is missing)", file=sys.stderr)  # noqa: T201
        return int(ExitCode.CONFIGURATION)
    return run_cli(argv)
