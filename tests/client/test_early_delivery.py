"""Early delivery through the SDK against the real server: a consumer gets a message
before its publish is confirmed, every message once and in key order, and a failed
fsync after an early delivery is reported as ``storage_failed`` over WebSocket and
HTTP instead of being retried."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator

import pytest

import relaymq
from relaymq import errors
from tests.client.conftest import Api
from tests.fsync_control import HeldSync, hold_fsync
from tests.server.conftest import expect_error


@pytest.fixture
def held_sync(monkeypatch: pytest.MonkeyPatch, namespace: str) -> Iterator[HeldSync]:
    held = hold_fsync(monkeypatch, namespace)  # the server is shared with other tests
    yield held
    held.release()


async def test_a_consumer_gets_a_message_before_its_publish_is_confirmed(
    client: relaymq.AsyncClient, held_sync: HeldSync
) -> None:
    await client.queues.create("early", early_delivery=True)
    async with client.subscribe("early", prefetch=10) as subscription:
        async with client.publisher(linger_ms=0) as publisher:
            confirm = await publisher.publish("early", b"first")
            message = await subscription.receive(timeout_seconds=5)
            assert message is not None and message.payload == b"first"
            assert not confirm.done()  # its fsync is still held
            await message.ack()
            held_sync.release()
        assert confirm.result().offset == 0


async def test_a_failed_fsync_after_an_early_delivery_is_storage_failed(
    client: relaymq.AsyncClient, api: Api, held_sync: HeldSync
) -> None:
    await client.queues.create("early", early_delivery=True)
    held_sync.fail = True
    async with client.subscribe("early", prefetch=10) as subscription:
        publishing = asyncio.create_task(client.publish("early", b"lost"))
        assert await subscription.receive(timeout_seconds=5) is not None
        held_sync.release()
        with pytest.raises(errors.StorageFailed):  # not retried: it cannot succeed
            await asyncio.wait_for(publishing, 5)
    with pytest.raises(errors.StorageFailed) as raised:
        await asyncio.wait_for(client.publish("early", b"refused"), 5)
    assert raised.value.details["stream"] == "early"
    response = api.post("/queues/early/messages", json={"messages": [{"payload": "x"}]})
    expect_error(response, 507, "storage_failed")
    assert "Retry-After" not in response.headers


async def test_an_early_delivery_queue_delivers_every_message_once_in_key_order(
    client: relaymq.AsyncClient,
) -> None:
    queue = await client.queues.create(
        "early", partitions=2, mode="key_ordered", early_delivery=True
    )
    assert queue.early_delivery
    subscription = await client.subscriptions.get("early")
    assert subscription.config["early_delivery"] is True
    assert not (await client.queues.create("plain")).early_delivery
    keys = [f"k{number}" for number in range(4)]
    handled: dict[str, list[int]] = collections.defaultdict(list)
    done = asyncio.Event()

    async def handle(message: relaymq.Message) -> None:
        assert message.key is not None
        handled[message.key].append(int(message.payload))
        if sum(map(len, handled.values())) == 500 * len(keys):
            done.set()

    worker = client.worker("early", handle, concurrency=4, prefetch=100)
    running = asyncio.create_task(worker.run())
    async with client.publisher(linger_ms=0) as publisher:
        for sequence in range(500):
            for key in keys:
                await publisher.publish("early", str(sequence), key=key)
    await asyncio.wait_for(done.wait(), 30)
    await asyncio.sleep(0.3)  # a late redelivery would show up here
    worker.stop()
    await running
    assert {key: values for key, values in handled.items()} == {
        key: list(range(500)) for key in keys
    }
    info = await client.queues.get("early")
    assert info.acked == 2_000 and info.depth == 0 and info.redelivered == 0
