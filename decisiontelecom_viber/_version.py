"""The installed version, read once from the package metadata."""

from __future__ import annotations

import functools
import platform
from importlib.metadata import PackageNotFoundError, version


__all__ = ["package_version", "user_agent"]


@functools.cache
def package_version() -> str:
    """Return the installed version of decisiontelecom-viber."""
    try:
        return version("decisiontelecom-viber")
    except PackageNotFoundError:  # running from a source tree, not installed
        return "0+unknown"


@functools.cache
def user_agent() -> str:
    """Return the User-Agent header value sent with every request."""
    return (
        f"decisiontelecom-viber/{package_version()} python/{platform.python_version()}"
    )
