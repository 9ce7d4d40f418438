"""Send a one-time code by Viber from a Flask view.

Run it with ``flask --app flask_otp run`` (the key and, for the sandbox, the
URL come from DECISIONTELECOM_ACCESS_KEY and DECISIONTELECOM_BASE_URL).
"""

import atexit
import logging
import secrets

from flask import Flask, request

from decisiontelecom_viber import (
    OutcomeUnknownError,
    ValidationError,
    ViberClient,
    ViberError,
    ViberMessage,
)


logger = logging.getLogger(__name__)

app = Flask(__name__)

# One client for the whole process, made at import: every request thread
# shares its connection pool and its rate limiter (the account's limit is
# one limit), and it is thread-safe. A client per request would open new
# connections every time and let each request ignore the others' rate.
# Nothing is sent here, so a server that forks after import (gunicorn
# --preload, uWSGI) is fine: each worker starts the client's thread on its
# first call. It is closed at exit: requests on the wire finish first.
viber = ViberClient()
atexit.register(viber.close)


def remember_code(phone: str, code: str) -> None:
    """Keep a hash of the code with an expiry (your session, cache or database)."""


@app.post("/otp")
def send_otp() -> tuple[dict[str, object], int]:
    """Send a code to the JSON body's ``phone``; answer its message ID."""
    body = request.get_json(silent=True)
    phone = body.get("phone") if isinstance(body, dict) else None
    if not isinstance(phone, str):
        return {"error": "phone: a string is required"}, 400
    code = f"{secrets.randbelow(1_000_000):06d}"
    try:
        # Validated here, before any request: a bad number raises
        # ValidationError, whose text never holds the number itself.
        message = ViberMessage.transactional(
            sender="Acme",
            receiver=phone,
            text=f"Your Acme code is {code}. It expires in 5 minutes.",
            text_sms=f"Acme code: {code}",  # by SMS if Viber does not deliver
            validity_period=300,
        )
        # Kept before sending: if the outcome is unknown, the code that may
        # have arrived must still work.
        remember_code(phone, code)
        message_id = viber.send_message(message)
    except ValidationError as error:
        field = "phone" if error.field == "receiver" else error.field
        return {"error": f"{field}: {error.reason}"}, 400
    except OutcomeUnknownError:
        # The API may have the message (a timeout after the request was
        # written): a resend could deliver, and bill, it twice. Tell the
        # caller to wait for the code instead of asking again at once.
        return {"status": "may have been sent", "retry": False}, 202
    except ViberError as error:
        # Never sent (or refused): safe to try again later.
        logger.warning("OTP not sent: %s", error)
        return {"error": "the code could not be sent; try again later"}, 502
    return {"message_id": message_id}, 200
