"""Sends in doubt, settled by the API's own callbacks (`SendOnceGuard.reconciler`).

A real sandbox accepts the messages and breaks some answers on purpose
(after accepting); its status callbacks reach a real `CallbackReceiver`
over HTTP, served in the test's loop, whose handler is the guard's
reconciler on a real Redis. Forged, unsigned and replayed callbacks are
mixed in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from decisiontelecom_viber import (
    AsyncViberClient,
    CallbackReceiver,
    ConfigurationError,
    MessageStatus,
    RetryPolicy,
    SendOutcome,
    StatusCallback,
    ViberMessage,
    signed_callback_url,
)
from decisiontelecom_viber.redis import SendOnceGuard, SendState
from decisiontelecom_viber.redis._scripts import GuardScripts
from decisiontelecom_viber.sandbox import SandboxConfig, serve_sandbox

from .helpers import eventually
from .servers import serve_in_loop


if TYPE_CHECKING:
    from decisiontelecom_viber.redis import CallbackReconciler


pytestmark = pytest.mark.integration
pytest_plugins = ["tests.redis_server"]

SECRET = "reconcile-secret-0123456789abcdef"
KEY = "sandbox-access-key"


def message(n: int) -> ViberMessage:
    return ViberMessage.transactional(
        sender="Acme", receiver="380501234567", text=f"message {n}"
    )


@pytest.fixture
def guard(redis_client: Redis) -> SendOnceGuard:
    return SendOnceGuard(redis_client, namespace="test:reconcile")


@pytest.fixture
def scripts(redis_client: Redis) -> GuardScripts:
    return GuardScripts(redis_client)


@pytest.fixture
async def receiver(
    guard: SendOnceGuard,
) -> AsyncIterator[tuple[CallbackReconciler, str]]:
    reconciler = guard.reconciler()
    app = CallbackReceiver(on_status=reconciler, secret=SECRET)
    async with serve_in_loop(app) as root:
        yield reconciler, f"{root}/viber/callbacks"


def references(sandbox_messages: list[dict[str, object]]) -> dict[str, int]:
    """The sandbox's accepted messages: their ``ref`` -> their message ID."""
    found = {}
    for accepted in sandbox_messages:
        payload = accepted["payload"]
        assert isinstance(payload, dict)
        query = parse_qs(urlsplit(str(payload["callback_url"])).query)
        found[query["ref"][0]] = int(str(accepted["message_id"]))
    return found


async def test_broken_answers_are_settled_by_their_callbacks(
    guard: SendOnceGuard, receiver: tuple[CallbackReconciler, str]
) -> None:
    """Accepted, answer lost, then its signed callback: sent, with the right ID.

    200 guarded sends, 10 % of the answers dropped or cut after acceptance.
    """
    reconciler, url = receiver
    config = SandboxConfig(
        fault_disconnect_after=0.05,
        fault_truncated_body=0.05,
        sent_after=0.2,
        delivered_after=60.0,
        seed=7,
    )
    with serve_sandbox(config) as sandbox:
        async with AsyncViberClient(
            KEY,
            base_url=sandbox.base_url,
            callback_url=url,
            callback_secret=SECRET,
            retry=RetryPolicy(attempts=3),
        ) as client:
            stream = guard.send_messages(
                client, [(f"order-{n}", message(n)) for n in range(200)]
            )
            async with stream:
                results = [result async for result in stream]
        unknown = [r for r in results if r.outcome is SendOutcome.UNKNOWN]
        assert len(unknown) >= 5  # the faults happened
        # Every callback has arrived: the unknown ones settled, the rest
        # confirmed (a loaded machine delivers the last ones late).
        await eventually(
            lambda: (
                reconciler.stats.settled >= len(unknown)
                and reconciler.stats.confirmed >= 200 - len(unknown)
            ),
            30.0,
        )
        truth = references(sandbox.sandbox.messages_json())
        stats = sandbox.sandbox.stats

    records = {r.dedupe_key: await guard.lookup(r.dedupe_key or "") for r in unknown}
    assert 200 == stats.accepted  # nothing sent twice, nothing lost
    assert 0 == stats.duplicates
    for key, record in records.items():
        assert record is not None
        assert (SendState.SENT, truth[key or ""]) == (record.state, record.message_id)
        assert record.reconciled
    assert 0 == reconciler.stats.conflicts
    # The sent ones' callbacks confirmed what their records already said.
    assert reconciler.stats.confirmed == 200 - len(unknown)


