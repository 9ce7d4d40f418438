"""The access key and its base64 form never show in reprs, errors or logs."""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Callable

import httpx
import pytest
import respx

from decisiontelecom_viber import (
    APIError,
    AsyncViberClient,
    OutcomeUnknownError,
    ViberError,
    ViberMessage,
)

from .helpers import ACCESS_KEY, DOCUMENTED_ERRORS, json_response


SECRETS = (ACCESS_KEY, base64.b64encode(ACCESS_KEY.encode()).decode())


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def test_key_absent_from_debug_logs_errors_and_tracebacks(
    api: respx.MockRouter,
    make_client: Callable[..., AsyncViberClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Run successes, retries and failures with every logger at DEBUG."""
    api.post("/send-viber").mock(
        side_effect=[
            json_response(429, DOCUMENTED_ERRORS["rate_limit"]),
            json_response(200, {"message_id": 1}),
            httpx.Response(500, text="<html>boom</html>"),
            httpx.Response(401, json={"name": "Unauthorized", "status": 401}),
            httpx.ReadTimeout("slow"),
        ]
    )
    client = make_client()
    message = ViberMessage.transactional(
        sender="Acme", receiver="380501234567", text="t"
    )
    errors: list[ViberError] = []

    with (
        caplog.at_level(logging.DEBUG),
        caplog.at_level(logging.DEBUG, logger="decisiontelecom_viber"),
    ):
        await client.send_message(message)
        for _ in range(2):
            try:
                await client.send_message(message)
            except (APIError, OutcomeUnknownError) as error:
                errors.append(error)

    assert 2 == len(errors)
    assert caplog.records
    assert_no_secret(caplog.text)
    assert_no_secret(repr(client))
    assert_no_secret(str(client))
    for caught in errors:
        assert_no_secret(str(caught))
        assert_no_secret(repr(caught))
        assert_no_secret("".join(traceback.format_exception(caught)))
        assert_no_secret(repr(vars(caught)))


def test_key_absent_from_configuration_errors() -> None:
    """Errors raised while building a client do not echo the key."""
    with pytest.raises(ViberError) as info:
        AsyncViberClient(ACCESS_KEY, base_url="http://example.com/v1/api")

    assert_no_secret(str(info.value))
    assert_no_secret("".join(traceback.format_exception(info.value)))
