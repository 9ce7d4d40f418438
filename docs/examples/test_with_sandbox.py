import pytest

from decisiontelecom_viber import RateLimitError, ViberMessage


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
