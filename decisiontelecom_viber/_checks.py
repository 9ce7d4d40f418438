"""Argument checks written once: numbers > 0, counts >= a floor.

Every setting a user passes (a retry policy's waits, a rate, a pool size, a
bulk send's concurrency) is checked where it enters, before any request. The
predicates (`is_number`, `is_count`) say what a valid value is; the
`check_*` functions and the attrs validators built here raise the error that
names the setting. A bool is never a number here, although Python says it is
an int: ``concurrency=True`` is a mistake, not 1.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import attrs

from ._errors import ConfigurationError


__all__ = [
    "check_count",
    "check_positive",
    "count_field",
    "is_count",
    "is_int",
    "is_number",
    "optional_positive_field",
    "positive_field",
]


def is_number(value: object) -> TypeGuard[float]:
    """True for an int or a float, never for a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: object) -> TypeGuard[int]:
    """True for an int, never for a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: object, low: int = 1) -> TypeGuard[int]:
    """True for an int (never a bool) that is at least *low*."""
    return is_int(value) and value >= low


def check_positive(name: str, value: object) -> float:
    """*value* as a float if it is a number > 0, else a `ConfigurationError`.

    Args:
        name: What the error calls the setting (``"RedisLimiter timeout"``).
        value: What the user passed.
    """
    # `not value > 0` (rather than `value <= 0`) also refuses NaN.
    if not is_number(value) or not value > 0:
        raise ConfigurationError(f"{name} must be a number > 0")
    return float(value)


def check_count(name: str, value: object, low: int = 1) -> int:
    """*value* if it is an int >= *low*, else a `ConfigurationError` naming *name*."""
    if not is_count(value, low):
        raise ConfigurationError(f"{name} must be an int >= {low}")
    return value


def _above_zero(value: Any, types: tuple[type, ...] | None) -> bool:
    # Without *types*, anything that compares with 0 is judged by comparing
    # (NumPy scalars, Decimal and Fraction pass; a str raises TypeError), as
    # RetryPolicy always has; with them, only those types pass (RateLimit's
    # rule: an int or a float, bools included, as it always was).
    if types is not None and not isinstance(value, types):
        return False
    return bool(value > 0)


def positive_field(owner: str, types: tuple[type, ...] | None = None) -> Any:
    """An attrs validator: the field is > 0 (``owner.field`` in errors).

    Args:
        owner: The class name the error shows.
        types: The types allowed; None to judge any value by comparing it.
    """

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not _above_zero(value, types):
            raise ConfigurationError(f"{owner}.{attribute.name} must be > 0")

    return check


def optional_positive_field(owner: str, types: tuple[type, ...] | None = None) -> Any:
    """An attrs validator: the field is None or > 0 (see `positive_field`)."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not _above_zero(value, types):
            raise ConfigurationError(f"{owner}.{attribute.name} must be > 0 or None")

    return check


def count_field(owner: str) -> Any:
    """An attrs validator: the field is an int >= 1."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not is_count(value):
            raise ConfigurationError(f"{owner}.{attribute.name} must be an int >= 1")

    return check
