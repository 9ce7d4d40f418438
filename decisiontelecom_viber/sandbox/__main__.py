"""Serve the sandbox: ``python -m decisiontelecom_viber.sandbox --help``."""

from __future__ import annotations

import sys

from ._cli import main


sys.exit(main())
