"""The sync client's loop thread (`_portal`): no call may wait forever."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator

import pytest

from decisiontelecom_viber import ClientClosedError, ConfigurationError
from decisiontelecom_viber._portal import End, Handoff, Portal


@pytest.fixture
def portal() -> Iterator[Portal]:
    portal = Portal()
    yield portal
    portal.stop()


def hold_the_loop(portal: Portal, seconds: float) -> concurrent.futures.Future[None]:
    """Keep the loop busy (a blocking call): what is sent next queues."""

    async def block() -> None:
        time.sleep(seconds)  # noqa: ASYNC251 - blocking on purpose

    future = portal.submit(block)
    time.sleep(0.02)
    return future


async def forever() -> None:
    await asyncio.Event().wait()


def test_a_call_cancelled_before_its_first_step_still_ends(portal: Portal) -> None:
    hold_the_loop(portal, 0.2)
    future = portal.submit(forever)
    portal.cancel(future)  # (queued behind the task's creation)

    done, _ = concurrent.futures.wait([future], timeout=5)

    assert done
    assert isinstance(future.exception(), asyncio.CancelledError)


def test_calls_queued_when_the_loop_stops_end_too(portal: Portal) -> None:
    """Submitted, then the loop stopped before they ran: cancelled, not hung."""
    hold_the_loop(portal, 0.2)
    futures = [portal.submit(forever) for _ in range(3)]
    portal.stop()

    done, _ = concurrent.futures.wait(futures, timeout=5)

    assert len(done) == 3
    assert all(isinstance(f.exception(), asyncio.CancelledError) for f in futures)
    with pytest.raises(ClientClosedError):
        portal.submit(forever)


def test_a_call_from_the_loops_own_thread_is_refused(portal: Portal) -> None:
    async def reenter() -> None:
        portal.submit(forever)

    with pytest.raises(ConfigurationError, match="wait for itself"):
        portal.call(reenter)


def test_the_handoff_holds_the_producer_back(portal: Portal) -> None:
    """At most *limit* items wait for the consumer; it gets them all, in order."""
    loop = portal.running_loop()
    handoff: Handoff[int] = Handoff(loop, limit=4)
    most: list[int] = []

    async def produce() -> None:
        for n in range(20):
            await handoff.put(n)
            most.append(handoff.waiting)
        handoff.end()

    producing = portal.submit(produce)
    time.sleep(0.1)
    assert not producing.done()  # (held at 4 waiting)
    got = []
    while not isinstance(item := handoff.get(), End):
        got.append(item)
    producing.result(timeout=5)
    assert got == list(range(20))
    assert max(most) <= 4


def test_a_portal_serves_many_threads_at_once(portal: Portal) -> None:
    async def echo(n: int) -> int:
        await asyncio.sleep(0)
        return n

    results: list[int] = []
    lock = threading.Lock()

    def work(base: int) -> None:
        for n in range(base, base + 50):
            value = portal.call(lambda n=n: echo(n))  # type: ignore[misc]
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work, args=(b * 100,)) for b in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(b * 100 + n for b in range(8) for n in range(50))
