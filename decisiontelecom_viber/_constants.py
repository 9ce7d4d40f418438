"""Defaults in one place, so the docs and the code cannot drift apart."""

from __future__ import annotations


DEFAULT_BASE_URL = "https://web.it-decision.com/v1/api"
ACCESS_KEY_ENV = "DECISIONTELECOM_ACCESS_KEY"
BASE_URL_ENV = "DECISIONTELECOM_BASE_URL"

SEND_PATH = "send-viber"
STATUS_PATH = "receive-viber"

# Seconds. A read timeout on a send is an ambiguous outcome, so it is kept
# well above the API's usual latency; connecting is cheap and safe to retry,
# so it fails fast.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_POOL_TIMEOUT = 10.0

DEFAULT_MAX_CONNECTIONS = 100
# Below the keep-alive timeouts of common servers (uvicorn 5 s, nginx 75 s):
# a POST written on a connection the server has just closed cannot be told
# apart from one the server received, so idle connections are dropped early.
DEFAULT_KEEPALIVE_EXPIRY = 4.0

DEFAULT_CONCURRENCY = 32

# Error bodies kept on exceptions are truncated to this many characters.
MAX_ERROR_BODY_CHARS = 2000
