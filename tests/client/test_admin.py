"""Admin round trips through the SDK (REST), errors mapped back onto the one tree,
replay of a stream by offset and by time, and ``ordered`` consumption with
committed offsets and seek."""

from __future__ import annotations

import pytest

import relaymq
from relaymq import errors
from tests.client.conftest import TOKEN


async def test_stream_and_subscription_round_trips(client: relaymq.AsyncClient) -> None:
    created = await client.streams.create("clicks", subjects=["clicks.>"], partitions=2)
    assert created.name == "clicks" and len(created.partitions) == 2
    assert [stream.name for stream in await client.streams.list()] == ["clicks"]
    again = await client.streams.create("clicks", subjects=["clicks.>"], exist_ok=True)
    assert again.created_ms == created.created_ms
    with pytest.raises(errors.StreamExists):
        await client.streams.create("clicks", subjects=["clicks.>"])
    updated = await client.streams.update("clicks", description="user clicks")
    assert updated.config["description"] == "user clicks"
    await client.subscriptions.create("audit", "clicks", mode="ordered", start="earliest")
    (audit,) = await client.subscriptions.list(stream="clicks")
    assert (audit.name, audit.stream, audit.mode) == ("audit", "clicks", "ordered")
    await client.publish("clicks.home", b"1")
    assert (await client.streams.get("clicks")).messages == 1
    await client.streams.purge("clicks")
    assert (await client.streams.get("clicks")).messages == 0
    await client.subscriptions.delete("audit")
    await client.streams.delete("clicks")
    with pytest.raises(errors.StreamNotFound) as raised:
        await client.streams.get("clicks")
    assert raised.value.code == "stream_not_found" and isinstance(raised.value, errors.NotFound)


async def test_queue_and_topic_round_trips(client: relaymq.AsyncClient) -> None:
    queue = await client.queues.create("jobs", max_deliveries=4)
    assert (queue.name, queue.max_deliveries, queue.dead_letter_queue) == ("jobs", 4, "jobs-dlq")
    assert {item.name for item in await client.queues.list()} == {"jobs", "jobs-dlq"}
    await client.publish("jobs", b"x")
    assert (await client.queues.get("jobs")).depth == 1
    await client.queues.purge("jobs")
    assert (await client.queues.get("jobs")).depth == 0
    await client.queues.delete("jobs")
    topic = await client.topics.create("events")
    assert topic.subjects == ["events", "events.>"]
    await client.topics.subscribe("events", "billing")
    await client.topics.subscribe("events", "billing", exist_ok=True)
    assert [item.name for item in (await client.topics.get("events")).subscriptions] == ["billing"]
    with pytest.raises(errors.NotFound):
        await client.topics.get("nope")


async def test_invalid_requests_map_to_invalid_argument(client: relaymq.AsyncClient) -> None:
    with pytest.raises(errors.InvalidArgument):
        await client.streams.create("bad name!")
    with pytest.raises(errors.SubscriptionNotFound):
        await client.subscribe("missing").receive(timeout_seconds=5)


async def test_namespaces(client: relaymq.AsyncClient, namespace: str) -> None:
    assert (await client.namespaces.get(namespace)).name == namespace
    await client.namespaces.create(namespace + "-other")
    assert namespace + "-other" in {item.name for item in await client.namespaces.list()}
    await client.namespaces.delete(namespace + "-other")


async def test_replay_by_offset_and_by_time(client: relaymq.AsyncClient) -> None:
    await client.streams.create("log", subjects=["log.>"])
    async with client.publisher(linger_ms=0) as publisher:
        for index in range(10):
            await publisher.publish("log.line", str(index))
    everything = [message async for message in client.replay("log")]
    assert [message.text for message in everything] == [str(index) for index in range(10)]
    from_offset = [message.offset async for message in client.replay("log", from_offset=7)]
    assert from_offset == [7, 8, 9]
    moment = everything[5].timestamp_ms
    by_time = [m async for m in client.replay("log", partition=0, from_timestamp_ms=moment)]
    assert by_time and all(message.timestamp_ms >= moment for message in by_time)
    assert by_time[-1].offset == 9 and by_time[0].offset <= 5


async def test_ordered_consumption_resumes_after_the_committed_offset(
    server_url: str, namespace: str, client: relaymq.AsyncClient
) -> None:
    await client.streams.create("ledger", subjects=["ledger.>"])
    await client.subscriptions.create("books", "ledger", mode="ordered")
    async with client.publisher(linger_ms=0) as publisher:
        for index in range(20):
            await publisher.publish("ledger.entry", str(index))

    async with relaymq.AsyncClient(server_url, namespace=namespace, token=TOKEN) as first:
        subscription = first.subscribe("books", prefetch=10)
        offsets = []
        async for message in subscription:
            offsets.append(message.offset)
            if message.offset == 9:
                await message.ack(confirm=True)  # commits 0..9 (cumulative)
                break
        assert offsets == list(range(10))

    async with relaymq.AsyncClient(server_url, namespace=namespace, token=TOKEN) as second:
        message = await second.subscribe("books").receive(timeout_seconds=5)
        assert message is not None and message.offset == 10

    await client.subscriptions.seek("books", offset=3)
    async with relaymq.AsyncClient(server_url, namespace=namespace, token=TOKEN) as third:
        message = await third.subscribe("books").receive(timeout_seconds=5)
        assert message is not None and message.offset == 3
