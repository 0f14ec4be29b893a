"""Acks that wait to share a frame (``ack_linger_ms``), against the real server.

An ack without ``confirm`` may wait up to the linger for others, but never
holds back more than half the prefetch, does not wait at all while acks come
in numbers, never waits in a ``key_ordered`` subscription (the key's next
message waits for it), goes out ahead of any later frame, keeps its order
among nacks and acks, and is sent when the client closes.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

import relaymq
from relaymq import errors
from tests.client.conftest import TOKEN

LONG_LINGER_MS = 10_000  # far longer than any test waits: an ack sent at all went early


async def acked_within(client: relaymq.AsyncClient, queue: str, count: int, seconds: float) -> bool:
    """Whether the server counts ``count`` acks of ``queue`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (await client.queues.get(queue)).acked >= count:
            return True
        await asyncio.sleep(0.02)
    return (await client.queues.get(queue)).acked >= count


async def received(subscription: relaymq.Subscription, count: int) -> list[relaymq.Message]:
    messages = []
    for _ in range(count):
        message = await subscription.receive(timeout_seconds=5)
        assert message is not None
        messages.append(message)
    return messages


async def test_an_ack_waits_for_the_linger_then_goes(client: relaymq.AsyncClient) -> None:
    await client.queues.create("jobs")
    await client.publish("jobs", b"one")
    subscription = client.subscribe("jobs", prefetch=10, ack_linger_ms=1_000)
    [message] = await received(subscription, 1)
    acked_at = time.monotonic()
    await message.ack()
    assert (await client.queues.get("jobs")).acked == 0  # still waiting for company
    assert await acked_within(client, "jobs", 1, 5)
    assert time.monotonic() - acked_at >= 0.9
    await subscription.close()


@pytest.mark.parametrize("second", ["ack", "nack"])
async def test_acks_go_once_half_the_prefetch_waits(
    client: relaymq.AsyncClient, second: str
) -> None:
    await client.queues.create("jobs")
    for payload in (b"one", b"two", b"three"):
        await client.publish("jobs", payload)
    subscription = client.subscribe("jobs", prefetch=4, ack_linger_ms=LONG_LINGER_MS)
    first, other = await received(subscription, 2)
    await first.ack()
    assert not await acked_within(client, "jobs", 1, 0.3)
    if second == "ack":
        await other.ack()
    else:  # every op counts toward the half
        await other.nack(delay_ms=0, error="not now")
    # two of a credit of four wait: both go now
    assert await acked_within(client, "jobs", 2 if second == "ack" else 1, 2)
    await subscription.close()


async def test_acks_do_not_wait_while_they_come_in_numbers(client: relaymq.AsyncClient) -> None:
    await client.queues.create("jobs")
    async with client.publisher(linger_ms=1) as publisher:
        for index in range(41):
            await publisher.publish("jobs", str(index).encode())
    subscription = client.subscribe("jobs", prefetch=200, ack_linger_ms=LONG_LINGER_MS)
    for message in await received(subscription, 40):
        await message.ack()
    await client.ping()  # forty receipts in one frame: a high rate
    [last] = await received(subscription, 1)
    await last.ack()  # so this one goes at once
    assert await acked_within(client, "jobs", 41, 2)
    await subscription.close()


async def test_acks_do_not_wait_once_half_the_prefetch_filled(
    client: relaymq.AsyncClient,
) -> None:
    await client.queues.create("jobs")
    for payload in (b"one", b"two", b"three"):
        await client.publish("jobs", payload)
    subscription = client.subscribe("jobs", prefetch=4, ack_linger_ms=LONG_LINGER_MS)
    first, second, third = await received(subscription, 3)
    await first.ack()
    await second.ack()  # half the prefetch: both go, and acks count as frequent
    assert await acked_within(client, "jobs", 2, 2)
    await third.ack()
    assert await acked_within(client, "jobs", 3, 2)
    await subscription.close()


async def test_a_later_frame_takes_the_waiting_acks_ahead_of_it(
    client: relaymq.AsyncClient,
) -> None:
    await client.queues.create("jobs")
    await client.publish("jobs", b"one")
    subscription = client.subscribe("jobs", ack_linger_ms=LONG_LINGER_MS)
    [message] = await received(subscription, 1)
    await message.ack()
    await client.ping()  # answered after the ack ahead of it was applied
    assert (await client.queues.get("jobs")).acked == 1
    await subscription.close()


async def test_waiting_receipts_keep_the_order_they_were_settled_in(
    client: relaymq.AsyncClient,
) -> None:
    await client.streams.create("ledger", subjects=["ledger.>"])
    await client.subscriptions.create("books", "ledger", mode="ordered")
    for index in range(3):
        await client.publish("ledger.entry", str(index))
    subscription = client.subscribe("books", prefetch=10, ack_linger_ms=LONG_LINGER_MS)
    first, second, third = await received(subscription, 3)
    await first.ack()
    await second.nack(delay_ms=0)
    await third.ack()  # sent after the nack: it cannot commit the nacked message
    await client.ping()
    again = await subscription.receive(timeout_seconds=5)
    assert again is not None and again.offset == second.offset
    await subscription.close()


async def test_a_key_ordered_ack_goes_at_once(client: relaymq.AsyncClient) -> None:
    await client.queues.create("orders", mode="key_ordered")
    await client.publish("orders", b"first", key="customer-1")
    await client.publish("orders", b"second", key="customer-1")
    subscription = client.subscribe("orders", ack_linger_ms=LONG_LINGER_MS)
    [first] = await received(subscription, 1)
    await first.ack()
    second = await subscription.receive(timeout_seconds=5)  # held until the ack arrives
    assert second is not None and second.payload == b"second"
    await subscription.close()


async def test_closing_the_client_sends_the_waiting_acks(
    server_url: str, namespace: str, client: relaymq.AsyncClient
) -> None:
    await client.queues.create("jobs")
    await client.publish("jobs", b"one")
    consumer = relaymq.AsyncClient(server_url, namespace=namespace, token=TOKEN)
    subscription = consumer.subscribe("jobs", ack_linger_ms=LONG_LINGER_MS)
    [message] = await received(subscription, 1)
    await message.ack()
    await consumer.close()
    assert await acked_within(client, "jobs", 1, 2)


@pytest.mark.parametrize("linger_ms", [-1, math.inf, math.nan])
def test_a_linger_below_zero_or_without_end_is_refused(
    client: relaymq.AsyncClient, linger_ms: float
) -> None:
    with pytest.raises(errors.InvalidArgument):
        client.subscribe("jobs", ack_linger_ms=linger_ms)
