"""Streams, topics and consumer groups through the broker API: routing, fan-out, replay,
dedup, retention, restart, and typed errors for bad calls."""

from __future__ import annotations

import asyncio
import gc

import pytest

from relaymq.broker import Broker
from relaymq.broker.models import (
    RetentionPolicy,
    StartKind,
    StartPosition,
    StorageKind,
    StreamConfig,
    StreamUpdate,
    SubscriptionConfig,
)
from relaymq.core.cursor import DeliveryMode
from relaymq.core.message import Message
from relaymq.errors import (
    BatchTooLarge,
    HeadersTooLarge,
    InvalidName,
    InvalidSubject,
    NoStreamForSubject,
    PayloadTooLarge,
    SchemaViolation,
    StorageFull,
    StreamExists,
    StreamNotFound,
    SubjectOverlap,
    SubscriptionNotFound,
    WrongDeliveryMode,
)

from .conftest import BrokerFactory, ManualClock


def orders(count: int, start: int = 0, **fields: object) -> list[Message]:
    return [
        Message(subject="orders.eu.created", payload=b"%d" % i, **fields)
        for i in range(start, start + count)
    ]


async def drain(broker: Broker, subscription: str, consumer: str = "c") -> list[Message]:
    received = []
    while batch := await broker.fetch(
        "default", subscription, consumer_id=consumer, max_messages=100
    ):
        received += [d.message for d in batch]
        await broker.ack("default", subscription, [d.receipt for d in batch])
    return received


async def test_topic_fans_out_to_every_subscription_with_filters(broker: Broker) -> None:
    await broker.create_topic("default", "orders")
    for name, subject_filter in (("all", ">"), ("eu", "orders.eu.*"), ("us", "orders.us.>")):
        await broker.create_subscription(
            "default", SubscriptionConfig(name=name, stream="orders", filter_subject=subject_filter)
        )
    await broker.publish(
        "default", [*orders(3), Message(subject="orders.us.created", payload=b"us")]
    )
    assert len(await drain(broker, "all")) == 4
    assert [m.payload for m in await drain(broker, "eu")] == [b"0", b"1", b"2"]
    assert [m.payload for m in await drain(broker, "us")] == [b"us"]


async def test_publish_returns_partition_and_offset_and_keys_pick_partitions(
    broker: Broker,
) -> None:
    await broker.create_stream(
        "default", StreamConfig(name="orders", subjects=["orders.>"], partitions=4)
    )
    results = await broker.publish("default", orders(8, key="customer-1"))
    assert len({r.partition for r in results}) == 1
    assert [r.offset for r in results] == list(range(8))
    keyless = await broker.publish("default", orders(8))
    assert len({r.partition for r in keyless}) == 4


async def test_dedup_returns_the_original_offset(broker: Broker) -> None:
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    [first] = await broker.publish("default", orders(1, id="order-1"))
    [again] = await broker.publish("default", orders(1, id="order-1"))
    assert (again.offset, again.duplicate, first.duplicate) == (first.offset, True, False)
    assert broker.stream_info("default", "orders").messages == 1


async def test_dedup_survives_a_restart(open_broker: BrokerFactory) -> None:
    broker = await open_broker()
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    [first] = await broker.publish("default", orders(1, id="order-1"))
    await broker.close()
    reopened = await open_broker()
    [again] = await reopened.publish("default", orders(1, id="order-1"))
    assert again.duplicate and again.offset == first.offset


async def test_ordered_group_cumulative_ack_and_seek_replay(
    broker: Broker, clock: ManualClock
) -> None:
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    await broker.create_subscription(
        "default", SubscriptionConfig(name="group", stream="orders", mode=DeliveryMode.ORDERED)
    )
    await broker.publish("default", orders(5))
    middle_ms = clock()
    clock.advance(10)
    await broker.publish("default", orders(5, start=5))
    batch = await broker.fetch("default", "group", consumer_id="c", max_messages=10)
    assert [d.message.offset for d in batch] == list(range(10))
    await broker.ack("default", "group", [batch[-1].receipt])  # commits everything before it
    assert broker.subscription_info("default", "group").lag_messages == 0

    await broker.seek("default", "group", offset=3)
    replay = await broker.fetch("default", "group", consumer_id="c", max_messages=10)
    assert [d.message.offset for d in replay] == list(range(3, 10))
    await broker.seek("default", "group", timestamp_ms=middle_ms + 5)
    replay = await broker.fetch("default", "group", consumer_id="c", max_messages=10)
    assert [d.message.offset for d in replay] == list(range(5, 10))


