"""Queues through the broker API: competing consumers, acks, retries, dead letters, redrive."""

from __future__ import annotations

import asyncio

import pytest

from relaymq.broker import Broker
from relaymq.broker.deadletters import DELIVERY_COUNT, LAST_ERROR, ORIGIN_STREAM, REASON
from relaymq.broker.models import Backoff, DiscardPolicy, StreamConfig, SubscriptionConfig
from relaymq.core.message import Message
from relaymq.errors import ReceiptNotFound, StaleReceipt, StorageFull, SubscriptionNotFound

from .conftest import BrokerFactory, ManualClock

FAST_RETRY = Backoff(initial_ms=1, max_ms=1, multiplier=1.0, jitter=0.0)


async def publish(broker: Broker, subject: str, count: int, **fields: object) -> None:
    messages = [Message(subject=subject, payload=f"m{i}".encode(), **fields) for i in range(count)]
    await broker.publish("default", messages)


async def test_competing_consumers_share_a_queue_and_ack(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    await publish(broker, "jobs", 10)
    first = await broker.fetch("default", "jobs", consumer_id="a", max_messages=4)
    second = await broker.fetch("default", "jobs", consumer_id="b", max_messages=10)
    assert len(first) == 4 and len(second) == 6
    payloads = {d.message.payload for d in first + second}
    assert payloads == {f"m{i}".encode() for i in range(10)}
    outcomes = await broker.ack("default", "jobs", [d.receipt for d in first + second])
    assert outcomes == [None] * 10
    info = broker.subscription_info("default", "jobs")
    assert (info.in_flight, info.pending, info.acked) == (0, 0, 10)
    assert await broker.fetch("default", "jobs", consumer_id="a", max_messages=10) == []


async def test_double_ack_is_receipt_not_found(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    await publish(broker, "jobs", 1)
    [delivery] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=1)
    assert await broker.ack("default", "jobs", [delivery.receipt]) == [None]
    [outcome] = await broker.ack("default", "jobs", [delivery.receipt])
    assert isinstance(outcome, ReceiptNotFound)


async def test_lease_expiry_redelivers_and_fences_the_stale_receipt(
    broker: Broker, clock: ManualClock
) -> None:
    await broker.create_queue("default", "jobs", ack_timeout_ms=1_000, backoff=FAST_RETRY)
    await publish(broker, "jobs", 1)
    [first] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=1)
    clock.advance(1_500)
    [second] = await broker.fetch("default", "jobs", consumer_id="b", max_messages=1, wait_ms=500)
    assert second.message.offset == first.message.offset
    assert second.delivery_count == 2
    [stale] = await broker.ack("default", "jobs", [first.receipt])
    assert isinstance(stale, StaleReceipt)
    assert await broker.ack("default", "jobs", [second.receipt]) == [None]
    assert broker.subscription_info("default", "jobs").redelivered == 1


async def test_nack_with_delay_redelivers_after_the_delay(
    broker: Broker, clock: ManualClock
) -> None:
    await broker.create_queue("default", "jobs")
    await publish(broker, "jobs", 1)
    [delivery] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=1)
    assert await broker.nack("default", "jobs", [delivery.receipt], delay_ms=60_000) == [None]
    assert await broker.fetch("default", "jobs", consumer_id="a", max_messages=1) == []
    clock.advance(61_000)
    [again] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=1)
    assert again.delivery_count == 2


async def test_max_deliveries_dead_letters_with_origin_headers_and_redrive(broker: Broker) -> None:
    await broker.create_queue("default", "jobs", max_deliveries=2, backoff=FAST_RETRY)
    await publish(broker, "jobs", 1, key="k1", headers={"trace": "t1"})
    for _ in range(2):
        [delivery] = await broker.fetch(
            "default", "jobs", consumer_id="a", max_messages=1, wait_ms=1_000
        )
        await broker.nack("default", "jobs", [delivery.receipt], error="boom")
    [dead] = await broker.read_stream("default", "jobs-dlq")
    assert dead.payload == b"m0" and dead.key == "k1" and dead.headers["trace"] == "t1"
    assert dead.headers[ORIGIN_STREAM] == "jobs"
    assert dead.headers[REASON] == "max_deliveries"
    assert dead.headers[DELIVERY_COUNT] == "2"
    assert dead.headers[LAST_ERROR] == "boom"
    assert broker.subscription_info("default", "jobs").dead_lettered == 1
    assert await broker.fetch("default", "jobs", consumer_id="a", max_messages=1) == []

    assert await broker.redrive("default", "jobs") == 1
    [back] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=1, wait_ms=1_000)
    assert back.message.payload == b"m0" and back.message.headers == {"trace": "t1"}
    assert back.delivery_count == 1
    assert await broker.redrive("default", "jobs") == 0


