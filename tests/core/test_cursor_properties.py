"""Stateful property tests: a dispatcher over partition cursors, driven at random.

A model keeps the partition logs (plain lists), every receipt ever handed out and
the set of offsets settled (acked, or dead-lettered and confirmed). After every
step the cursors' done offsets must equal the model's; at the end everything is
drained with acks and every offset must be done exactly once.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relaymq.core.cursor import _DEAD as CURSOR_DEAD_PENDING  # white box, see below
from relaymq.core.cursor import (
    BackoffPolicy,
    CursorCheckpoint,
    CursorPolicy,
    DeadLetter,
    Delivery,
    DeliveryMode,
    PartitionCursor,
    parse_receipt,
)
from relaymq.core.dispatch import SubscriptionDispatcher
from relaymq.core.message import Message
from relaymq.errors import ReceiptNotFound, StaleReceipt

PARTITIONS = 2
CONSUMERS = {"c1": 3, "c2": 5, "c3": None}  # consumer id -> max in flight
KEYS = [None, "a", "b", "c"]
DEAD_PENDING = CURSOR_DEAD_PENDING
SKIPPED_SUBJECT = "skip"


def keep_subject(subject: str) -> bool:
    return subject != SKIPPED_SUBJECT


def done_offsets(checkpoint: CursorCheckpoint, end: int) -> set[int]:
    """Every offset below ``end`` the checkpoint says is done."""
    done = set(range(min(checkpoint.ack_floor, end)))
    for start, stop in checkpoint.acked_ranges:
        done.update(range(start, min(stop, end)))
    return done


class CursorMachine(RuleBasedStateMachine):
    """Drives one subscription; subclasses pick the delivery mode."""

    mode = DeliveryMode.SHARED

    def __init__(self) -> None:
        super().__init__()
        self.policy = CursorPolicy(
            mode=self.mode,
            ack_timeout_ms=100,
            max_deliveries=2,
            backoff=BackoffPolicy(initial_ms=10, max_ms=50, multiplier=2.0, jitter=0.5),
            window_messages=8,
        )
        self.rng = random.Random(0)
        self.now_ms = 0
        self.latest_ms = 0  # the latest time the clock showed
        self.nonce = 1
        self.logs: list[list[Message]] = [[] for _ in range(PARTITIONS)]
        self.done: list[set[int]] = [set() for _ in range(PARTITIONS)]
        self.skipped: list[set[int]] = [set() for _ in range(PARTITIONS)]
        self.sought_past: list[set[int]] = [set() for _ in range(PARTITIONS)]  # seek skipped
        self.receipts: list[str] = []
        self.latest: dict[tuple[int, int], str] = {}
        self.dispatcher = self._build({})

    def _build(self, checkpoints: dict[int, CursorCheckpoint]) -> SubscriptionDispatcher:
        cursors = {
            partition: PartitionCursor(
                partition,
                self.policy,
                0,
                self.nonce,
                self.rng,
                subject_filter=keep_subject,
                checkpoint=checkpoints.get(partition),
            )
            for partition in range(PARTITIONS)
        }
        return SubscriptionDispatcher(self.policy, cursors, consumer_timeout_ms=1_000)

    # -- model helpers ---------------------------------------------------------------------

    def _snapshot(self) -> tuple:
        cursors = self.dispatcher.cursors.values()
        return (
            [cursor.checkpoint() for cursor in cursors],
            [cursor.stats() for cursor in cursors],
            [cursor.read_offset for cursor in cursors],
            {c: self.dispatcher.in_flight_of(c) for c in CONSUMERS},
            self.dispatcher.next_wakeup_ms(),
        )

    def _settle_done(self, partition: int, offset: int) -> None:
        assert offset not in self.done[partition], f"offset {partition}/{offset} settled twice"
        self.done[partition].add(offset)

    def _confirm(self, dead_letters: list[DeadLetter]) -> None:
        for dead_letter in dead_letters:
            message = dead_letter.message
            assert dead_letter.reason in ("max_deliveries", "terminated", "expired")
            if dead_letter.reason == "max_deliveries":
                assert dead_letter.delivery_count >= self.policy.max_deliveries
            self._settle_done(message.partition, message.offset)
            self.dispatcher.confirm_dead_letter(dead_letter)

    def _pick(self, pick: int, recent: bool) -> str:
        if recent:
            return self.receipts[-1 - pick % min(len(self.receipts), 6)]
        return self.receipts[pick % len(self.receipts)]

    def _settle(self, receipt: str, apply) -> object:
        """Apply a settle call; check fencing; return its result (None when refused)."""
        partition, offset, _ = parse_receipt(receipt)
        current = self.latest.get((partition, offset)) == receipt
        is_done = offset in self.done[partition]
        before = self._snapshot()
        try:
            result = apply(receipt)
        except ReceiptNotFound:
            assert self._snapshot() == before
            return None
        except StaleReceipt:
            assert not is_done, "a settled offset must answer ReceiptNotFound"
            assert self._snapshot() == before
            return None
        assert current and not is_done, "a stale or settled receipt was applied"
        return result or True

    def _in_flight_offsets(self, partition: int) -> list[int]:
        # White box: the offsets the cursor currently has leased out (keyed by receipt).
        in_flight = self.dispatcher.cursors[partition]._in_flight
        return sorted(entry.offset for entry in in_flight.values())

    def _dead_pending_offsets(self, partition: int) -> set[int]:
        # White box: dead letters found lazily by take() wait for the next expire().
        entries = self.dispatcher.cursors[partition]._entries
        return {offset for offset, entry in entries.items() if entry.state == DEAD_PENDING}

    # -- rules --------------------------------------------------------------------------------

    @rule(
        partition=st.integers(0, PARTITIONS - 1),
        count=st.integers(1, 4),
        key=st.sampled_from(KEYS),
        priority=st.integers(0, 2),
        delay_ms=st.one_of(st.none(), st.integers(0, 300)),
        ttl_ms=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 600)),
        skipped=st.booleans(),
    )
    def publish(self, partition, count, key, priority, delay_ms, ttl_ms, skipped):
        log = self.logs[partition]
        for _ in range(count):
            log.append(
                Message(
                    subject=SKIPPED_SUBJECT if skipped and count == 1 else "keep",
                    key=key,
                    priority=priority,
                    deliver_at_ms=None if delay_ms is None else self.now_ms + delay_ms,
                    expires_at_ms=None if ttl_ms is None else self.now_ms + ttl_ms,
                    partition=partition,
                    offset=len(log),
                    timestamp_ms=self.now_ms,
                )
            )

    @rule(partition=st.integers(0, PARTITIONS - 1), count=st.integers(1, 10))
    def offer(self, partition, count):
        cursor = self.dispatcher.cursors[partition]
        start = cursor.read_offset
        batch = self.logs[partition][start : start + count]
        consumed = cursor.offer(batch)
        assert cursor.read_offset == start + consumed
        for message in batch[:consumed]:
            if message.subject == SKIPPED_SUBJECT:
                self.skipped[partition].add(message.offset)

    @rule(consumer=st.sampled_from(sorted(CONSUMERS)), count=st.integers(1, 6))
    def take(self, consumer, count):
        self.dispatcher.register(consumer, self.now_ms, CONSUMERS[consumer])
        deliveries = self.dispatcher.take(consumer, count, self.now_ms)
        assert len(deliveries) <= count
        for delivery in deliveries:
            self._check_delivery(delivery)

    def _check_delivery(self, delivery: Delivery) -> None:
        message = delivery.message
        partition, offset = message.partition, message.offset
        assert offset not in self.done[partition], "a settled message was delivered"
        assert message.subject != SKIPPED_SUBJECT
        assert message.expires_at_ms is None or message.expires_at_ms > self.now_ms
        # Once due, a message stays due even if the clock then steps back.
        assert message.deliver_at_ms is None or message.deliver_at_ms <= self.latest_ms
        assert delivery.deadline_ms == self.now_ms + self.policy.ack_timeout_ms
        if self.mode is DeliveryMode.KEY_ORDERED and message.key is not None:
            finished = self.done[partition] | self._dead_pending_offsets(partition)
            for earlier in self.logs[partition][:offset]:
                if earlier.key == message.key and earlier.subject != SKIPPED_SUBJECT:
                    assert earlier.offset in finished, "key order broken"
        previous = self.latest.get((partition, offset))
        if previous is not None:  # a redelivery: the old lease must be fenced off
            before = self._snapshot()
            with pytest.raises(StaleReceipt):
                self.dispatcher.ack(previous, self.now_ms)
            assert self._snapshot() == before
        self.latest[(partition, offset)] = delivery.receipt
        self.receipts.append(delivery.receipt)

    @precondition(lambda self: self.receipts)
    @rule(pick=st.integers(0, 10**6), recent=st.booleans())
    def ack(self, pick, recent):
        receipt = self._pick(pick, recent)
        partition, offset, _ = parse_receipt(receipt)
        if self.mode is DeliveryMode.ORDERED:
            completes = [o for o in self._in_flight_offsets(partition) if o <= offset]
        else:
            completes = [offset]
        if self._settle(receipt, lambda r: self.dispatcher.ack(r, self.now_ms)):
            for done in completes:
                self._settle_done(partition, done)

    @precondition(lambda self: self.receipts)
    @rule(
        pick=st.integers(0, 10**6),
        recent=st.booleans(),
        delay_ms=st.one_of(st.none(), st.integers(0, 100)),
    )
    def nack(self, pick, recent, delay_ms):
        receipt = self._pick(pick, recent)
        outcome = self._settle(
            receipt, lambda r: self.dispatcher.nack(r, self.now_ms, delay_ms, error="failed")
        )
        if isinstance(outcome, DeadLetter):
            assert outcome.last_error == "failed"
            self._confirm([outcome])

    @precondition(lambda self: self.receipts)
    @rule(pick=st.integers(0, 10**6), recent=st.booleans(), extend_ms=st.integers(1, 300))
    def extend(self, pick, recent, extend_ms):
        receipt = self._pick(pick, recent)
        deadline = self._settle(
            receipt, lambda r: self.dispatcher.extend(r, self.now_ms, extend_ms)
        )
        assert deadline is None or deadline == self.now_ms + extend_ms

    @precondition(lambda self: self.receipts)
    @rule(pick=st.integers(0, 10**6), recent=st.booleans())
    def term(self, pick, recent):
        receipt = self._pick(pick, recent)
        outcome = self._settle(receipt, lambda r: self.dispatcher.term(r, self.now_ms, "bad"))
        if outcome is not None:
            assert isinstance(outcome, DeadLetter) and outcome.reason == "terminated"
            self._confirm([outcome])

    @rule(elapsed_ms=st.integers(0, 400))
    def tick(self, elapsed_ms):
        self.now_ms += elapsed_ms
        self.latest_ms = max(self.latest_ms, self.now_ms)
        self._expire_and_check_leases()

    @rule(step_ms=st.integers(1, 300))
    def clock_steps_back(self, step_ms):
        """The wall clock jumped back: nothing may expire early, nothing may be lost."""
        self.now_ms = max(0, self.now_ms - step_ms)
        self._expire_and_check_leases()

    @rule(ack_timeout_ms=st.sampled_from([30, 100, 250]))
    def reconfigure(self, ack_timeout_ms):
        """A new ack timeout: later leases may run out before earlier ones."""
        self.policy = dataclasses.replace(self.policy, ack_timeout_ms=ack_timeout_ms)
        self.dispatcher.update_policy(self.policy)

    def _leases(self) -> dict[str, tuple[int, str]]:
        # White box: receipt -> (deadline, consumer) of every lease in flight.
        return {
            receipt: (entry.deadline_ms, entry.consumer.consumer_id)
            for cursor in self.dispatcher.cursors.values()
            for receipt, entry in cursor._in_flight.items()
        }

    def _expire_and_check_leases(self):
        silent = {
            consumer_id
            for consumer_id, consumer in self.dispatcher.consumers().items()
            if self.now_ms - consumer.last_seen_ms >= self.dispatcher.consumer_timeout_ms
        }
        before = self._leases()
        self._confirm(self.dispatcher.expire(self.now_ms))
        after = self._leases()
        # Ordered mode rewinds every lease of a partition when one of them runs out.
        if self.mode is not DeliveryMode.ORDERED:
            for receipt, (deadline_ms, consumer_id) in before.items():
                if receipt not in after and consumer_id not in silent:
                    assert deadline_ms <= self.now_ms, "a lease expired early"
        for deadline_ms, _ in after.values():
            assert deadline_ms > self.now_ms, "a lease past its deadline was not expired"

    @rule(consumer=st.sampled_from(sorted(CONSUMERS)))
    def leave(self, consumer):
        self.dispatcher.unregister(consumer, self.now_ms)

    @rule()
    def restart(self):
        checkpoints = {
            partition: CursorCheckpoint.decode(checkpoint.encode())
            for partition, checkpoint in self.dispatcher.checkpoints().items()
        }
        self.nonce += 1
        self.dispatcher = self._build(checkpoints)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def cursors_agree_with_the_model(self):
        for partition, cursor in self.dispatcher.cursors.items():
            end = len(self.logs[partition])
            expected = self.done[partition] | self.skipped[partition] | self.sought_past[partition]
            assert done_offsets(cursor.checkpoint(), end) == expected
            assert cursor.read_offset <= end

    @invariant()
    def credit_is_never_exceeded(self):
        for consumer, max_in_flight in CONSUMERS.items():
            if max_in_flight is not None:
                assert self.dispatcher.in_flight_of(consumer) <= max_in_flight

    @invariant()
    def mode_specific_order(self):
        for partition, cursor in self.dispatcher.cursors.items():
            in_flight = self._in_flight_offsets(partition)
            if self.mode is DeliveryMode.KEY_ORDERED:
                keys = [self.logs[partition][o].key for o in in_flight]
                keyed = [key for key in keys if key is not None]
                assert len(keyed) == len(set(keyed)), "two in flight for one key"
            if self.mode is DeliveryMode.ORDERED and in_flight:
                # In flight is exactly the not-done kept offsets from the floor up.
                settled = (
                    self.done[partition]
                    | self.skipped[partition]
                    | self.sought_past[partition]
                    | self._dead_pending_offsets(partition)
                )
                expected = [
                    o for o in range(cursor.ack_floor, in_flight[-1] + 1) if o not in settled
                ]
                assert in_flight == expected, "ordered delivery skipped an offset"

    # -- the end: nothing may be lost ---------------------------------------------------------

    def teardown(self):
        for consumer in CONSUMERS:
            self.dispatcher.unregister(consumer, self.now_ms)
        for _ in range(200):
            if all(
                cursor.ack_floor == len(self.logs[partition])
                for partition, cursor in self.dispatcher.cursors.items()
            ):
                break
            self.now_ms += 1_000
            self.latest_ms = max(self.latest_ms, self.now_ms)
            self._confirm(self.dispatcher.expire(self.now_ms))
            for partition in range(PARTITIONS):
                self.offer(partition, 1_000)
            self.dispatcher.register("drain", self.now_ms, None)
            for delivery in self.dispatcher.take("drain", 1_000, self.now_ms):
                self._check_delivery(delivery)
                self.ack(len(self.receipts) - 1 - self.receipts.index(delivery.receipt), True)
        for partition in range(PARTITIONS):
            everything = set(range(len(self.logs[partition])))
            done, skipped = self.done[partition], self.skipped[partition]
            assert done | skipped | self.sought_past[partition] == everything
            assert not done & skipped


class SharedMachine(CursorMachine):
    mode = DeliveryMode.SHARED


class KeyOrderedMachine(CursorMachine):
    mode = DeliveryMode.KEY_ORDERED


class OrderedMachine(CursorMachine):
    mode = DeliveryMode.ORDERED

    @rule(partition=st.integers(0, PARTITIONS - 1), position=st.integers(0, 10**6))
    def seek(self, partition, position):
        """Replay (or skip ahead): offsets from the target on are no longer settled."""
        offset = position % (len(self.logs[partition]) + 1)
        self.dispatcher.cursors[partition].seek(offset)
        for settled in (self.done, self.skipped, self.sought_past):
            settled[partition] = {o for o in settled[partition] if o < offset}
        passed = set(range(offset)) - self.done[partition] - self.skipped[partition]
        self.sought_past[partition] |= passed


MACHINE_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestShared = SharedMachine.TestCase
TestShared.settings = MACHINE_SETTINGS
TestKeyOrdered = KeyOrderedMachine.TestCase
TestKeyOrdered.settings = MACHINE_SETTINGS
TestOrdered = OrderedMachine.TestCase
TestOrdered.settings = MACHINE_SETTINGS