async def test_seek_is_only_for_ordered_subscriptions(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    with pytest.raises(WrongDeliveryMode):
        await broker.seek("default", "jobs", offset=0)


async def test_subscription_start_positions(broker: Broker, clock: ManualClock) -> None:
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    await broker.publish("default", orders(4))
    cases = {
        "earliest": (StartPosition(kind=StartKind.EARLIEST), 4),
        "latest": (StartPosition(kind=StartKind.LATEST), 0),
        "offset": (StartPosition(kind=StartKind.OFFSET, value=3), 1),
        "future": (StartPosition(kind=StartKind.TIMESTAMP, value=clock() + 60_000), 0),
    }
    for name, (start, _) in cases.items():
        await broker.create_subscription(
            "default", SubscriptionConfig(name=name, stream="orders", start=start)
        )
    for name, (_, expected) in cases.items():
        assert len(await drain(broker, name)) == expected, name


async def test_read_stream_by_offset_and_time(broker: Broker, clock: ManualClock) -> None:
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    await broker.publish("default", orders(3))
    later_ms = clock() + 100
    clock.advance(200)
    await broker.publish("default", orders(2, start=3))
    by_offset = await broker.read_stream("default", "orders", from_offset=1, max_messages=2)
    assert [m.offset for m in by_offset] == [1, 2]
    by_time = await broker.read_stream("default", "orders", from_timestamp_ms=later_ms)
    assert [m.offset for m in by_time] == [3, 4]


async def test_work_queue_trims_acked_messages(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    await broker.publish("default", [Message(subject="jobs", payload=b"x")] * 10)
    await drain(broker, "jobs")
    await broker._maintenance.save_checkpoints()
    await broker._maintenance.enforce_retention(0)
    assert broker.stream_info("default", "jobs").messages == 0


async def test_interest_stream_keeps_until_every_subscription_acked(broker: Broker) -> None:
    await broker.create_stream(
        "default",
        StreamConfig(name="orders", subjects=["orders.>"], retention=RetentionPolicy.INTEREST),
    )
    for name in ("a", "b"):
        await broker.create_subscription("default", SubscriptionConfig(name=name, stream="orders"))
    await broker.publish("default", orders(5))
    await drain(broker, "a")
    await broker._maintenance.save_checkpoints()
    await broker._maintenance.enforce_retention(0)
    assert broker.stream_info("default", "orders").messages == 5
    await drain(broker, "b")
    await broker._maintenance.save_checkpoints()
    await broker._maintenance.enforce_retention(0)
    assert broker.stream_info("default", "orders").messages == 0


async def test_retention_by_count_and_discard_new(broker: Broker) -> None:
    await broker.create_stream(
        "default", StreamConfig(name="orders", subjects=["orders.>"], max_messages=3, discard="new")
    )
    await broker.publish("default", orders(3))
    with pytest.raises(StorageFull):
        await broker.publish("default", orders(1))


async def test_restart_redelivers_unacked_and_not_acked(open_broker: BrokerFactory) -> None:
    broker = await open_broker()
    await broker.create_queue("default", "jobs")
    await broker.publish("default", [Message(subject="jobs", payload=b"%d" % i) for i in range(6)])
    batch = await broker.fetch("default", "jobs", consumer_id="c", max_messages=6)
    await broker.ack("default", "jobs", [d.receipt for d in batch[:3]])
    await broker.close()

    reopened = await open_broker()
    again = await drain(reopened, "jobs")
    assert sorted(m.payload for m in again) == [b"3", b"4", b"5"]


async def test_memory_stream_works_and_forgets_on_restart(open_broker: BrokerFactory) -> None:
    broker = await open_broker()
    await broker.create_stream(
        "default", StreamConfig(name="fast", subjects=["fast"], storage=StorageKind.MEMORY)
    )
    await broker.create_subscription("default", SubscriptionConfig(name="reader", stream="fast"))
    await broker.publish("default", [Message(subject="fast", payload=b"x")] * 3)
    assert len(await drain(broker, "reader")) == 3
    await broker.close()
    reopened = await open_broker()
    assert reopened.stream_info("default", "fast").messages == 0
    await reopened.publish("default", [Message(subject="fast", payload=b"y")])
    assert [m.payload for m in await drain(reopened, "reader")] == [b"y"]


async def test_update_stream_changes_subjects(broker: Broker) -> None:
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    await broker.update_stream(
        "default", "orders", StreamUpdate(subjects=["orders.>", "refunds.>"])
    )
    [result] = await broker.publish("default", [Message(subject="refunds.x", payload=b"")])
    assert result.stream == "orders"


async def test_json_schema_is_enforced(broker: Broker) -> None:
    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
    await broker.create_stream(
        "default", StreamConfig(name="orders", subjects=["orders.>"], json_schema=schema)
    )
    await broker.publish("default", [Message(subject="orders.x", payload=b'{"id": 1}')])
    for payload in (b'{"id": "one"}', b"not json"):
        with pytest.raises(SchemaViolation):
            await broker.publish("default", [Message(subject="orders.x", payload=payload)])


async def test_bad_calls_get_typed_errors(broker: Broker) -> None:
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    with pytest.raises(StreamNotFound):
        broker.stream_info("default", "missing")
    with pytest.raises(SubscriptionNotFound):
        await broker.fetch("default", "missing", consumer_id="c", max_messages=1)
    with pytest.raises(InvalidSubject):
        await broker.publish("default", [Message(subject="orders..x")])
    with pytest.raises(InvalidSubject):
        await broker.publish("default", [Message(subject="orders.*")])
    with pytest.raises(NoStreamForSubject):
        await broker.publish("default", [Message(subject="nowhere")])
    with pytest.raises(PayloadTooLarge):
        await broker.publish(
            "default", [Message(subject="orders.x", payload=b"x" * (1024 * 1024 + 1))]
        )
    with pytest.raises(HeadersTooLarge):
        await broker.publish("default", [Message(subject="orders.x", headers={"h": "x" * 20_000})])
    with pytest.raises(BatchTooLarge):
        await broker.publish("default", [Message(subject="orders.x")] * 1_001)
    with pytest.raises(StreamExists):
        await broker.create_stream("default", StreamConfig(name="orders", subjects=["other"]))
    with pytest.raises(SubjectOverlap):
        await broker.create_stream("default", StreamConfig(name="other", subjects=["orders.eu.*"]))
    with pytest.raises(InvalidName):
        await broker.create_stream("default", StreamConfig(name="../etc", subjects=["x"]))
    assert broker.stream_info("default", "orders").messages == 0


async def test_full_disk_is_a_typed_error_and_loses_nothing_confirmed(
    open_broker: BrokerFactory,
) -> None:
    broker = await open_broker()
    await broker.create_queue("default", "jobs")
    await broker.publish("default", [Message(subject="jobs", payload=b"kept")] * 5)
    await broker.close()

    full = await open_broker(min_free_disk_bytes=1 << 62)
    with pytest.raises(StorageFull):
        await full.publish("default", [Message(subject="jobs", payload=b"lost")])
    await full.close()

    broker = await open_broker()
    assert [m.payload for m in await drain(broker, "jobs")] == [b"kept"] * 5


async def test_a_cancelled_publish_that_lands_is_still_deduplicated(broker: Broker) -> None:
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    publishing = asyncio.create_task(broker.publish("default", orders(1, id="order-1")))
    await asyncio.sleep(0)  # written, waiting for its fsync
    publishing.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await publishing
    [retry] = await broker.publish("default", orders(1, id="order-1"))
    assert retry.duplicate
    assert broker.stream_info("default", "orders").messages == 1


async def test_a_cancelled_duplicate_leaves_the_original_and_other_duplicates_whole(
    broker: Broker,
) -> None:
    await broker.create_stream("default", StreamConfig(name="orders", subjects=["orders.>"]))
    original = broker.start_publish("default", orders(1, id="order-1"))
    gone = broker.start_publish("default", orders(1, id="order-1"))  # waits for the original
    other = broker.start_publish("default", orders(1, id="order-1"))
    await asyncio.sleep(0)
    gone.cancel()  # its client went away while the original was in flight
    [first] = await asyncio.wait_for(original, 5)
    [again] = await asyncio.wait_for(other, 5)
    assert not first.duplicate
    assert again.duplicate and again.offset == first.offset
    assert broker.stream_info("default", "orders").messages == 1


async def test_publishes_are_written_in_call_order_across_streams(broker: Broker) -> None:
    await broker.create_stream("default", StreamConfig(name="eu", subjects=["eu.>"]))
    await broker.create_stream("default", StreamConfig(name="us", subjects=["us.>"]))
    spread = broker.start_publish(
        "default", [Message(subject="eu.a", key="k"), Message(subject="us.a", key="k")]
    )
    after = broker.start_publish("default", [Message(subject="eu.a", key="k")])
    [eu_first, _us], [eu_second] = await asyncio.gather(spread, after)
    assert eu_first.offset < eu_second.offset  # per-key order is the order of the calls


async def test_a_publish_over_streams_with_a_full_one_fails_and_keeps_what_it_wrote(
    broker: Broker,
) -> None:
    await broker.create_stream("default", StreamConfig(name="eu", subjects=["eu.>"]))
    await broker.create_stream(
        "default", StreamConfig(name="us", subjects=["us.>"], max_messages=1, discard="new")
    )
    await broker.publish("default", [Message(subject="us.a")])  # "us" is full
    unretrieved: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
    spread = [Message(subject="eu.a", id="m-1"), Message(subject="us.a", id="m-2")]
    with pytest.raises(StorageFull):
        broker.start_publish("default", spread)
    await asyncio.sleep(0.05)  # the written share became durable meanwhile
    assert broker.stream_info("default", "eu").messages == 1
    [kept] = await broker.publish("default", [Message(subject="eu.a", id="m-1")])
    assert kept.duplicate  # a retry of the call does not write it twice
    gc.collect()
    assert unretrieved == []  # no future left with an error nobody looked at