async def test_term_dead_letters_at_once(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    await publish(broker, "jobs", 1)
    [delivery] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=1)
    assert await broker.term("default", "jobs", [delivery.receipt], reason="bad input") == [None]
    [dead] = await broker.read_stream("default", "jobs-dlq")
    assert dead.headers[REASON] == "terminated" and dead.headers[LAST_ERROR] == "bad input"


async def test_extend_keeps_the_lease(broker: Broker, clock: ManualClock) -> None:
    await broker.create_queue("default", "jobs", ack_timeout_ms=1_000)
    await publish(broker, "jobs", 1)
    [delivery] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=1)
    [deadline] = await broker.extend("default", "jobs", [delivery.receipt], extend_ms=10_000)
    assert isinstance(deadline, int) and deadline >= clock() + 9_000
    clock.advance(5_000)
    assert await broker.fetch("default", "jobs", consumer_id="b", max_messages=1) == []
    assert await broker.ack("default", "jobs", [delivery.receipt]) == [None]


async def test_priority_delivers_higher_first(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    for priority in (1, 5, 3):
        await broker.publish(
            "default", [Message(subject="jobs", payload=b"%d" % priority, priority=priority)]
        )
    deliveries = await broker.fetch("default", "jobs", consumer_id="a", max_messages=3)
    assert [d.message.priority for d in deliveries] == [5, 3, 1]


async def test_delayed_message_waits_for_deliver_at(broker: Broker, clock: ManualClock) -> None:
    await broker.create_queue("default", "jobs")
    await broker.publish(
        "default", [Message(subject="jobs", payload=b"later", deliver_at_ms=clock() + 60_000)]
    )
    await publish(broker, "jobs", 1)
    [now] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=5)
    assert now.message.payload == b"m0"
    clock.advance(61_000)
    [later] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=5)
    assert later.message.payload == b"later"


async def test_expired_message_goes_to_the_dead_letter_queue(
    broker: Broker, clock: ManualClock
) -> None:
    await broker.create_queue("default", "jobs")
    await broker.publish(
        "default", [Message(subject="jobs", payload=b"x", expires_at_ms=clock() + 1_000)]
    )
    clock.advance(2_000)
    assert await broker.fetch("default", "jobs", consumer_id="a", max_messages=1) == []
    [dead] = await broker.read_stream("default", "jobs-dlq", wait_ms=1_000)
    assert dead.headers[REASON] == "expired"


