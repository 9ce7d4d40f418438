"""Asyncio SDK for DecisionTelecom's Viber Business Messages API.

Everything public is importable from here; the modules behind it are
private. See the README and docs/ for a guide.
"""

from __future__ import annotations

from typing import Any

from ._bulk import ProgressCallback as ProgressCallback
from ._bulk import ResultStream as ResultStream
from ._callbacks import CallbackEvent as CallbackEvent
from ._callbacks import IncomingMessage as IncomingMessage
from ._callbacks import StatusCallback as StatusCallback
from ._callbacks import parse_callback as parse_callback
from ._client import AsyncViberClient as AsyncViberClient
from ._client import MessageLike as MessageLike
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._enums import MessageStatus as MessageStatus
from ._enums import MessageType as MessageType
from ._enums import SmsStatus as SmsStatus
from ._enums import SourceType as SourceType
from ._errors import AmbiguousServerError as AmbiguousServerError
from ._errors import APIConnectionError as APIConnectionError
from ._errors import APIError as APIError
from ._errors import AuthenticationError as AuthenticationError
from ._errors import CallbackError as CallbackError
from ._errors import ClientClosedError as ClientClosedError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import DeadlineExceededError as DeadlineExceededError
from ._errors import GatewayTimeoutError as GatewayTimeoutError
from ._errors import InsufficientBalanceError as InsufficientBalanceError
from ._errors import InvalidParameterError as InvalidParameterError
from ._errors import LimiterError as LimiterError
from ._errors import OutcomeUnknownError as OutcomeUnknownError
from ._errors import RateLimitError as RateLimitError
from ._errors import ServerError as ServerError
from ._errors import StatusTimeoutError as StatusTimeoutError
from ._errors import UnexpectedResponseError as UnexpectedResponseError
from ._errors import ValidationError as ValidationError
from ._errors import ViberError as ViberError
from ._errors import WriteRefusedError as WriteRefusedError
from ._limits import Feedback as Feedback
from ._limits import Limiter as Limiter
from ._limits import Permit as Permit
from ._limits import RateLimit as RateLimit
from ._limits import RateLimitHeaders as RateLimitHeaders
from ._metrics import BulkSummary as BulkSummary
from ._metrics import ClientMetrics as ClientMetrics
from ._metrics import LatencyHistogram as LatencyHistogram
from ._models import MessageReceipt as MessageReceipt
from ._models import SendResult as SendResult
from ._models import StatusResult as StatusResult
from ._models import ViberMessage as ViberMessage
from ._outcomes import SendOutcome as SendOutcome
from ._public import publish as _publish
from ._ratelimit import AdaptiveLimiter as AdaptiveLimiter
from ._receiver import CallbackReceiver as CallbackReceiver
from ._receiver import MessageHandler as MessageHandler
from ._receiver import ReceiverStats as ReceiverStats
from ._receiver import StatusHandler as StatusHandler
from ._retry import RetryDetails as RetryDetails
from ._retry import RetryHook as RetryHook
from ._retry import RetryPolicy as RetryPolicy
from ._signing import signed_callback_url as signed_callback_url
from ._signing import verify_callback_token as verify_callback_token
from ._sync import ViberClient as ViberClient
from ._syncstream import SyncResultStream as SyncResultStream
from ._telemetry import Telemetry as Telemetry


__all__ = [
    "APIConnectionError",
    "APIError",
    "AdaptiveLimiter",
    "AmbiguousServerError",
    "AsyncViberClient",
    "AuthenticationError",
    "BulkSummary",
    "CallbackError",
    "CallbackEvent",
    "CallbackReceiver",
    "ClientClosedError",
    "ClientMetrics",
    "Clock",
    "ConfigurationError",
    "DeadlineExceededError",
    "Feedback",
    "GatewayTimeoutError",
    "IncomingMessage",
    "InsufficientBalanceError",
    "InvalidParameterError",
    "LatencyHistogram",
    "Limiter",
    "LimiterError",
    "MessageHandler",
    "MessageLike",
    "MessageReceipt",
    "MessageStatus",
    "MessageType",
    "OutcomeUnknownError",
    "Permit",
    "ProgressCallback",
    "RateLimit",
    "RateLimitError",
    "RateLimitHeaders",
    "ReceiverStats",
    "ResultStream",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "SendOutcome",
    "SendResult",
    "ServerError",
    "SmsStatus",
    "SourceType",
    "StatusCallback",
    "StatusHandler",
    "StatusResult",
    "StatusTimeoutError",
    "SyncResultStream",
    "SystemClock",
    "Telemetry",
    "UnexpectedResponseError",
    "ValidationError",
    "ViberClient",
    "ViberError",
    "ViberMessage",
    "WriteRefusedError",
    "parse_callback",
    "signed_callback_url",
    "verify_callback_token",
]

_publish(globals(), __all__, __name__)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from ._version import package_version

        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
