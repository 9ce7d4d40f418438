"""send_messages: one result per input, lazy input, order, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from decisiontelecom_viber import (
    AsyncViberClient,
    InvalidParameterError,
    OutcomeUnknownError,
    SendOutcome,
    SendResult,
    ValidationError,
    ViberMessage,
)

from .helpers import DOCUMENTED_ERRORS, json_response


MakeClient = Callable[..., AsyncViberClient]


def message(n: int) -> ViberMessage:
    return ViberMessage.transactional(
        sender="Acme", receiver=f"38050{n:07d}", text=f"message {n}"
    )


def receiver_number(request: httpx.Request) -> int:
    return int(json.loads(request.content)["destination_addr"][5:])


def echo_ids(request: httpx.Request) -> httpx.Response:
    """Answer every send with message_id = 1000 + the item's number."""
    return json_response(200, {"message_id": 1000 + receiver_number(request)})


async def collect(stream: Any) -> list[SendResult]:
    return [result async for result in stream]


async def test_one_result_per_input_whatever_happens(
    api: respx.MockRouter, client: AsyncViberClient
) -> None:
    """Valid, invalid, refused and ambiguous items each get exactly one result."""

    def answer(request: httpx.Request) -> httpx.Response:
        n = receiver_number(request)
        if n == 3:
            return json_response(200, DOCUMENTED_ERRORS["invalid_parameter"])
        if n == 4:
            raise httpx.ReadTimeout("slow")
        return echo_ids(request)

    api.post("/send-viber").mock(side_effect=answer)
    items: list[Any] = [
        message(0),
        message(1),
        {"sender": "Acme"},
        message(3),
        message(4),
    ]
    items.append("not a message")

    results = sorted(await collect(client.send_messages(items)), key=lambda r: r.index)

    assert list(range(6)) == [r.index for r in results]
    assert [1000, 1001, None, None, None, None] == [r.message_id for r in results]
    assert isinstance(results[2].error, ValidationError)
    assert "receiver" == results[2].error.field
    assert {"sender": "Acme"} == results[2].message
    assert isinstance(results[3].error, InvalidParameterError)
    assert isinstance(results[4].error, OutcomeUnknownError)
    assert isinstance(results[5].error, ValidationError)
    assert [
        SendOutcome.SENT,
        SendOutcome.SENT,
        SendOutcome.FAILED,
        SendOutcome.FAILED,
        SendOutcome.UNKNOWN,
        SendOutcome.FAILED,
    ] == [r.outcome for r in results]


async def test_invalid_items_make_no_request(
    api: respx.MockRouter, client: AsyncViberClient
) -> None:
    """Items failing validation never reach the API."""
    route = api.post("/send-viber").mock(side_effect=echo_ids)
    bad = {
        "sender": "Acme",
        "receiver": "380501234567",
        "message_type": 108,
        "source_type": 1,
        "text": "no image",
    }

    results = await collect(client.send_messages([bad, message(1)]))

    assert 1 == route.call_count
    assert {"image_url"} == {
        r.error.field for r in results if isinstance(r.error, ValidationError)
    }


async def test_ordered_results_follow_the_input(
    api: respx.MockRouter, client: AsyncViberClient
) -> None:
    """ordered=True yields in input order even when answers come back shuffled."""

    async def slow_evens(request: httpx.Request) -> httpx.Response:
        n = receiver_number(request)
        await asyncio.sleep(0.002 * ((n * 7) % 5))
        return echo_ids(request)

    api.post("/send-viber").mock(side_effect=slow_evens)

    results = await collect(
        client.send_messages(
            (message(n) for n in range(40)), concurrency=8, ordered=True
        )
    )

    assert list(range(40)) == [r.index for r in results]
    assert [1000 + n for n in range(40)] == [r.message_id for r in results]


async def test_unordered_results_come_as_they_complete(
    api: respx.MockRouter, client: AsyncViberClient
) -> None:
    """By default a fast item is not held back by a slow one."""

    async def first_is_slow(request: httpx.Request) -> httpx.Response:
        if receiver_number(request) == 0:
            await asyncio.sleep(0.05)
        return echo_ids(request)

    api.post("/send-viber").mock(side_effect=first_is_slow)

    results = await collect(client.send_messages([message(n) for n in range(5)]))

    assert 0 == results[-1].index
    assert set(range(5)) == {r.index for r in results}