async def test_forged_unsigned_and_replayed_callbacks_settle_nothing(
    guard: SendOnceGuard,
    scripts: GuardScripts,
    receiver: tuple[CallbackReconciler, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only a callback whose token matches settles; a sent record never changes."""
    reconciler, url = receiver
    for key in ("doubt-1", "doubt-2"):  # in doubt, as a lost answer leaves them
        await scripts.settle(
            guard.record_key(key), owner="", action="unknown", reason="lost", ttl=60
        )
    await guard.resolve("sent-1", 111)
    body = b'{"message_id": 555, "status": 1}'
    async with httpx.AsyncClient() as http:
        forged = signed_callback_url(url, "wrong-secret", reference="doubt-1")
        unsigned = f"{url}?ref=doubt-2"
        genuine_other = signed_callback_url(url, SECRET, reference="sent-1")
        no_record = signed_callback_url(url, SECRET, reference="never-claimed")
        answers = [
            (await http.post(forged, content=body)).status_code,
            (await http.post(unsigned, content=body)).status_code,
            # A replayed URL of a sent message, with another ID in the body.
            (await http.post(genuine_other, content=body)).status_code,
            (await http.post(no_record, content=body)).status_code,
        ]

    doubt_1 = await guard.lookup("doubt-1")
    doubt_2 = await guard.lookup("doubt-2")
    sent_1 = await guard.lookup("sent-1")
    assert [403, 403, 200, 200] == answers
    assert doubt_1 is not None
    assert doubt_2 is not None
    assert sent_1 is not None
    assert (SendState.UNKNOWN, SendState.UNKNOWN) == (doubt_1.state, doubt_2.state)
    assert (SendState.SENT, 111) == (sent_1.state, sent_1.message_id)
    assert (0, 1, 1) == (
        reconciler.stats.settled,
        reconciler.stats.conflicts,
        reconciler.stats.ignored,
    )
    assert any("check for a second send" in r.getMessage() for r in caplog.records)


async def test_an_unauthenticated_event_settles_nothing(
    guard: SendOnceGuard, scripts: GuardScripts
) -> None:
    """A receiver without a secret cannot vouch for a reference."""
    await scripts.settle(
        guard.record_key("doubt"), owner="", action="unknown", reason="lost", ttl=60
    )
    reconciler = guard.reconciler()

    await reconciler(
        StatusCallback(message_id=5, status=MessageStatus.SENT, reference="doubt")
    )
    record = await guard.lookup("doubt")

    assert record is not None
    assert SendState.UNKNOWN is record.state
    assert 1 == reconciler.stats.ignored


async def test_a_callback_before_the_answer_wins_over_a_lost_answer(
    guard: SendOnceGuard,
    scripts: GuardScripts,
) -> None:
    """Reconciled while the attempt still waits for its answer: stays sent."""
    key = guard.record_key("k")
    await scripts.claim(key, owner="w", lease=60, ttl=60)
    await scripts.mark(key, owner="w", ttl=60)
    await guard.reconciler()(
        StatusCallback(
            message_id=9, status=MessageStatus.SENT, reference="k", authenticated=True
        )
    )
    verdict, _ = await scripts.settle(
        key, owner="w", action="unknown", reason="answer lost", ttl=60
    )
    record = await guard.lookup("k")

    assert "ok" == verdict
    assert record is not None
    assert (SendState.SENT, 9) == (record.state, record.message_id)


async def test_give_up_after_frees_an_unresolved_key(
    guard: SendOnceGuard, scripts: GuardScripts
) -> None:
    """Off by default; when asked, an unknown record unchanged that long is free."""
    key = guard.record_key("k")
    await scripts.settle(
        key, owner="", action="unknown", reason="lost", ttl=60, now=100.0
    )

    never, _ = await scripts.claim(key, owner="a", lease=5, ttl=60, now=500.0)
    early, _ = await scripts.claim(
        key, owner="b", lease=5, ttl=60, give_up_after=10.0, now=109.0
    )
    given_up, _ = await scripts.claim(
        key, owner="c", lease=5, ttl=60, give_up_after=10.0, now=110.0
    )

    assert ("exists", "exists", "claimed") == (never, early, given_up)


def test_give_up_after_is_checked() -> None:
    """A give-up time must be a positive number of seconds."""
    with pytest.raises(ConfigurationError, match="give_up_after"):
        SendOnceGuard(Redis(), give_up_after=0)
