import pytest

from decisiontelecom_viber import RateLimitError, ViberMessage


MESSAGE = ViberMessage.transactional(sender="Acme", receiver="380501234567", text="hi")


def test_my_sync_code_sends_one_message(viber_sync_client, viber_sandbox):
    message_id = viber_sync_client.send_message(MESSAGE)

    assert viber_sandbox.sandbox.message(message_id).text == "hi"


@pytest.mark.viber_sandbox(rate_limit=1, burst=1)
@pytest.mark.viber_client(retry=None)
def test_my_sync_code_survives_rate_limits(viber_sync_client):
    viber_sync_client.send_message(MESSAGE)
    with pytest.raises(RateLimitError):
        viber_sync_client.send_message(MESSAGE)


def send_receipt(text):
    """Your code: a Django view, a script; it builds its own client."""
    from decisiontelecom_viber import ViberClient

    with ViberClient() as client:  # reads the environment
        message = ViberMessage.transactional(
            sender="Acme", receiver="380501234567", text=text
        )
        return client.send_message(message)


def test_sync_code_that_builds_its_own_client(viber_sandbox, monkeypatch):
    monkeypatch.setenv("DECISIONTELECOM_ACCESS_KEY", viber_sandbox.access_key)
    monkeypatch.setenv("DECISIONTELECOM_BASE_URL", viber_sandbox.base_url)

    message_id = send_receipt("receipt 43")

    assert viber_sandbox.sandbox.message(message_id).text == "receipt 43"
