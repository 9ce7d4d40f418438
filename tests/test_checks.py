"""The argument checks written once (`_checks`): what passes, what names the setting."""

from __future__ import annotations

import fractions
import math

import attrs
import pytest

from decisiontelecom_viber import ConfigurationError, RateLimit, RetryPolicy
from decisiontelecom_viber._checks import (
    check_count,
    check_positive,
    count_field,
    is_count,
    is_int,
    is_number,
    optional_positive_field,
    positive_field,
)


@pytest.mark.parametrize(
    ("value", "number", "integer", "count"),
    [
        (1, True, True, True),
        (0, True, True, False),
        (2.5, True, False, False),
        (True, False, False, False),
        (False, False, False, False),
        ("1", False, False, False),
        (None, False, False, False),
    ],
)
def test_predicates(value: object, number: bool, integer: bool, count: bool) -> None:
    assert (number, integer, count) == (
        is_number(value),
        is_int(value),
        is_count(value),
    )


def test_check_positive_returns_a_float_and_refuses_the_rest() -> None:
    assert 2.0 == check_positive("timeout", 2)
    for bad in (0, -1, math.nan, True, "3", None):
        with pytest.raises(ConfigurationError, match=r"^timeout must be a number > 0$"):
            check_positive("timeout", bad)


def test_check_count_has_a_floor() -> None:
    assert 0 == check_count("deduplicate", 0, low=0)
    with pytest.raises(ConfigurationError, match=r"^pool must be an int >= 1$"):
        check_count("pool", 0)
    with pytest.raises(ConfigurationError, match=r"^pool must be an int >= 1$"):
        check_count("pool", True)


@attrs.frozen
class _Settings:
    wait: float = attrs.field(default=1.0, validator=positive_field("Settings"))
    rate: float = attrs.field(
        default=1.0, validator=positive_field("Settings", types=(int, float))
    )
    cap: float | None = attrs.field(
        default=None, validator=optional_positive_field("Settings")
    )
    tries: int = attrs.field(default=1, validator=count_field("Settings"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"wait": 0}, "Settings.wait must be > 0"),
        ({"wait": math.nan}, "Settings.wait must be > 0"),
        ({"rate": "1"}, "Settings.rate must be > 0"),
        ({"rate": 0.0}, "Settings.rate must be > 0"),
        ({"cap": -1.0}, "Settings.cap must be > 0 or None"),
        ({"tries": 1.0}, "Settings.tries must be an int >= 1"),
        ({"tries": False}, "Settings.tries must be an int >= 1"),
    ],
)
def test_field_validators_name_owner_and_field(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _Settings(**changes)  # type: ignore[arg-type]
    assert message == str(caught.value)


def test_untyped_fields_judge_by_comparing() -> None:
    """As RetryPolicy always has: what compares with 0 passes, a str raises."""
    assert 1.5 == _Settings(wait=fractions.Fraction(3, 2)).wait  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _Settings(wait="1")  # type: ignore[arg-type]


def test_the_public_settings_use_them() -> None:
    with pytest.raises(ConfigurationError, match=r"RetryPolicy\.wait_max must be > 0"):
        RetryPolicy(wait_max=0)
    with pytest.raises(ConfigurationError, match=r"RetryPolicy\.wait_jitter"):
        RetryPolicy(wait_jitter=1.5)
    with pytest.raises(ConfigurationError, match=r"RateLimit\.rate must be > 0"):
        RateLimit(rate="20")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"RateLimit\.burst must be an int"):
        RateLimit(burst=0)
