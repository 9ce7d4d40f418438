"""Celery worker: order confirmations over Viber, at most once each.

Run it with ``celery -A celery_tasks worker --pool=prefork``. Settings come
from the environment: ``CELERY_BROKER_URL`` (default: ``REDIS_URL``),
``CELERY_RESULT_BACKEND`` (none by default), ``REDIS_URL`` (the limiter and
the send-once records), ``DECISIONTELECOM_ACCESS_KEY`` and, if not the real
API, ``DECISIONTELECOM_BASE_URL``.
"""

import logging
import os
import threading

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown
from redis.asyncio import Redis

from decisiontelecom_viber import (
    APIConnectionError,
    ClientClosedError,
    DeadlineExceededError,
    OutcomeUnknownError,
    RateLimit,
    RateLimitError,
    ServerError,
    ViberClient,
    ViberMessage,
    WriteRefusedError,
)
from decisiontelecom_viber.redis import (
    RedisLimiter,
    RedisUnavailableError,
    SendInProgressError,
    SendOnceGuard,
)


logger = logging.getLogger(__name__)

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
# How long a claimed key counts as in progress: keep it above your longest
# send (the limiter's waits and the client's retries included).
LEASE = float(os.environ.get("VIBER_SEND_LEASE", "120"))

app = Celery(
    "celery_tasks",
    broker=os.environ.get("CELERY_BROKER_URL", REDIS_URL),
    backend=os.environ.get("CELERY_RESULT_BACKEND"),
)
app.conf.update(
    # Acknowledge a task once it has run, not when a worker takes it, and
    # put it back in the queue if the pool process running it dies (SIGKILL,
    # the OOM killer): the redelivered task meets the guard, which decides.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # A worker holds only the tasks it runs: the others stay in the queue.
    worker_prefetch_multiplier=1,
    # Redis redelivers a task unacknowledged for this long (its worker
    # died, or it still runs): keep it above the longest task and countdown.
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
)

# Errors raised before the message could have reached the API, or refused by
# it for now (the client already retried those: these outlasted its
# RetryPolicy). The guard has freed the key, so a later attempt sends.
# (ServerError is the API's own 500/502/503; a gateway's AmbiguousServerError
# is also an OutcomeUnknownError, which is never retried: see below.)
NEVER_SENT = (
    APIConnectionError,
    RateLimitError,
    ServerError,
    RedisUnavailableError,
    WriteRefusedError,
    DeadlineExceededError,
    ClientClosedError,
)

# One client, one Redis connection pool, one limiter and one guard per
# process, built on first use: a Celery prefork worker forks its pool
# processes after importing this module, and a RedisLimiter cannot cross a
# fork once used.
_lock = threading.Lock()
_parts: dict[int, tuple[ViberClient, SendOnceGuard, RedisLimiter, Redis]] = {}


def viber() -> tuple[ViberClient, SendOnceGuard]:
    """This process's client and guard."""
    with _lock:
        pid = os.getpid()
        if pid not in _parts:
            redis = Redis.from_url(
                REDIS_URL, socket_timeout=2, socket_connect_timeout=2
            )
            limiter = RedisLimiter(
                redis, RateLimit(rate=200, burst=20), key="viber:limiter"
            )
            # The access key (and the API URL) from the environment.
            client = ViberClient(rate_limit=limiter)
            guard = SendOnceGuard(redis, namespace="viber:sent", lease=LEASE)
            _parts[pid] = (client, guard, limiter, redis)
        client, guard, _, _ = _parts[pid]
        return client, guard


@worker_process_shutdown.connect  # a prefork pool process exits
@worker_shutdown.connect  # the worker itself (solo and thread pools)
def close_viber(**_: object) -> None:
    """Close this process's client, guard, limiter and Redis connections."""
    with _lock:
        parts = _parts.pop(os.getpid(), None)
    if parts is None:
        return  # (never used in this process)
    client, guard, limiter, redis = parts

    async def close(async_client):
        # They live on the client's event loop: close them there, in order.
        await async_client.aclose()
        await guard.aclose(timeout=10)
        await limiter.aclose()
        await redis.aclose()

    client.call(close)
    client.close()


@app.task(
    bind=True,
    autoretry_for=NEVER_SENT,
    dont_autoretry_for=(OutcomeUnknownError,),
    retry_backoff=True,
    max_retries=10,
)
def send_confirmation(self, order_id: str, phone: str, text: str) -> int:
    """Send one order's confirmation; return its message ID."""
    client, guard = viber()
    message = ViberMessage.transactional(sender="Acme", receiver=phone, text=text)
    try:
        return client.call(guard.send, message, dedupe_key=f"confirmation:{order_id}")
    except SendInProgressError as error:
        # Another attempt holds the key (a redelivery while the first runs,
        # or a pool process killed mid-send): look again later.
        raise self.retry(exc=error, countdown=LEASE / 4) from None
    except OutcomeUnknownError:
        # SendUnresolvedError (an earlier attempt may have sent it) or this
        # send's own unknown outcome: never retried. The task fails; alert
        # someone, then guard.resolve() or guard.forget() the key.
        logger.exception("order %s: confirmation may have been sent", order_id)
        raise
    # Other errors (a refused message, no balance) fail the task: not sent.
