"""Unit tests of the partition cursor, its acked ranges, backoff and receipts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaymq.core.cursor import (
    BackoffPolicy,
    CursorCheckpoint,
    CursorPolicy,
    DeadLetter,
    DeliveryMode,
    PartitionCursor,
    parse_receipt,
)
from relaymq.core.message import Message
from relaymq.core.ranges import AckedRanges
from relaymq.errors import (
    InvalidArgument,
    InvalidReceipt,
    ReceiptNotFound,
    StaleReceipt,
    WrongDeliveryMode,
)

NO_JITTER = BackoffPolicy(initial_ms=1_000, max_ms=8_000, multiplier=2.0, jitter=0.0)


def make_cursor(
    mode: DeliveryMode = DeliveryMode.SHARED,
    *,
    partition: int = 0,
    start_offset: int = 0,
    nonce: int = 7,
    checkpoint: CursorCheckpoint | None = None,
    subject_filter=None,
    **policy,
) -> PartitionCursor:
    policy.setdefault("backoff", NO_JITTER)
    policy.setdefault("ack_timeout_ms", 1_000)
    return PartitionCursor(
        partition,
        CursorPolicy(mode=mode, **policy),
        start_offset,
        nonce,
        random.Random(0),
        subject_filter=subject_filter,
        checkpoint=checkpoint,
    )


def messages(count: int, start: int = 0, partition: int = 0, **fields) -> list[Message]:
    return [
        Message(subject="orders.created", partition=partition, offset=offset, **fields)
        for offset in range(start, start + count)
    ]


def offsets(deliveries) -> list[int]:
    return [delivery.message.offset for delivery in deliveries]


# -- acked ranges ---------------------------------------------------------------------------------


def test_ranges_in_order_adds_only_move_the_floor():
    done = AckedRanges()
    for offset in range(5):
        assert done.add(offset)
    assert done.floor == 5
    assert done.ranges() == ()


def test_ranges_merge_out_of_order_adds_into_the_floor():
    done = AckedRanges()
    for offset in (3, 5, 4, 1, 8):
        assert done.add(offset)
    assert done.ranges() == ((1, 2), (3, 6), (8, 9))
    assert not done.add(4)
    assert done.contains(4) and not done.contains(2) and not done.contains(0)
    done.add(0)
    assert done.floor == 2
    done.add(2)
    assert done.floor == 6
    assert done.ranges() == ((8, 9),)


def test_ranges_add_range_and_advance_floor():
    done = AckedRanges(10, [(12, 14), (20, 22)])
    done.add_range(13, 21)
    assert done.ranges() == ((12, 22),)
    done.add_range(30, 30)
    assert done.ranges() == ((12, 22),)
    done.advance_floor(12)
    assert done.floor == 22
    assert done.ranges() == ()
    done.add_range(5, 25)
    assert done.floor == 25


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=80))
def test_ranges_match_a_plain_set(added):
    done = AckedRanges()
    expected: set[int] = set()
    for offset in added:
        assert done.add(offset) == (offset not in expected)
        expected.add(offset)
    for offset in range(70):
        assert done.contains(offset) == (offset in expected)
    floor = 0
    while floor in expected:
        floor += 1
    assert done.floor == floor
    previous_end = floor
    for start, end in done.ranges():
        assert previous_end < start < end
        previous_end = end


# -- backoff --------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_and_caps():
    rng = random.Random(0)
    assert [NO_JITTER.delay_ms(count, rng) for count in range(1, 7)] == [
        1_000,
        2_000,
        4_000,
        8_000,
        8_000,
        8_000,
    ]
    assert NO_JITTER.delay_ms(10_000_000, rng) == 8_000


def test_backoff_jitter_stays_within_bounds():
    policy = BackoffPolicy(initial_ms=1_000, max_ms=60_000, multiplier=3.0, jitter=0.25)
    rng = random.Random(42)
    for count in range(1, 12):
        base = min(1_000 * 3.0 ** (count - 1), 60_000)
        samples = {policy.delay_ms(count, rng) for _ in range(50)}
        assert all(base * 0.75 - 1 <= sample <= base * 1.25 + 1 for sample in samples)
        assert len(samples) > 1


def test_backoff_rejects_nonsense():
    with pytest.raises(InvalidArgument):
        BackoffPolicy(initial_ms=10, max_ms=5)
    with pytest.raises(InvalidArgument):
        BackoffPolicy(jitter=1.5)


# -- receipts -------------------------------------------------------------------------------------


def test_receipt_round_trips_and_differs_per_delivery():
    cursor = make_cursor(partition=3)
    cursor.offer(messages(2, partition=3))
    first, second = cursor.take("c", 2, 0)
    assert parse_receipt(first.receipt)[:2] == (3, 0)
    assert parse_receipt(second.receipt)[:2] == (3, 1)
    assert first.receipt != second.receipt


@pytest.mark.parametrize(
    "garbage",
    ["", "1.2", "1.2.3.4", "0x1.2.3", " 1.2.3", "1_0.2.3", "A.2.3", "-1.2.3", "1..3", "1.2.3\n"],
)
def test_parse_receipt_rejects_garbage(garbage):
    with pytest.raises(InvalidReceipt):
        parse_receipt(garbage)


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none()))
def test_parse_receipt_fuzz_only_raises_invalid_receipt(value):
    try:
        partition, offset, lease_id = parse_receipt(value)
    except InvalidReceipt:
        return
    assert min(partition, offset, lease_id) >= 0


@given(st.text(alphabet="0123456789abcdef.", max_size=40))
def test_cursor_fuzzed_receipts_never_crash(receipt):
    cursor = make_cursor()
    cursor.offer(messages(3))
    cursor.take("c", 3, 0)
    before = cursor.checkpoint()
    with pytest.raises((InvalidReceipt, ReceiptNotFound, StaleReceipt)):
        cursor.ack(receipt, 0)
    assert cursor.checkpoint() == before


def test_lease_ids_differ_across_restarts():
    first = make_cursor(nonce=1)
    first.offer(messages(1))
    old = first.take("c", 1, 0)[0]
    restarted = make_cursor(nonce=2, checkpoint=first.checkpoint())
    restarted.offer(messages(1))
    new = restarted.take("c", 1, 0)[0]
    assert old.receipt != new.receipt
    with pytest.raises(StaleReceipt):
        restarted.ack(old.receipt, 0)
    restarted.ack(new.receipt, 0)


# -- the window -----------------------------------------------------------------------------------


def test_window_bounds_what_offer_accepts():
    cursor = make_cursor(window_messages=3)
    assert cursor.room() == 3
    assert cursor.offer(messages(5)) == 3
    assert cursor.read_offset == 3
    assert cursor.room() == 0
    for delivery in cursor.take("c", 1, 0):
        cursor.ack(delivery.receipt, 0)
    assert cursor.room() == 1
    assert cursor.offer(messages(2, start=3)) == 1


def test_subject_filter_skips_without_taking_room():
    cursor = make_cursor(window_messages=2, subject_filter=lambda subject: subject == "keep")
    batch = [
        Message(subject="keep" if offset in (1, 4) else "drop", partition=0, offset=offset)
        for offset in range(6)
    ]
    assert cursor.offer(batch) == 6
    assert cursor.ack_floor == 1
    assert offsets(cursor.take("c", 10, 0)) == [1, 4]
    assert cursor.stats().pending == 0


def test_offer_gap_counts_as_done_and_rewinds_are_refused():
    cursor = make_cursor()
    cursor.offer(messages(2, start=5))
    assert cursor.ack_floor == 5
    assert cursor.read_offset == 7
    with pytest.raises(InvalidArgument):
        cursor.offer(messages(1, start=6))


def test_skip_to_drops_what_is_below():
    cursor = make_cursor()
    cursor.offer(messages(4))
    leased = cursor.take("c", 1, 0)[0]
    cursor.skip_to(3)
    assert cursor.ack_floor == 3
    with pytest.raises(ReceiptNotFound):
        cursor.ack(leased.receipt, 0)
    assert offsets(cursor.take("c", 10, 0)) == [3]
    cursor.skip_to(10)
    assert cursor.read_offset == 10
    assert cursor.in_flight_of("c") == 0


# -- take: priority, delay, expiry ----------------------------------------------------------------


def test_take_prefers_priority_then_offset():
    cursor = make_cursor()
    batch = [
        Message(subject="s", partition=0, offset=offset, priority=priority)
        for offset, priority in enumerate([0, 5, 1, 5, 0])
    ]
    cursor.offer(batch)
    assert offsets(cursor.take("c", 2, 0)) == [1, 3]
    assert offsets(cursor.take("c", 10, 0)) == [2, 0, 4]


def test_take_sets_lease_deadline_and_count():
    cursor = make_cursor(ack_timeout_ms=500)
    cursor.offer(messages(1))
    delivery = cursor.take("c", 5, 100)[0]
    assert delivery.deadline_ms == 600
    assert delivery.delivery_count == 1
    assert cursor.in_flight_of("c") == 1
    assert cursor.take("c", 5, 100) == []
    assert cursor.next_wakeup_ms() == 600


def test_delayed_message_waits_for_its_time():
    cursor = make_cursor()
    cursor.offer(messages(1, deliver_at_ms=5_000) + messages(1, start=1))
    assert offsets(cursor.take("c", 10, 0)) == [1]
    assert cursor.next_wakeup_ms() == 1_000  # the lease of offset 1 comes first
    assert cursor.take("c", 10, 4_999) == []
    assert offsets(cursor.take("c", 10, 5_000)) == [0]


def test_expired_message_is_dead_lettered_never_delivered():
    cursor = make_cursor()
    cursor.offer(messages(1, expires_at_ms=100) + messages(1, start=1))
    assert cursor.next_wakeup_ms() == 100
    dead = cursor.expire(100)
    assert [(d.message.offset, d.reason) for d in dead] == [(0, "expired")]
    assert offsets(cursor.take("c", 10, 100)) == [1]
    cursor.confirm_dead_letter(0)
    assert cursor.ack_floor == 1


def test_expiry_detected_lazily_by_take():
    cursor = make_cursor()
    cursor.offer(messages(2, expires_at_ms=100))
    assert cursor.take("c", 10, 150) == []
    assert cursor.next_wakeup_ms() == 0
    assert sorted(d.message.offset for d in cursor.expire(150)) == [0, 1]
    assert cursor.expire(150) == []


def test_in_flight_message_may_be_acked_after_ttl_but_not_redelivered():
    cursor = make_cursor()
    cursor.offer(messages(2, expires_at_ms=100))
    first, second = cursor.take("c", 2, 0)
    assert cursor.expire(200) == []
    cursor.ack(first.receipt, 200)
    dead = cursor.nack(second.receipt, 200)
    assert dead is not None and dead.reason == "expired"


# -- ack, nack, extend, term ----------------------------------------------------------------------


def test_ack_is_done_and_second_ack_not_found():
    cursor = make_cursor()
    cursor.offer(messages(3))
    deliveries = cursor.take("c", 3, 0)
    cursor.ack(deliveries[2].receipt, 0)
    assert cursor.ack_floor == 0
    assert cursor.checkpoint().acked_ranges == ((2, 3),)
    cursor.ack(deliveries[0].receipt, 0)
    cursor.ack(deliveries[1].receipt, 0)
    assert cursor.ack_floor == 3
    for delivery in deliveries:
        with pytest.raises(ReceiptNotFound):
            cursor.ack(delivery.receipt, 0)
    assert cursor.stats().acked_total == 3


def test_receipt_of_another_partition_is_not_found():
    cursor = make_cursor(partition=1)
    cursor.offer(messages(1, partition=1))
    cursor.take("c", 1, 0)
    with pytest.raises(ReceiptNotFound):
        cursor.ack("2.0.1", 0)


def test_nack_schedules_redelivery_with_backoff():
    cursor = make_cursor()
    cursor.offer(messages(1))
    first = cursor.take("c", 1, 0)[0]
    assert cursor.nack(first.receipt, 10) is None
    assert cursor.next_wakeup_ms() == 1_010
    assert cursor.take("c", 1, 1_009) == []
    second = cursor.take("c", 1, 1_010)[0]
    assert second.delivery_count == 2
    cursor.nack(second.receipt, 2_000)
    assert cursor.take("c", 1, 3_999) == []
    assert cursor.take("c", 1, 4_000)[0].delivery_count == 3
    assert cursor.stats().redelivered_total == 2


def test_nack_with_explicit_delay():
    cursor = make_cursor()
    cursor.offer(messages(1))
    cursor.nack(cursor.take("c", 1, 0)[0].receipt, 0, delay_ms=0)
    again = cursor.take("c", 1, 0)[0]
    cursor.nack(again.receipt, 0, delay_ms=50)
    assert cursor.take("c", 1, 49) == []
    assert offsets(cursor.take("c", 1, 50)) == [0]
    with pytest.raises(InvalidArgument):
        cursor.nack("0.0.1", 0, delay_ms=-1)


def test_max_deliveries_dead_letters_with_last_error():
    cursor = make_cursor(max_deliveries=2)
    cursor.offer(messages(1))
    assert cursor.nack(cursor.take("c", 1, 0)[0].receipt, 0, delay_ms=0, error="boom") is None
    dead = cursor.nack(cursor.take("c", 1, 0)[0].receipt, 0, error="bang")
    assert dead == DeadLetter(messages(1)[0], 2, "max_deliveries", "bang")
    assert cursor.take("c", 1, 10**9) == []
    assert cursor.ack_floor == 0  # waits for the broker to publish the dead letter
    cursor.confirm_dead_letter(0)
    assert cursor.ack_floor == 1
    assert cursor.stats().dead_lettered_total == 1


def test_max_deliveries_by_ack_timeout():
    cursor = make_cursor(max_deliveries=2, ack_timeout_ms=100)
    cursor.offer(messages(1))
    first = cursor.take("c", 1, 0)[0]
    assert cursor.nack(first.receipt, 0, delay_ms=0, error="boom") is None
    cursor.take("c", 1, 0)
    dead = cursor.expire(100)
    assert [(d.reason, d.last_error, d.delivery_count) for d in dead] == [
        ("max_deliveries", "ack timeout", 2)
    ]


def test_last_error_is_remembered_across_nacks_without_error():
    cursor = make_cursor(max_deliveries=2)
    cursor.offer(messages(1))
    cursor.nack(cursor.take("c", 1, 0)[0].receipt, 0, delay_ms=0, error="first")
    dead = cursor.nack(cursor.take("c", 1, 0)[0].receipt, 0)
    assert dead is not None and dead.last_error == "first"


def test_lease_expiry_redelivers_and_old_receipt_is_stale():
    cursor = make_cursor(ack_timeout_ms=100)
    cursor.offer(messages(2))
    old, other = cursor.take("c", 2, 0)
    cursor.ack(other.receipt, 50)
    assert cursor.expire(99) == []
    assert cursor.expire(100) == []
    assert cursor.take("c", 1, 100) == []  # backoff: 1 s after the first failure
    new = cursor.take("d", 1, 1_100)[0]
    assert new.delivery_count == 2
    before = (cursor.checkpoint(), cursor.stats(), cursor.next_wakeup_ms())
    for settle in (
        lambda: cursor.ack(old.receipt, 1_100),
        lambda: cursor.nack(old.receipt, 1_100),
        lambda: cursor.extend(old.receipt, 1_100),
        lambda: cursor.term(old.receipt, 1_100),
    ):
        with pytest.raises(StaleReceipt):
            settle()
    assert (cursor.checkpoint(), cursor.stats(), cursor.next_wakeup_ms()) == before
    cursor.ack(new.receipt, 1_100)
    assert cursor.ack_floor == 2


def test_stale_receipt_while_waiting_for_redelivery():
    cursor = make_cursor()
    cursor.offer(messages(1))
    old = cursor.take("c", 1, 0)[0]
    cursor.nack(old.receipt, 0)
    with pytest.raises(StaleReceipt):
        cursor.ack(old.receipt, 0)


def test_extend_moves_the_deadline():
    cursor = make_cursor(ack_timeout_ms=100)
    cursor.offer(messages(1))
    delivery = cursor.take("c", 1, 0)[0]
    assert cursor.extend(delivery.receipt, 90, 500) == 590
    assert cursor.expire(100) == []
    assert cursor.next_wakeup_ms() == 590
    assert cursor.extend(delivery.receipt, 500) == 600
    assert cursor.expire(599) == []
    assert cursor.in_flight_of("c") == 1
    cursor.expire(600)
    assert cursor.in_flight_of("c") == 0
    with pytest.raises(InvalidArgument):
        cursor.extend(delivery.receipt, 600, 0)


def test_term_dead_letters_with_reason():
    cursor = make_cursor()
    cursor.offer(messages(2))
    first, _ = cursor.take("c", 2, 0)
    dead = cursor.term(first.receipt, 0, reason="bad payload")
    assert (dead.reason, dead.last_error, dead.delivery_count) == ("terminated", "bad payload", 1)
    with pytest.raises(ReceiptNotFound):
        cursor.ack(first.receipt, 0)
    with pytest.raises(InvalidArgument):
        cursor.confirm_dead_letter(1)  # in flight, not dead-letter pending
    cursor.confirm_dead_letter(0)
    cursor.confirm_dead_letter(0)  # idempotent
    assert cursor.ack_floor == 1


def test_release_redelivers_now_keeping_count():
    cursor = make_cursor()
    cursor.offer(messages(3))
    cursor.take("gone", 2, 0)
    stays = cursor.take("stays", 1, 0)[0]
    assert cursor.release("gone", 5) == 2
    again = cursor.take("other", 5, 5)
    assert offsets(again) == [0, 1]
    assert [d.delivery_count for d in again] == [2, 2]
    cursor.ack(stays.receipt, 5)
    assert cursor.in_flight_of("gone") == 0


# -- key_ordered ----------------------------------------------------------------------------------


def keyed(keys: str, start: int = 0, **fields) -> list[Message]:
    return [
        Message(subject="s", partition=0, offset=start + index, key=key, **fields)
        for index, key in enumerate(keys)
    ]


def test_key_ordered_one_in_flight_per_key_in_order():
    cursor = make_cursor(DeliveryMode.KEY_ORDERED)
    cursor.offer(keyed("AABBA"))
    first = cursor.take("c", 10, 0)
    assert offsets(first) == [0, 2]
    assert cursor.take("c", 10, 0) == []
    cursor.ack(first[0].receipt, 0)
    assert offsets(cursor.take("c", 10, 0)) == [1]


def test_key_ordered_failing_key_blocks_only_itself():
    cursor = make_cursor(DeliveryMode.KEY_ORDERED)
    cursor.offer(keyed("ABABAB"))
    a0, b0 = cursor.take("c", 10, 0)
    cursor.nack(a0.receipt, 0)  # A retries in 1 s
    cursor.ack(b0.receipt, 0)
    b1 = cursor.take("c", 10, 10)
    assert offsets(b1) == [3]
    cursor.ack(b1[0].receipt, 10)
    assert offsets(cursor.take("c", 10, 10)) == [5]
    assert offsets(cursor.take("c", 10, 1_000)) == [0]  # A's head again, not offset 2


def test_key_ordered_priority_only_chooses_among_heads():
    cursor = make_cursor(DeliveryMode.KEY_ORDERED)
    batch = [
        Message(subject="s", partition=0, offset=0, key="A", priority=0),
        Message(subject="s", partition=0, offset=1, key="A", priority=9),
        Message(subject="s", partition=0, offset=2, key="B", priority=5),
        Message(subject="s", partition=0, offset=3, key=None, priority=7),
        Message(subject="s", partition=0, offset=4, key=None, priority=1),
    ]
    cursor.offer(batch)
    assert offsets(cursor.take("c", 10, 0)) == [3, 2, 4, 0]


def test_key_ordered_delayed_head_blocks_its_key():
    cursor = make_cursor(DeliveryMode.KEY_ORDERED)
    cursor.offer(keyed("A", deliver_at_ms=500) + keyed("AB", start=1))
    assert offsets(cursor.take("c", 10, 0)) == [2]
    assert offsets(cursor.take("c", 10, 500)) == [0]


def test_key_ordered_dead_letter_unblocks_key():
    cursor = make_cursor(DeliveryMode.KEY_ORDERED, max_deliveries=1)
    cursor.offer(keyed("AA"))
    head = cursor.take("c", 10, 0)[0]
    dead = cursor.nack(head.receipt, 0)
    assert dead is not None
    assert offsets(cursor.take("c", 10, 0)) == [1]


def test_key_ordered_expired_middle_message_is_skipped():
    cursor = make_cursor(DeliveryMode.KEY_ORDERED)
    cursor.offer(keyed("A") + keyed("A", start=1, expires_at_ms=10) + keyed("A", start=2))
    head = cursor.take("c", 10, 0)[0]
    assert [d.message.offset for d in cursor.expire(10)] == [1]
    cursor.ack(head.receipt, 10)
    assert offsets(cursor.take("c", 10, 10)) == [2]


# -- ordered --------------------------------------------------------------------------------------


def test_ordered_delivers_by_offset_ignoring_priority():
    cursor = make_cursor(DeliveryMode.ORDERED)
    cursor.offer([Message(subject="s", partition=0, offset=o, priority=o) for o in range(4)])
    assert offsets(cursor.take("c", 2, 0)) == [0, 1]
    assert offsets(cursor.take("c", 5, 0)) == [2, 3]


def test_ordered_ack_is_cumulative():
    cursor = make_cursor(DeliveryMode.ORDERED)
    cursor.offer(messages(5))
    deliveries = cursor.take("c", 4, 0)
    cursor.ack(deliveries[2].receipt, 0)
    assert cursor.ack_floor == 3
    assert cursor.in_flight_of("c") == 1
    for delivery in deliveries[:3]:
        with pytest.raises(ReceiptNotFound):
            cursor.ack(delivery.receipt, 0)
    cursor.ack(deliveries[3].receipt, 0)
    assert cursor.ack_floor == 4
    assert cursor.stats().acked_total == 4


def test_ordered_nack_rewinds_to_floor_after_backoff():
    cursor = make_cursor(DeliveryMode.ORDERED)
    cursor.offer(messages(4))
    deliveries = cursor.take("c", 4, 0)
    cursor.ack(deliveries[0].receipt, 0)
    cursor.nack(deliveries[2].receipt, 0)
    for delivery in deliveries[1:]:
        with pytest.raises(StaleReceipt):
            cursor.ack(delivery.receipt, 0)
    assert cursor.take("c", 10, 999) == []
    assert cursor.next_wakeup_ms() == 1_000
    again = cursor.take("c", 10, 1_000)
    assert offsets(again) == [1, 2, 3]
    assert [d.delivery_count for d in again] == [2, 2, 2]


def test_ordered_delay_holds_back_later_offsets():
    cursor = make_cursor(DeliveryMode.ORDERED)
    cursor.offer(messages(1) + messages(1, start=1, deliver_at_ms=100) + messages(1, start=2))
    assert offsets(cursor.take("c", 10, 0)) == [0]
    assert offsets(cursor.take("c", 10, 100)) == [1, 2]


def test_ordered_lease_expiry_rewinds():
    cursor = make_cursor(DeliveryMode.ORDERED, ack_timeout_ms=100)
    cursor.offer(messages(3))
    old = cursor.take("c", 2, 0)
    assert cursor.expire(100) == []
    with pytest.raises(StaleReceipt):
        cursor.ack(old[1].receipt, 100)
    assert offsets(cursor.take("c", 10, 1_100)) == [0, 1, 2]


def test_ordered_max_deliveries_dead_letters_and_moves_on():
    cursor = make_cursor(DeliveryMode.ORDERED, max_deliveries=1)
    cursor.offer(messages(3))
    first, _ = cursor.take("c", 2, 0)
    dead = cursor.nack(first.receipt, 0, error="nope")
    assert dead is not None and dead.reason == "max_deliveries" and dead.last_error == "nope"
    redelivered = cursor.take("c", 10, 0)
    assert offsets(redelivered) == [1, 2]
    cursor.ack(redelivered[-1].receipt, 0)
    assert cursor.ack_floor == 0
    cursor.confirm_dead_letter(0)
    assert cursor.ack_floor == 3


def test_ordered_seek_replays():
    cursor = make_cursor(DeliveryMode.ORDERED)
    cursor.offer(messages(5))
    deliveries = cursor.take("c", 5, 0)
    cursor.ack(deliveries[-1].receipt, 0)
    in_flight = cursor.take("c", 1, 0)
    assert in_flight == []
    cursor.seek(2)
    assert (cursor.ack_floor, cursor.read_offset) == (2, 2)
    with pytest.raises(ReceiptNotFound):
        cursor.ack(deliveries[3].receipt, 0)
    cursor.offer(messages(3, start=2))
    replayed = cursor.take("c", 10, 0)
    assert offsets(replayed) == [2, 3, 4]
    with pytest.raises(StaleReceipt):
        cursor.ack(deliveries[3].receipt, 0)
    cursor.seek(10)
    assert cursor.ack_floor == 10 and cursor.take("c", 10, 0) == []


def test_seek_needs_ordered_mode():
    for mode in (DeliveryMode.SHARED, DeliveryMode.KEY_ORDERED):
        with pytest.raises(WrongDeliveryMode):
            make_cursor(mode).seek(0)


def test_ordered_rewind_redelivers_from_floor_now():
    cursor = make_cursor(DeliveryMode.ORDERED)
    cursor.offer(messages(3))
    old = cursor.take("a", 3, 0)
    cursor.ack(old[0].receipt, 0)
    cursor.rewind()
    with pytest.raises(StaleReceipt):
        cursor.ack(old[1].receipt, 0)
    assert offsets(cursor.take("b", 10, 0)) == [1, 2]


def test_ordered_release_rewinds():
    cursor = make_cursor(DeliveryMode.ORDERED)
    cursor.offer(messages(2))
    cursor.take("a", 2, 0)
    assert cursor.release("a", 0) == 2
    assert offsets(cursor.take("b", 10, 0)) == [0, 1]


# -- checkpoints ----------------------------------------------------------------------------------


def test_checkpoint_round_trips_through_bytes():
    checkpoint = CursorCheckpoint(5, ((7, 9), (12, 13)), ((5, 2), (6, 1)))
    assert CursorCheckpoint.decode(checkpoint.encode()) == checkpoint


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (20, CursorCheckpoint(5, ((7, 9), (12, 13)), ((5, 2), (6, 1)))),
        (13, CursorCheckpoint(5, ((7, 9), (12, 13)), ((5, 2), (6, 1)))),
        (8, CursorCheckpoint(5, ((7, 8),), ((5, 2), (6, 1)))),
        (6, CursorCheckpoint(5, (), ((5, 2),))),
        (3, CursorCheckpoint(3, (), ())),
    ],
)
def test_a_checkpoint_below_an_offset_says_nothing_at_or_above_it(end, expected):
    checkpoint = CursorCheckpoint(5, ((7, 9), (12, 13)), ((5, 2), (6, 1)))
    assert checkpoint.below(end) == expected


def test_a_checkpoint_already_below_an_offset_is_kept_as_it_is():
    checkpoint = CursorCheckpoint(5, ((7, 9),), ((5, 2),))
    assert checkpoint.below(9) is checkpoint


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\x94\x02\x00\x90\x90", b"\xc1"])
def test_checkpoint_decode_rejects_garbage(garbage):
    with pytest.raises(InvalidArgument):
        CursorCheckpoint.decode(garbage)


def test_restore_skips_acked_and_keeps_delivery_counts():
    cursor = make_cursor(max_deliveries=3)
    log = messages(4)
    cursor.offer(log)
    deliveries = {d.message.offset: d for d in cursor.take("c", 4, 0)}
    cursor.ack(deliveries[0].receipt, 0)
    cursor.ack(deliveries[2].receipt, 0)
    cursor.nack(deliveries[1].receipt, 0, delay_ms=0)
    cursor.take("c", 1, 0)  # offset 1 again: count 2
    checkpoint = CursorCheckpoint.decode(cursor.checkpoint().encode())
    assert checkpoint == CursorCheckpoint(1, ((2, 3),), ((1, 2), (3, 1)))

    restored = make_cursor(max_deliveries=3, nonce=99, checkpoint=checkpoint)
    assert restored.read_offset == 1
    assert restored.checkpoint() == checkpoint  # nothing offered yet: counts survive
    restored.offer(log[1:])
    again = restored.take("c", 10, 0)
    assert offsets(again) == [1, 3]
    assert [d.delivery_count for d in again] == [3, 2]
    dead = restored.nack(again[0].receipt, 0)
    assert dead is not None and dead.delivery_count == 3


def test_restore_dead_letters_a_message_that_exhausted_its_deliveries():
    restored = make_cursor(max_deliveries=2, checkpoint=CursorCheckpoint(0, (), ((0, 2),)))
    restored.offer(messages(2))
    assert offsets(restored.take("c", 10, 0)) == [1]
    assert [d.reason for d in restored.expire(0)] == ["max_deliveries"]


def test_stats_report_the_window():
    cursor = make_cursor()
    cursor.offer(
        [Message(subject="s", partition=0, offset=o, timestamp_ms=100 + o) for o in range(3)]
    )
    delivery = cursor.take("c", 1, 0)[0]
    stats = cursor.stats()
    assert (stats.pending, stats.in_flight, stats.read_offset) == (2, 1, 3)
    assert stats.oldest_unacked_timestamp_ms == 100
    cursor.ack(delivery.receipt, 0)
    assert cursor.stats().oldest_unacked_timestamp_ms == 101
    assert cursor.available() == 2


def test_update_policy_cannot_change_mode():
    cursor = make_cursor()
    cursor.update_policy(CursorPolicy(ack_timeout_ms=5))
    cursor.offer(messages(1))
    assert cursor.take("c", 1, 0)[0].deadline_ms == 5
    with pytest.raises(InvalidArgument):
        cursor.update_policy(CursorPolicy(mode=DeliveryMode.ORDERED))


def test_available_counts_only_what_could_go_out_now():
    cursor = make_cursor(DeliveryMode.KEY_ORDERED)
    cursor.offer(keyed("AAAAB") + keyed("C", start=5, deliver_at_ms=100))
    assert cursor.available() == 2  # the heads of A and B; C is delayed
    ordered = make_cursor(DeliveryMode.ORDERED)
    ordered.offer(messages(3))
    assert ordered.available() == 3
    ordered.nack(ordered.take("c", 1, 0)[0].receipt, 0)
    assert ordered.available() == 0  # paused for the backoff


def test_next_wakeup_is_none_when_nothing_is_pending():
    cursor = make_cursor()
    assert cursor.next_wakeup_ms() is None
    cursor.offer(messages(1))
    assert cursor.next_wakeup_ms() is None
    cursor.ack(cursor.take("c", 1, 0)[0].receipt, 0)
    assert cursor.next_wakeup_ms() is None


def test_plain_string_mode_is_understood():
    cursor = make_cursor("ordered")  # e.g. straight from a decoded config
    with pytest.raises(InvalidArgument):
        cursor.update_policy(CursorPolicy(mode=DeliveryMode.SHARED))
    cursor.seek(0)


def test_settled_leases_do_not_pile_up_in_the_deadline_heap():
    cursor = make_cursor(window_messages=10_000)
    cursor.offer(messages(5_000))
    for _ in range(50):
        for delivery in cursor.take("c", 100, 0):
            cursor.ack(delivery.receipt, 0)
    assert cursor.ack_floor == 5_000
    # White box: compaction (and dropping all once nothing is in flight) bounds memory.
    assert cursor._lease_deadlines.stored <= 1_025


# -- lease deadlines: FIFO plus heap ------------------------------------------------------------


def test_extend_to_the_same_deadline_expires_once():
    # Two due items for one lease once crashed expire() (KeyError ending the lease twice).
    cursor = make_cursor(ack_timeout_ms=100)
    cursor.offer(messages(1))
    delivery = cursor.take("c", 1, 0)[0]
    assert cursor.extend(delivery.receipt, 0, 100) == 100
    cursor.extend(delivery.receipt, 0, 300)
    cursor.extend(delivery.receipt, 0, 100)  # back again: three items, one lease
    assert cursor.expire(99) == []
    assert cursor.expire(100) == []
    assert cursor.in_flight_of("c") == 0
    assert cursor.stats().redelivered_total == 0
    assert cursor.next_wakeup_ms() == 1_100  # the backoff, not a stale lease item


def test_clock_stepping_back_never_expires_a_lease_early_nor_loses_one():
    cursor = make_cursor(ack_timeout_ms=100)
    cursor.offer(messages(3))
    first = cursor.take("c", 1, 1_000)[0]  # deadline 1_100
    second = cursor.take("c", 1, 500)[0]  # the clock stepped back: deadline 600
    assert cursor.next_wakeup_ms() == 600
    cursor.expire(599)
    assert cursor.in_flight_of("c") == 2
    cursor.expire(600)
    assert cursor.in_flight_of("c") == 1
    with pytest.raises(StaleReceipt):
        cursor.ack(second.receipt, 600)
    third = cursor.take("c", 1, 700)[0]  # deadline 800, again before 1_100
    assert cursor.next_wakeup_ms() == 800
    cursor.expire(800)
    assert cursor.next_wakeup_ms() == 1_100
    cursor.ack(first.receipt, 800)
    with pytest.raises(StaleReceipt):
        cursor.ack(third.receipt, 800)


def test_shorter_ack_timeout_expires_new_leases_first():
    cursor = make_cursor(ack_timeout_ms=1_000)
    cursor.offer(messages(2))
    old = cursor.take("c", 1, 0)[0]
    cursor.update_policy(CursorPolicy(ack_timeout_ms=10, backoff=NO_JITTER))
    new = cursor.take("c", 1, 0)[0]
    assert (old.deadline_ms, new.deadline_ms) == (1_000, 10)
    assert cursor.next_wakeup_ms() == 10
    cursor.expire(10)
    cursor.ack(old.receipt, 10)
    with pytest.raises(StaleReceipt):
        cursor.ack(new.receipt, 10)


def test_next_wakeup_skips_settled_leases_of_a_batch():
    cursor = make_cursor(ack_timeout_ms=100)
    cursor.offer(messages(4))
    early = cursor.take("c", 2, 0)
    late = cursor.take("c", 2, 50)
    assert cursor.next_wakeup_ms() == 100
    cursor.ack(early[0].receipt, 60)
    assert cursor.next_wakeup_ms() == 100
    cursor.ack(early[1].receipt, 60)
    assert cursor.next_wakeup_ms() == 150
    cursor.extend(late[1].receipt, 60, 500)
    cursor.ack(late[0].receipt, 60)
    assert cursor.next_wakeup_ms() == 560


# -- receipts as issued and as parsed -----------------------------------------------------------


def test_receipt_with_leading_zeros_names_the_same_lease():
    cursor = make_cursor(partition=2, nonce=0xABC)  # hex letters in every lease id
    cursor.offer(messages(3, partition=2))
    first, second, third = cursor.take("c", 3, 0)
    partition, offset, lease_id = parse_receipt(first.receipt)
    cursor.ack(f"0{partition:x}.00{offset:x}.0{lease_id:x}", 0)
    assert cursor.checkpoint().ack_floor == 1
    for garbage in (second.receipt.upper(), " " + second.receipt, second.receipt + "\n"):
        with pytest.raises(InvalidReceipt):
            cursor.ack(garbage, 0)
    with pytest.raises(InvalidReceipt):
        cursor.ack(second.receipt.encode(), 0)  # type: ignore[arg-type]
    partition, offset, lease_id = parse_receipt(third.receipt)
    with pytest.raises(StaleReceipt):
        cursor.ack(f"{partition:x}.{offset:x}.{lease_id + 1:x}", 0)
    cursor.ack(second.receipt, 0)
    cursor.ack(third.receipt, 0)
    assert cursor.ack_floor == 3


# -- ready order: FIFO of fresh messages plus a heap ------------------------------------------


def test_redelivered_message_goes_before_newer_ones_of_equal_priority():
    cursor = make_cursor()
    cursor.offer(messages(3))
    first = cursor.take("c", 1, 0)[0]
    cursor.nack(first.receipt, 0, delay_ms=0)
    cursor.offer(messages(1, start=3))
    assert offsets(cursor.take("c", 10, 0)) == [0, 1, 2, 3]


def test_priorities_out_of_arrival_order_still_go_first():
    cursor = make_cursor()
    priorities = [0, 0, 3, 1, 3, 0]
    cursor.offer(
        [Message(subject="s", partition=0, offset=o, priority=p) for o, p in enumerate(priorities)]
    )
    taken = cursor.take("c", 3, 0)
    assert offsets(taken) == [2, 4, 3]
    cursor.nack(taken[1].receipt, 0, delay_ms=0)  # offset 4, priority 3, back in the heap
    cursor.offer([Message(subject="s", partition=0, offset=6, priority=3)])
    assert offsets(cursor.take("c", 10, 0)) == [4, 6, 0, 1, 5]


def test_skip_to_drops_ready_messages_from_the_fifo():
    cursor = make_cursor()
    cursor.offer(messages(5))
    cursor.skip_to(3)
    assert offsets(cursor.take("c", 10, 0)) == [3, 4]
    assert cursor.available() == 0
