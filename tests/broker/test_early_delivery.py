"""Early delivery: a subscription that gets messages once written, before their fsync
(held or failed through :mod:`tests.fsync_control`)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator

import pytest

from relaymq.broker import Broker
from relaymq.broker.models import StreamConfig, SubscriptionConfig
from relaymq.core.message import Message
from relaymq.errors import StorageFailed, Unavailable
from tests.fsync_control import HeldSync, hold_fsync

from .conftest import BrokerFactory

NAMESPACE = "default"
QUIET_MS = 3_600_000  # a checkpoint interval no test outlasts


@pytest.fixture
def held_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldSync]:
    held = hold_fsync(monkeypatch)
    yield held
    held.release()


def publish(broker: Broker, payload: bytes) -> asyncio.Task[object]:
    message = Message(subject="jobs", payload=payload)
    return asyncio.create_task(broker.publish(NAMESPACE, [message]))


async def ack_before_durable(broker: Broker) -> asyncio.Task[object]:
    """An early-delivery queue ``jobs`` whose first message is delivered and acked while
    its fsync is held; the publish, not confirmed yet."""
    await broker.create_queue(NAMESPACE, "jobs", dead_letter=False, early_delivery=True)
    published = publish(broker, b"m0")
    [delivery] = await broker.fetch(
        NAMESPACE, "jobs", consumer_id="a", max_messages=1, wait_ms=2_000
    )
    assert await broker.ack(NAMESPACE, "jobs", [delivery.receipt]) == [None]
    assert not published.done()
    return published


async def test_an_early_subscription_gets_a_message_before_its_fsync(
    broker: Broker, held_sync: HeldSync
) -> None:
    await broker.create_queue(NAMESPACE, "jobs", dead_letter=False, early_delivery=True)
    published = publish(broker, b"m0")
    [delivery] = await broker.fetch(
        NAMESPACE, "jobs", consumer_id="a", max_messages=1, wait_ms=2_000
    )
    assert delivery.message.payload == b"m0"
    assert not published.done()  # not confirmed: its fsync is still held
    held_sync.release()
    [result] = await asyncio.wait_for(published, 5)
    assert result.offset == delivery.message.offset == 0


async def test_a_default_subscription_waits_for_the_fsync(
    broker: Broker, held_sync: HeldSync
) -> None:
    await broker.create_queue(NAMESPACE, "jobs", dead_letter=False)
    published = publish(broker, b"m0")
    assert await broker.fetch(NAMESPACE, "jobs", consumer_id="a", max_messages=1, wait_ms=200) == []
    held_sync.release()
    await asyncio.wait_for(published, 5)
    [delivery] = await broker.fetch(NAMESPACE, "jobs", consumer_id="a", max_messages=1)
    assert delivery.message.payload == b"m0"


async def test_the_fsync_wakes_only_the_subscriptions_that_have_not_read_its_messages(
    broker: Broker, held_sync: HeldSync
) -> None:
    await broker.create_stream(NAMESPACE, StreamConfig(name="s", subjects=["jobs"]))
    for name, early in (("early", True), ("plain", False)):
        config = SubscriptionConfig(name=name, stream="s", early_delivery=early)
        await broker.create_subscription(NAMESPACE, config)
    signals = {name: broker._subscription(NAMESPACE, name).signal for name in ("early", "plain")}
    before = {name: signal.version for name, signal in signals.items()}
    published = publish(broker, b"m0")
    await asyncio.sleep(0.05)
    woken = {name: signal.version - before[name] for name, signal in signals.items()}
    assert woken == {"early": 1, "plain": 0}
    held_sync.release()
    await asyncio.wait_for(published, 5)
    woken = {name: signal.version - before[name] for name, signal in signals.items()}
    assert woken["early"] == 1 and woken["plain"] >= 1


async def test_an_ack_before_the_fsync_is_saved_only_once_durable(
    open_broker: BrokerFactory, held_sync: HeldSync
) -> None:
    broker = await open_broker(checkpoint_interval_ms=QUIET_MS)  # the test takes them
    published = await ack_before_durable(broker)
    subscription = broker._subscription(NAMESPACE, "jobs")
    _, floors = subscription.take_checkpoints()
    assert floors == {0: 0}  # offset 0 is not durable: its ack is not saved yet
    held_sync.release()
    await asyncio.wait_for(published, 5)
    _, floors = subscription.take_checkpoints()  # still dirty: saved again, whole now
    assert floors == {0: 1}
    assert subscription.take_checkpoints() == ([], {})


async def test_a_shutdown_saves_the_acks_of_early_deliveries_once_durable(
    open_broker: BrokerFactory, held_sync: HeldSync
) -> None:
    broker = await open_broker(checkpoint_interval_ms=QUIET_MS)  # only the final save
    published = await ack_before_durable(broker)
    asyncio.get_running_loop().call_later(0.05, held_sync.release)  # while closing
    await broker.close()
    assert published.done() and not published.exception()
    restarted = await open_broker()
    assert await restarted.fetch(NAMESPACE, "jobs", consumer_id="a", max_messages=1) == []


async def test_a_failed_fsync_after_an_early_delivery_stops_the_partition_until_a_restart(
    open_broker: BrokerFactory, held_sync: HeldSync
) -> None:
    broker = await open_broker()
    await broker.create_queue(NAMESPACE, "jobs", dead_letter=False, early_delivery=True)
    held_sync.fail = True
    published = publish(broker, b"lost")
    [early] = await broker.fetch(NAMESPACE, "jobs", consumer_id="a", max_messages=1, wait_ms=2_000)
    assert await broker.ack(NAMESPACE, "jobs", [early.receipt]) == [None]
    held_sync.release()
    with pytest.raises(StorageFailed):  # never confirmed: its publisher may send it again
        await asyncio.wait_for(published, 5)
    with pytest.raises(StorageFailed) as failed:
        await publish(broker, b"refused")
    assert failed.value.code == "storage_failed"
    assert broker.metrics().streams[0].failed_partitions == 1
    await broker.close()

    # The store cut the failed record, so offset 0 goes to a new message; the ack of
    # the early delivery at offset 0 was never saved, so the new message is delivered.
    restarted = await open_broker()
    [result] = await publish(restarted, b"after")
    assert result.offset == early.message.offset == 0
    [delivery] = await restarted.fetch(
        NAMESPACE, "jobs", consumer_id="a", max_messages=1, wait_ms=2_000
    )
    assert delivery.message.payload == b"after"


async def test_a_publish_touching_a_stopped_partition_writes_nothing(
    broker: Broker, held_sync: HeldSync
) -> None:
    await broker.create_stream(NAMESPACE, StreamConfig(name="s", subjects=["jobs"], partitions=2))
    config = SubscriptionConfig(name="early", stream="s", early_delivery=True)
    await broker.create_subscription(NAMESPACE, config)
    held_sync.fail = True
    failing = asyncio.create_task(
        broker.publish(NAMESPACE, [Message(subject="jobs", payload=b"x", key="a")])
    )
    await broker.fetch(NAMESPACE, "early", consumer_id="c", max_messages=1, wait_ms=2_000)
    held_sync.release()
    with pytest.raises(StorageFailed):
        await failing
    keys = [f"k{number}" for number in range(20)]  # both partitions
    with pytest.raises(StorageFailed):
        await broker.publish(
            NAMESPACE, [Message(subject="jobs", payload=b"y", key=key) for key in keys]
        )
    assert broker.stream_info(NAMESPACE, "s").messages == 0


async def test_a_failed_fsync_without_early_delivery_rolls_back_and_goes_on(
    broker: Broker, held_sync: HeldSync
) -> None:
    await broker.create_queue(NAMESPACE, "jobs", dead_letter=False)
    held_sync.fail = True
    held_sync.release()
    with pytest.raises(Unavailable) as failed:
        await publish(broker, b"lost")
    assert failed.value.details["errno"] == errno.EIO
    [result] = await publish(broker, b"kept")
    assert result.offset == 0
    [delivery] = await broker.fetch(NAMESPACE, "jobs", consumer_id="a", max_messages=1)
    assert delivery.message.payload == b"kept"
