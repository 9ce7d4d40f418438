"""A stateful, fault-injectable fake of the DecisionTelecom Viber API.

Use it to test an integration without spending money, and to provoke on
demand what the real API does rarely: 429s, 500s, gateway pages, broken
connections, slow answers, an empty balance, status changes and user
replies. Serving it needs the ``[sandbox]`` extra (uvicorn)::

    with serve_sandbox(SandboxConfig(rate_limit=50)) as server:
        client = AsyncViberClient(server.access_key, base_url=server.base_url)

A pytest plugin (fixtures ``viber_sandbox`` and ``viber_client``) is
registered automatically when the package is installed.
"""

from __future__ import annotations

from .._public import publish as _publish
from ._app import Sandbox as Sandbox
from ._config import HeaderDialect as HeaderDialect
from ._config import LatencyDistribution as LatencyDistribution
from ._config import Profile as Profile
from ._config import RateLimitAlgorithm as RateLimitAlgorithm
from ._config import SandboxConfig as SandboxConfig
from ._server import AppServer as AppServer
from ._server import SandboxServer as SandboxServer
from ._server import serve_app as serve_app
from ._server import serve_sandbox as serve_sandbox
from ._state import AcceptedMessage as AcceptedMessage
from ._state import CallbackRecord as CallbackRecord
from ._state import RequestRecord as RequestRecord
from ._state import SandboxStats as SandboxStats
from ._state import UndeliveredCallbackWarning as UndeliveredCallbackWarning


__all__ = [
    "AcceptedMessage",
    "AppServer",
    "CallbackRecord",
    "HeaderDialect",
    "LatencyDistribution",
    "Profile",
    "RateLimitAlgorithm",
    "RequestRecord",
    "Sandbox",
    "SandboxConfig",
    "SandboxServer",
    "SandboxStats",
    "UndeliveredCallbackWarning",
    "serve_app",
    "serve_sandbox",
]

_publish(globals(), __all__, __name__)