async def test_credit_caps_messages_in_flight(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    await publish(broker, "jobs", 20)
    first = await broker.fetch("default", "jobs", consumer_id="a", max_messages=20, max_in_flight=5)
    assert len(first) == 5
    assert (
        await broker.fetch("default", "jobs", consumer_id="a", max_messages=20, max_in_flight=5)
        == []
    )
    await broker.ack("default", "jobs", [first[0].receipt, first[1].receipt])
    more = await broker.fetch("default", "jobs", consumer_id="a", max_messages=20, max_in_flight=5)
    assert len(more) == 2


async def test_long_poll_wakes_on_publish(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    loop = asyncio.get_running_loop()
    started = loop.time()
    fetch = asyncio.create_task(
        broker.fetch("default", "jobs", consumer_id="a", max_messages=1, wait_ms=10_000)
    )
    await asyncio.sleep(0.05)
    await publish(broker, "jobs", 1)
    [delivery] = await fetch
    assert delivery.message.payload == b"m0"
    assert loop.time() - started < 2


async def test_release_consumer_redelivers_at_once(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    await publish(broker, "jobs", 3)
    held = await broker.fetch("default", "jobs", consumer_id="gone", max_messages=3)
    assert len(held) == 3
    await broker.release_consumer("default", "jobs", "gone")
    again = await broker.fetch("default", "jobs", consumer_id="b", max_messages=3)
    assert sorted(d.message.offset for d in again) == sorted(d.message.offset for d in held)


@pytest.mark.parametrize("partitions", [1, 4])
async def test_key_ordered_keeps_order_per_key_while_a_key_fails(
    broker: Broker, partitions: int
) -> None:
    from relaymq.core.cursor import DeliveryMode

    await broker.create_queue(
        "default",
        "jobs",
        mode=DeliveryMode.KEY_ORDERED,
        partitions=partitions,
        backoff=Backoff(initial_ms=60_000, max_ms=60_000, jitter=0.0),
    )
    messages = [
        Message(subject="jobs", key=key, payload=f"{key}{i}".encode())
        for i in range(3)
        for key in ("a", "b")
    ]
    await broker.publish("default", messages)
    batch = await broker.fetch("default", "jobs", consumer_id="c", max_messages=10)
    assert sorted(d.message.payload for d in batch) == [b"a0", b"b0"]
    failing = next(d for d in batch if d.message.key == "a")
    flowing = next(d for d in batch if d.message.key == "b")
    await broker.nack("default", "jobs", [failing.receipt])
    await broker.ack("default", "jobs", [flowing.receipt])
    seen_b = []
    for _ in range(2):
        [delivery] = await broker.fetch("default", "jobs", consumer_id="c", max_messages=10)
        assert delivery.message.key == "b"
        seen_b.append(delivery.message.payload)
        await broker.ack("default", "jobs", [delivery.receipt])
    assert seen_b == [b"b1", b"b2"]


async def test_deleting_a_subscription_wakes_its_fetchers_with_not_found(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    loop = asyncio.get_running_loop()
    started = loop.time()
    fetch = asyncio.create_task(
        broker.fetch("default", "jobs", consumer_id="a", max_messages=1, wait_ms=10_000)
    )
    await asyncio.sleep(0.05)
    await broker.delete_subscription("default", "jobs")
    with pytest.raises(SubscriptionNotFound):
        await fetch
    assert loop.time() - started < 2


async def test_close_releases_long_polls_at_once(open_broker: BrokerFactory) -> None:
    broker = await open_broker()
    await broker.create_queue("default", "jobs")
    loop = asyncio.get_running_loop()
    started = loop.time()
    fetch = asyncio.create_task(
        broker.fetch("default", "jobs", consumer_id="a", max_messages=1, wait_ms=10_000)
    )
    await asyncio.sleep(0.05)
    await broker.close()
    assert await fetch == []
    assert loop.time() - started < 2


async def test_a_receipt_of_a_deleted_queue_never_acks_its_successor(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    await publish(broker, "jobs", 1)
    [old] = await broker.fetch("default", "jobs", consumer_id="a", max_messages=1)
    await broker.delete_queue("default", "jobs")
    await broker.create_queue("default", "jobs")
    await publish(broker, "jobs", 1)
    [new] = await broker.fetch("default", "jobs", consumer_id="b", max_messages=1)
    assert (new.message.partition, new.message.offset) == (
        old.message.partition,
        old.message.offset,
    )
    [outcome] = await broker.ack("default", "jobs", [old.receipt])
    assert outcome is not None
    assert broker.subscription_info("default", "jobs").in_flight == 1


async def test_sibling_subscriptions_issue_different_receipts(broker: Broker) -> None:
    await broker.create_topic("default", "news")
    for name in ("first", "second"):
        await broker.create_subscription("default", SubscriptionConfig(name=name, stream="news"))
    await broker.publish("default", [Message(subject="news", payload=b"x")])
    [first] = await broker.fetch("default", "first", consumer_id="c", max_messages=1)
    [second] = await broker.fetch("default", "second", consumer_id="c", max_messages=1)
    assert first.receipt != second.receipt


async def test_purge_never_skips_a_publish_still_waiting_for_its_fsync(broker: Broker) -> None:
    await broker.create_queue("default", "jobs")
    publishing = asyncio.create_task(
        broker.publish("default", [Message(subject="jobs", payload=b"late")])
    )
    await asyncio.sleep(0)  # the publish has written its record and waits for the fsync
    await broker.purge_subscription("default", "jobs")
    [result] = await publishing  # confirmed: it must be delivered
    [delivery] = await broker.fetch("default", "jobs", consumer_id="c", max_messages=1)
    assert delivery.message.offset == result.offset


async def test_a_dead_letter_that_cannot_be_stored_is_retried_not_stranded(broker: Broker) -> None:
    await broker.create_stream(
        "default",
        StreamConfig(name="dead", subjects=["dead"], max_messages=1, discard=DiscardPolicy.NEW),
    )
    await broker.create_stream("default", StreamConfig(name="work", subjects=["work"]))
    await broker.create_subscription(
        "default", SubscriptionConfig(name="worker", stream="work", dead_letter_stream="dead")
    )
    await broker.publish("default", [Message(subject="dead", payload=b"filler")])
    await broker.publish("default", [Message(subject="work", payload=b"poison")])
    [delivery] = await broker.fetch("default", "worker", consumer_id="c", max_messages=1)
    with pytest.raises(StorageFull):
        await broker.term("default", "worker", [delivery.receipt], reason="bad")

    await broker.purge_stream("default", "dead")  # space again: maintenance retries
    dead: list[Message] = []
    for _ in range(200):
        dead = await broker.read_stream("default", "dead", wait_ms=50)
        if dead:
            break
    assert [message.payload for message in dead] == [b"poison"]
    info = broker.subscription_info("default", "worker")
    assert (info.lag_messages, info.in_flight, info.dead_lettered) == (0, 0, 1)
