"""Publishing and consuming through the SDK against the real server.

The batching publisher with confirms, a worker pool acking each message
exactly once, key order under ``key_ordered``, a failing handler leading to
redelivery and then the dead-letter queue, and the settle operations.
"""

from __future__ import annotations

import asyncio
import collections
import random

import relaymq
from relaymq import errors

MESSAGES = 10_000
PAYLOAD = b"x" * 256


async def test_ten_thousand_messages_confirmed_and_consumed_once_by_eight_workers(
    client: relaymq.AsyncClient,
) -> None:
    await client.queues.create("bulk", partitions=4)
    async with client.publisher(linger_ms=2, max_unconfirmed_messages=2_000) as publisher:
        futures = [
            await publisher.publish("bulk", PAYLOAD, id=f"m-{index}") for index in range(MESSAGES)
        ]
    results = [future.result() for future in futures]
    assert len({(result.partition, result.offset) for result in results}) == MESSAGES
    assert not any(result.duplicate for result in results)

    seen: collections.Counter[str] = collections.Counter()
    done = asyncio.Event()

    async def handle(message: relaymq.Message) -> None:
        seen[message.id] += 1
        if len(seen) == MESSAGES:
            done.set()

    worker = client.worker("bulk", handle, concurrency=8, prefetch=500)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(done.wait(), 60)
    await asyncio.sleep(0.3)  # a late redelivery would show up here
    worker.stop()
    await running
    assert set(seen) == {f"m-{index}" for index in range(MESSAGES)}
    assert set(seen.values()) == {1}
    assert worker.processed == MESSAGES and worker.failed == 0
    info = await client.queues.get("bulk")
    assert info.acked == MESSAGES and info.depth == 0 and info.redelivered == 0


async def test_key_order_is_kept_in_key_ordered_mode(client: relaymq.AsyncClient) -> None:
    await client.queues.create("orders", partitions=2, mode="key_ordered")
    keys = [f"customer-{number}" for number in range(8)]
    per_key = 40
    async with client.publisher(linger_ms=1) as publisher:
        for sequence in range(per_key):
            for key in keys:
                await publisher.publish("orders", str(sequence), key=key)
    handled: dict[str, list[int]] = collections.defaultdict(list)
    done = asyncio.Event()

    async def handle(message: relaymq.Message) -> None:
        assert message.key is not None
        handled[message.key].append(int(message.payload))
        await asyncio.sleep(random.uniform(0, 0.002))
        if sum(map(len, handled.values())) == per_key * len(keys):
            done.set()

    worker = client.worker("orders", handle, concurrency=8)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(done.wait(), 30)
    worker.stop()
    await running
    assert {key: sequences for key, sequences in handled.items()} == {
        key: list(range(per_key)) for key in keys
    }


async def test_a_failing_handler_leads_to_redelivery_then_the_dead_letter_queue(
    client: relaymq.AsyncClient,
) -> None:
    await client.queues.create(
        "poison", max_deliveries=3, backoff={"initial_ms": 10, "max_ms": 20, "jitter": 0}
    )
    await client.publish("poison", b"bad job", id="job-1")
    deliveries: list[int] = []

    async def handle(message: relaymq.Message) -> None:
        deliveries.append(message.delivery_count)
        raise ValueError("cannot process this")

    worker = client.worker("poison", handle, concurrency=2)
    running = asyncio.create_task(worker.run())
    dead: list[relaymq.client.StreamMessage] = []
    for _ in range(100):
        dead = await client.queues.dead_letters("poison")
        if dead:
            break
        await asyncio.sleep(0.05)
    worker.stop()
    await running
    assert deliveries == [1, 2, 3]
    assert worker.failed == 3
    assert [message.payload for message in dead] == [b"bad job"]
    assert "cannot process this" in dead[0].headers.get("relaymq-last-error", "")
    assert await client.queues.redrive("poison") == 1
    message = await client.subscribe("poison").receive(timeout_seconds=5)
    assert message is not None and message.payload == b"bad job"
    await message.ack(confirm=True)


async def test_nack_with_delay_term_and_extend(client: relaymq.AsyncClient) -> None:
    await client.queues.create("settle", ack_timeout_ms=1_000)
    await client.publish("settle", b"a", id="a")
    await client.publish("settle", b"b", id="b")
    subscription = client.subscribe("settle", prefetch=10)
    first = await subscription.receive(timeout_seconds=5)
    second = await subscription.receive(timeout_seconds=5)
    assert first is not None and second is not None
    await first.extend(5_000, confirm=True)
    assert first.lease_deadline_ms > second.lease_deadline_ms
    await first.nack(delay_ms=50)
    await second.term("not wanted", confirm=True)
    again = await subscription.receive(timeout_seconds=5)
    assert again is not None and again.id == "a" and again.delivery_count == 2
    await again.ack(confirm=True)
    try:
        await again.ack()
    except errors.InvalidArgument:
        pass
    else:
        raise AssertionError("a second ack must be refused")
    dead = await client.queues.dead_letters("settle")
    assert [message.payload for message in dead] == [b"b"]
    await subscription.close()


async def test_publish_errors_come_from_the_one_tree(client: relaymq.AsyncClient) -> None:
    try:
        await client.publish("no.such.subject", b"x")
    except errors.NoStreamForSubject as error:
        assert error.code == "no_stream_for_subject"
    else:
        raise AssertionError("expected NoStreamForSubject")


async def test_duplicate_ids_are_deduplicated(client: relaymq.AsyncClient) -> None:
    await client.queues.create("dedup")
    first = await client.publish("dedup", b"1", id="same")
    second = await client.publish("dedup", b"1", id="same")
    assert second.duplicate and (second.partition, second.offset) == (first.partition, first.offset)
