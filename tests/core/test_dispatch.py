"""Unit tests of the subscription dispatcher: credit, fairness, routing, ordered assignment."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaymq.core.cursor import (
    BackoffPolicy,
    CursorPolicy,
    DeliveryMode,
    PartitionCursor,
)
from relaymq.core.dispatch import SubscriptionDispatcher
from relaymq.core.message import Message
from relaymq.errors import InvalidArgument, InvalidReceipt, ReceiptNotFound, StaleReceipt

BACKOFF = BackoffPolicy(initial_ms=1_000, max_ms=1_000, jitter=0.0)


def make_dispatcher(
    mode: DeliveryMode = DeliveryMode.SHARED,
    partitions: int = 3,
    messages_per_partition: int = 10,
    consumer_timeout_ms: int = 10_000,
    **policy_fields,
) -> SubscriptionDispatcher:
    policy_fields.setdefault("ack_timeout_ms", 1_000)
    policy = CursorPolicy(mode=mode, backoff=BACKOFF, **policy_fields)
    rng = random.Random(0)
    cursors = {}
    for partition in range(partitions):
        cursor = PartitionCursor(partition, policy, 0, 5, rng)
        cursor.offer(
            [
                Message(subject="s", partition=partition, offset=offset)
                for offset in range(messages_per_partition)
            ]
        )
        cursors[partition] = cursor
    return SubscriptionDispatcher(policy, cursors, consumer_timeout_ms)


def partitions_of(deliveries) -> list[int]:
    return [delivery.message.partition for delivery in deliveries]


def test_credit_is_never_exceeded():
    dispatcher = make_dispatcher()
    dispatcher.register("c", 0, max_in_flight=4)
    assert len(dispatcher.take("c", 10, 0)) == 4
    assert dispatcher.take("c", 10, 0) == []
    assert dispatcher.in_flight_of("c") == 4


def test_credit_returns_with_acks_and_lease_expiry():
    dispatcher = make_dispatcher()
    dispatcher.register("c", 0, max_in_flight=2)
    first = dispatcher.take("c", 10, 0)
    dispatcher.ack(first[0].receipt, 0)
    assert len(dispatcher.take("c", 10, 0)) == 1
    dispatcher.expire(1_000)  # both leases time out
    assert dispatcher.in_flight_of("c") == 0
    assert len(dispatcher.take("c", 10, 1_000)) == 2


def test_take_spreads_over_partitions_and_rotates():
    dispatcher = make_dispatcher()
    assert sorted(partitions_of(dispatcher.take("c", 6, 0))) == [0, 0, 1, 1, 2, 2]
    first = partitions_of(dispatcher.take("c", 1, 0))
    second = partitions_of(dispatcher.take("c", 1, 0))
    assert first != second


def test_take_fills_from_other_partitions_when_one_is_empty():
    dispatcher = make_dispatcher(partitions=2, messages_per_partition=3)
    dispatcher.cursors[0].skip_to(3)
    assert partitions_of(dispatcher.take("c", 4, 0)) == [1, 1, 1]


def test_settle_routes_by_partition():
    dispatcher = make_dispatcher()
    deliveries = dispatcher.take("c", 3, 0)
    for delivery in deliveries:
        dispatcher.ack(delivery.receipt, 0)
    assert sorted(cursor.ack_floor for cursor in dispatcher.cursors.values()) == [1, 1, 1]
    assert dispatcher.stats().acked_total == 3
    with pytest.raises(ReceiptNotFound):
        dispatcher.ack("9.0.1", 0)
    with pytest.raises(InvalidReceipt):
        dispatcher.ack("nonsense", 0)
    with pytest.raises(InvalidReceipt):
        dispatcher.ack("0.zz.1", 0)  # a known partition prefix, garbage after it


def test_nack_extend_term_and_confirm_through_dispatcher():
    dispatcher = make_dispatcher(partitions=1)
    first, second, third = dispatcher.take("c", 3, 0)
    assert dispatcher.nack(first.receipt, 0, delay_ms=0) is None
    assert dispatcher.extend(second.receipt, 0, 5_000) == 5_000
    dead = dispatcher.term(third.receipt, 0, reason="bad")
    assert dispatcher.in_flight_of("c") == 1
    dispatcher.confirm_dead_letter(dead)
    assert dispatcher.checkpoints()[0].acked_ranges == ((2, 3),)


def test_unregister_releases_leases_now():
    dispatcher = make_dispatcher(partitions=1)
    held = dispatcher.take("gone", 2, 0)
    dispatcher.unregister("gone", 0)
    with pytest.raises(StaleReceipt):
        dispatcher.ack(held[0].receipt, 0)
    again = dispatcher.take("other", 2, 0)
    assert [d.delivery_count for d in again] == [2, 2]
    dispatcher.unregister("never-registered", 0)


def test_silent_consumer_is_dropped_and_its_leases_released():
    dispatcher = make_dispatcher(partitions=1, consumer_timeout_ms=500, ack_timeout_ms=10_000)
    dispatcher.register("quiet", 0)
    dispatcher.take("quiet", 1, 0)
    dispatcher.register("busy", 400)
    assert dispatcher.next_wakeup_ms() == 500
    dispatcher.expire(500)
    assert list(dispatcher.consumers()) == ["busy"]
    assert [d.delivery_count for d in dispatcher.take("busy", 1, 500)] == [2]


def test_register_is_idempotent_and_validates():
    dispatcher = make_dispatcher()
    dispatcher.register("c", 0, 3)
    dispatcher.register("c", 100, 3)
    assert dispatcher.consumers()["c"].last_seen_ms == 100
    with pytest.raises(InvalidArgument):
        dispatcher.register("c", 0, 0)


def test_ordered_assignment_is_balanced_and_exclusive():
    dispatcher = make_dispatcher(DeliveryMode.ORDERED, partitions=4)
    dispatcher.register("b", 0)
    dispatcher.register("a", 0)
    assert dispatcher.assignments() == {"a": [0, 2], "b": [1, 3]}
    assert set(partitions_of(dispatcher.take("a", 100, 0))) == {0, 2}
    assert set(partitions_of(dispatcher.take("b", 100, 0))) == {1, 3}


def test_ordered_rebalance_on_join_rewinds_moved_partitions():
    dispatcher = make_dispatcher(DeliveryMode.ORDERED, partitions=2)
    dispatcher.register("a", 0)
    held = dispatcher.take("a", 100, 0)
    assert set(partitions_of(held)) == {0, 1}
    dispatcher.register("b", 0)
    assert dispatcher.assignments() == {"a": [0], "b": [1]}
    moved = [d for d in held if d.message.partition == 1]
    kept = [d for d in held if d.message.partition == 0]
    with pytest.raises(StaleReceipt):
        dispatcher.ack(moved[0].receipt, 0)
    dispatcher.ack(kept[-1].receipt, 0)  # partition 0 stayed with a: its leases stand
    taken = dispatcher.take("b", 100, 0)
    assert [d.message.offset for d in taken] == list(range(10))
    assert {d.delivery_count for d in taken} == {2}


def test_ordered_rebalance_on_leave_and_timeout():
    dispatcher = make_dispatcher(DeliveryMode.ORDERED, partitions=3, consumer_timeout_ms=100)
    dispatcher.register("a", 0)
    dispatcher.register("b", 0)
    dispatcher.register("c", 0)
    dispatcher.unregister("b", 10)
    assert dispatcher.assignments() == {"a": [0, 2], "c": [1]}
    dispatcher.register("a", 50)
    dispatcher.expire(100)
    assert dispatcher.assignments() == {"a": [0, 1, 2]}
    dispatcher.expire(150)
    assert dispatcher.assignments() == {}
    assert dispatcher.take("late", 1, 150) != []  # a new consumer gets everything
    assert dispatcher.assignments() == {"late": [0, 1, 2]}


def test_ordered_credit_limits_per_consumer():
    dispatcher = make_dispatcher(DeliveryMode.ORDERED, partitions=2)
    dispatcher.register("a", 0, max_in_flight=3)
    assert len(dispatcher.take("a", 100, 0)) == 3
    assert dispatcher.take("a", 100, 0) == []


def test_shared_assignments_list_every_partition():
    dispatcher = make_dispatcher(partitions=2)
    dispatcher.register("a", 0)
    assert dispatcher.assignments() == {"a": [0, 1]}


def test_stats_and_checkpoints_aggregate():
    dispatcher = make_dispatcher(partitions=2, messages_per_partition=5)
    deliveries = dispatcher.take("c", 4, 0)
    dispatcher.ack(deliveries[0].receipt, 0)
    stats = dispatcher.stats()
    assert (stats.in_flight, stats.pending, stats.acked_total, stats.read_offset) == (3, 6, 1, 10)
    assert set(dispatcher.checkpoints()) == {0, 1}


def test_update_policy_reaches_every_cursor():
    dispatcher = make_dispatcher(partitions=2)
    dispatcher.update_policy(CursorPolicy(ack_timeout_ms=7))
    assert {d.deadline_ms for d in dispatcher.take("c", 4, 0)} == {7}


def test_mixed_modes_are_refused():
    policy = CursorPolicy(mode=DeliveryMode.ORDERED)
    cursor = PartitionCursor(0, CursorPolicy(), 0, 1, random.Random(0))
    with pytest.raises(InvalidArgument):
        SubscriptionDispatcher(policy, {0: cursor})


@given(st.one_of(st.text(alphabet="0123456789abcdef.x ", max_size=30), st.text(max_size=30)))
def test_fuzzed_receipts_are_refused_without_a_trace(receipt):
    dispatcher = make_dispatcher(partitions=18, messages_per_partition=2)
    dispatcher.take("c", 36, 0)
    before = (dispatcher.checkpoints(), dispatcher.stats(), dispatcher.next_wakeup_ms())
    with pytest.raises((InvalidReceipt, ReceiptNotFound, StaleReceipt)):
        dispatcher.ack(receipt, 0)
    assert (dispatcher.checkpoints(), dispatcher.stats(), dispatcher.next_wakeup_ms()) == before
