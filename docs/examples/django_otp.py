"""Send a one-time code by Viber from a Django view, in a single file.

Run it with ``python django_otp.py runserver``. In a project, the parts
marked below live in their own modules:

- ``otp/viber.py``: the client, ``viber = ViberClient()`` at module level,
  made once per process when the module is first imported;
- ``otp/views.py``: the view, with ``from otp.viber import viber``;
- ``urls.py``: ``path("otp", views.send_otp)``;
- ``settings.py``: the settings.
"""

import atexit
import json
import logging
import secrets
import sys
import types

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_POST

from decisiontelecom_viber import (
    OutcomeUnknownError,
    ValidationError,
    ViberClient,
    ViberError,
    ViberMessage,
)


logger = logging.getLogger(__name__)

# -- otp/viber.py ---------------------------------------------------------------
# One client for the process, shared by every request thread (one connection
# pool, one rate limiter for the account). Nothing is sent at import, so a
# server that forks after importing (gunicorn --preload, uWSGI) is fine: each
# worker starts the client's thread on its first call. Closed at exit.
viber = ViberClient()
atexit.register(viber.close)


# -- otp/views.py ---------------------------------------------------------------
def remember_code(phone: str, code: str) -> None:
    """Keep a hash of the code with an expiry (the session, cache or database)."""


@require_POST
def send_otp(request: HttpRequest) -> JsonResponse:
    """Send a code to the JSON body's ``phone``; answer its message ID."""
    try:
        body = json.loads(request.body)
    except ValueError:
        body = None
    phone = body.get("phone") if isinstance(body, dict) else None
    if not isinstance(phone, str):
        return JsonResponse({"error": "phone: a string is required"}, status=400)
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
        return JsonResponse({"error": f"{field}: {error.reason}"}, status=400)
    except OutcomeUnknownError:
        # The API may have the message: a resend could deliver, and bill, it
        # twice. Tell the caller to wait for the code, not to ask again.
        return JsonResponse(
            {"status": "may have been sent", "retry": False}, status=202
        )
    except ViberError as error:
        # Never sent (or refused): safe to try again later.
        logger.warning("OTP not sent: %s", error)
        return JsonResponse(
            {"error": "the code could not be sent; try again later"}, status=502
        )
    return JsonResponse({"message_id": message_id})


# -- urls.py --------------------------------------------------------------------
# A module of its own in a project. Here a stand-in module object (ROOT_URLCONF
# takes one as well as a dotted name), so that this file works however it is
# run: as a script, imported, or executed by the documentation's tests.
urls = types.ModuleType("urls")
urls.urlpatterns = [path("otp", send_otp, name="send-otp")]


# -- settings.py ----------------------------------------------------------------
# settings.configure() may be called once per process: in a project,
# DJANGO_SETTINGS_MODULE names settings.py instead.
if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-insecure-example-only",  # noqa: S106 - a demo
        # "testserver" is the host of Django's test client (the test runner
        # adds it by itself; this file has no test runner).
        ALLOWED_HOSTS=["localhost", "127.0.0.1", "testserver"],
        ROOT_URLCONF=urls,
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        USE_TZ=True,
    )
django.setup()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
