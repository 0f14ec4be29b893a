"""Early delivery: a subscription that gets messages once written, before their fsync
(held or failed through :mod:`tests.fsync_control`)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator

import pytest

from relaymq.broker import Broker
from relaymq.broker.models import StreamConfig, SubscriptionConfig
from relaymq.broker.subscription import TAIL_OFFER_MESSAGES
from relaymq.core.message import Message
from relaymq.core.partitioning import partition_for_key
from relaymq.errors import StorageFailed, Unavailable
from relaymq.store.local.log import LocalPartitionLog
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


async def ack_before_durable_then_fail(
    broker: Broker, held_sync: HeldSync, partitions: int = 1
) -> None:
    """A queue ``jobs`` whose partition 0 is stopped: the fsync of a message that went
    out early failed."""
    await broker.create_queue(
        NAMESPACE, "jobs", partitions=partitions, dead_letter=False, early_delivery=True
    )
    held_sync.fail = True
    message = Message(subject="jobs", payload=b"lost", key=key_of_partition(0, partitions))
    published = asyncio.create_task(broker.publish(NAMESPACE, [message]))
    await broker.fetch(NAMESPACE, "jobs", consumer_id="a", max_messages=1, wait_ms=2_000)
    held_sync.release()
    with pytest.raises(StorageFailed):
        await published


def key_of_partition(partition: int, partitions: int) -> str:
    return next(
        key
        for key in (f"key-{number}" for number in range(1_000))
        if partition_for_key(key, partitions) == partition
    )


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
    open_broker: BrokerFactory, held_sync: HeldSync, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await open_broker(checkpoint_interval_ms=QUIET_MS)  # only the final save
    published = await ack_before_durable(broker)
    real_flush = LocalPartitionLog.flush

    async def flush_released(log: LocalPartitionLog) -> None:
        held_sync.release()  # the held pass goes on only once the close flushes
        await real_flush(log)

    monkeypatch.setattr(LocalPartitionLog, "flush", flush_released)
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


async def test_a_failed_fsync_of_messages_no_cursor_took_early_does_not_stop_the_partition(
    broker: Broker, held_sync: HeldSync
) -> None:
    await broker.create_queue(NAMESPACE, "jobs", dead_letter=False, early_delivery=True)
    held_sync.release()
    for _ in range(0, TAIL_OFFER_MESSAGES, 512):  # the cursor holds these: it takes no more
        await broker.publish(NAMESPACE, [Message(subject="jobs", payload=b"b") for _ in range(512)])
    held_sync.fail = True
    with pytest.raises(Unavailable) as failed:  # rolled back, never delivered
        await publish(broker, b"lost")
    assert not isinstance(failed.value, StorageFailed)
    [result] = await publish(broker, b"kept")
    assert result.offset == TAIL_OFFER_MESSAGES
    assert broker.metrics().streams[0].failed_partitions == 0


async def test_a_stopped_partition_refuses_an_id_again_and_again_without_a_claim_left(
    broker: Broker, held_sync: HeldSync
) -> None:
    await ack_before_durable_then_fail(broker, held_sync)
    for _ in range(2):
        message = Message(subject="jobs", payload=b"x", id="same")
        with pytest.raises(StorageFailed):
            await asyncio.wait_for(broker.publish(NAMESPACE, [message]), 5)


async def test_a_publish_of_an_id_in_flight_shares_the_stop_of_the_original(
    broker: Broker, held_sync: HeldSync
) -> None:
    await broker.create_queue(NAMESPACE, "jobs", dead_letter=False, early_delivery=True)
    held_sync.fail = True
    message = Message(subject="jobs", payload=b"x", id="same")
    original = asyncio.create_task(broker.publish(NAMESPACE, [message]))
    await broker.fetch(NAMESPACE, "jobs", consumer_id="a", max_messages=1, wait_ms=2_000)
    again = Message(subject="jobs", payload=b"x", id="same")
    duplicate = asyncio.create_task(broker.publish(NAMESPACE, [again]))  # waits for it
    await asyncio.sleep(0.01)
    held_sync.release()
    for publishing in (original, duplicate):
        with pytest.raises(StorageFailed):  # storage_failed, not retried, for both
            await asyncio.wait_for(publishing, 5)


async def test_keyless_messages_go_to_the_partitions_still_taking_appends(
    broker: Broker, held_sync: HeldSync
) -> None:
    await ack_before_durable_then_fail(broker, held_sync, partitions=3)
    results = await broker.publish(
        NAMESPACE, [Message(subject="jobs", payload=b"k") for _ in range(6)]
    )
    assert sorted(result.partition for result in results) == [1, 1, 1, 2, 2, 2]


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
