"""The public surface of decisiontelecom_viber.redis."""

from __future__ import annotations

import pickle
import types

import pytest

import decisiontelecom_viber.redis as viber_redis
from decisiontelecom_viber import OutcomeUnknownError, ViberError
from decisiontelecom_viber.redis import (
    PossibleDuplicateError,
    RedisUnavailableError,
    SendInProgressError,
    SendRecord,
    SendState,
    SendUnresolvedError,
)


pytestmark = pytest.mark.integration

RECORD = SendRecord("order-1", SendState.PENDING, None, 10.0, 10.0, 130.0)


def test_all_is_sorted_and_complete() -> None:
    """__all__ lists every public name, sorted, and nothing else."""
    public = {
        name
        for name, value in vars(viber_redis).items()
        if not name.startswith(("_", "@"))
        and name != "annotations"
        and not isinstance(value, types.ModuleType)
    }

    assert sorted(viber_redis.__all__) == viber_redis.__all__
    assert public == set(viber_redis.__all__)


def test_public_classes_show_the_public_module() -> None:
    """Reprs and tracebacks show decisiontelecom_viber.redis.X."""
    for name in viber_redis.__all__:
        assert "decisiontelecom_viber.redis" == getattr(viber_redis, name).__module__


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(SendInProgressError("order-1", RECORD), id="in progress"),
        pytest.param(SendUnresolvedError("order-1", RECORD), id="unresolved"),
        pytest.param(
            RedisUnavailableError("claim", ConnectionError("refused")), id="redis"
        ),
    ],
)
def test_errors_survive_pickling(error: ViberError) -> None:
    """Job queues (arq, Celery) pickle a failed job's exception."""
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes

    assert (type(error), str(error)) == (type(copy), str(copy))
    assert getattr(error, "record", None) == getattr(copy, "record", None)


def test_guard_refusals_are_unknown_outcomes() -> None:
    """A refusal to resend means "may have been sent", like a read timeout."""
    error = SendInProgressError("order-1", RECORD)

    assert isinstance(error, PossibleDuplicateError)
    assert isinstance(error, OutcomeUnknownError)
    assert "order-1" in str(error)
    assert not isinstance(RedisUnavailableError("x", OSError()), OutcomeUnknownError)