async def test_input_is_consumed_lazily(
    api: respx.MockRouter, client: AsyncViberClient
) -> None:
    """At most a bounded window of items is taken ahead of the consumer."""
    api.post("/send-viber").mock(side_effect=echo_ids)
    taken = 0

    def generate() -> Iterator[ViberMessage]:
        nonlocal taken
        for n in range(10_000):
            taken += 1
            yield message(n)

    stream = client.send_messages(generate(), concurrency=4)
    async with stream:
        first = await stream.__anext__()
        for _ in range(10):
            await asyncio.sleep(0)
        assert first.ok
        assert taken <= 4 * 2 + 1

    assert taken < 100


async def test_async_iterable_input(
    api: respx.MockRouter, client: AsyncViberClient
) -> None:
    """Async generators are accepted and consumed one item at a time."""
    api.post("/send-viber").mock(side_effect=echo_ids)

    async def generate() -> AsyncIterator[ViberMessage]:
        for n in range(25):
            await asyncio.sleep(0)
            yield message(n)

    results = await collect(client.send_messages(generate(), concurrency=5))

    assert set(range(25)) == {r.index for r in results}
    assert all(r.ok for r in results)


async def test_input_error_is_raised_after_the_taken_items(
    api: respx.MockRouter, client: AsyncViberClient
) -> None:
    """A failing input stops the batch, but only after reporting what was taken."""
    api.post("/send-viber").mock(side_effect=echo_ids)

    def generate() -> Iterator[ViberMessage]:
        yield message(0)
        yield message(1)
        raise OSError("disk gone")

    seen: list[int] = []

    async def consume() -> None:
        async for result in client.send_messages(generate()):
            seen.append(result.index)

    with pytest.raises(OSError, match="disk gone"):
        await consume()

    assert [0, 1] == sorted(seen)


async def test_cancelling_the_consumer_cancels_in_flight_requests(
    api: respx.MockRouter, make_client: MakeClient
) -> None:
    """Cancellation reaches in-flight sends and leaves no task behind."""
    client = make_client(rate_limit=None)
    started = 0
    cancelled = 0
    all_started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        nonlocal started, cancelled
        started += 1
        if started == 6:
            all_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        raise AssertionError("unreachable")

    api.post("/send-viber").mock(side_effect=hang)
    before = asyncio.all_tasks()

    async def consume() -> None:
        async for _ in client.send_messages(
            (message(n) for n in range(100)), concurrency=6
        ):
            pass

    task = asyncio.create_task(consume())
    await all_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (6, 6) == (started, cancelled)
    assert before == asyncio.all_tasks()


async def test_breaking_out_with_async_with_stops_everything(
    api: respx.MockRouter, client: AsyncViberClient
) -> None:
    """Leaving an `async with` block early cancels the rest and leaks nothing."""
    route = api.post("/send-viber").mock(side_effect=echo_ids)
    before = asyncio.all_tasks()

    async with client.send_messages(
        (message(n) for n in range(1000)), concurrency=3
    ) as stream:
        async for result in stream:
            if result.index >= 5:
                break

    assert before == asyncio.all_tasks()
    assert route.call_count < 20


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
async def test_concurrency_must_be_positive(client: AsyncViberClient, bad: Any) -> None:
    """concurrency is a positive int."""
    with pytest.raises(ValidationError):
        client.send_messages([], concurrency=bad)


@pytest.mark.parametrize("bad", ["abc", b"abc", 42, None])
async def test_messages_must_be_an_iterable(client: AsyncViberClient, bad: Any) -> None:
    """A string, bytes or a non-iterable: a ValidationError naming the argument."""
    with pytest.raises(ValidationError, match="messages"):
        client.send_messages(bad)


async def test_empty_input(client: AsyncViberClient) -> None:
    """No input, no results."""
    assert [] == await collect(client.send_messages([]))
