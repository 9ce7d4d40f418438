import pytest

from decisiontelecom_viber import RateLimitError, ViberMessage


# The tests are coroutines: pytest-asyncio runs them (no asyncio_mode needed).
pytestmark = pytest.mark.asyncio

MESSAGE = ViberMessage.transactional(sender="Acme", receiver="380501234567", text="hi")


async def test_my_code_sends_one_message(viber_client, viber_sandbox):
    message_id = await viber_client.send_message(MESSAGE)

    recorded = viber_sandbox.sandbox.message(message_id)
    assert recorded.text == "hi"
    assert viber_sandbox.sandbox.stats.accepted == 1


@pytest.mark.viber_sandbox(rate_limit=1, burst=1)
@pytest.mark.viber_client(retry=None)
async def test_my_code_survives_rate_limits(viber_client):
    await viber_client.send_message(MESSAGE)
    with pytest.raises(RateLimitError):
        await viber_client.send_message(MESSAGE)


@pytest.mark.viber_sandbox(fault_disconnect_after=1.0)
async def test_an_ambiguous_send_is_not_repeated(viber_client, viber_sandbox):
    from decisiontelecom_viber import OutcomeUnknownError

    with pytest.raises(OutcomeUnknownError):
        await viber_client.send_message(MESSAGE)
    assert viber_sandbox.sandbox.stats.requests == 1  # sent once, not retried


async def send_receipt(text):
    """Your code: it builds its own client (from the environment)."""
    from decisiontelecom_viber import AsyncViberClient

    async with AsyncViberClient() as client:
        message = ViberMessage.transactional(
            sender="Acme", receiver="380501234567", text=text
        )
        return await client.send_message(message)


async def test_code_that_builds_its_own_client(viber_sandbox, monkeypatch):
    monkeypatch.setenv("DECISIONTELECOM_ACCESS_KEY", viber_sandbox.access_key)
    monkeypatch.setenv("DECISIONTELECOM_BASE_URL", viber_sandbox.base_url)

    message_id = await send_receipt("receipt 42")

    assert viber_sandbox.sandbox.message(message_id).text == "receipt 42"
