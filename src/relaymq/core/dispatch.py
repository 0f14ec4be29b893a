"""Dispatch of one subscription: its partition cursors, its consumers, and their credit.

:class:`SubscriptionDispatcher` decides which consumer takes from which
partition. A consumer never holds more than its ``max_in_flight`` leases across
all partitions; batches are spread over partitions starting from a rotating
one so no partition starves. In ``ordered`` mode every partition belongs to
exactly one live consumer (sorted consumers dealt round-robin over sorted
partitions); a partition that changes owner is rewound so the new owner
resumes from the committed floor. Pure: time comes in as ``now_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from relaymq.core.cursor import (
    CursorCheckpoint,
    CursorPolicy,
    CursorStats,
    DeadLetter,
    Delivery,
    DeliveryMode,
    PartitionCursor,
    parse_receipt,
)
from relaymq.errors import InvalidArgument, ReceiptNotFound


@dataclass(slots=True)
class ConsumerState:
    """What the dispatcher knows of one consumer."""

    consumer_id: str
    last_seen_ms: int
    max_in_flight: int | None  # None = no credit limit


class SubscriptionDispatcher:
    """The cursors of every partition of one subscription, and the consumers taking from them."""

    def __init__(
        self,
        policy: CursorPolicy,
        cursors: Mapping[int, PartitionCursor],
        consumer_timeout_ms: int = 60_000,
    ) -> None:
        if consumer_timeout_ms <= 0:
            raise InvalidArgument("consumer_timeout_ms must be positive")
        if any(cursor.mode != policy.mode for cursor in cursors.values()):
            raise InvalidArgument("every cursor must use the subscription's delivery mode")
        self.policy = policy
        self.cursors: dict[int, PartitionCursor] = dict(cursors)
        self.consumer_timeout_ms = consumer_timeout_ms
        self._partitions = sorted(self.cursors)
        self._cursor_list = list(self.cursors.values())  # iterated on hot paths
        self._by_receipt_prefix = {f"{p:x}": cursor for p, cursor in self.cursors.items()}
        self._consumers: dict[str, ConsumerState] = {}
        self._owners: dict[int, str] = {}  # ordered mode: partition -> consumer
        self._rotation = 0
        # Fixed for the dispatcher's life (update_policy cannot change the mode).
        self._ordered = policy.mode == DeliveryMode.ORDERED

    def update_policy(self, policy: CursorPolicy) -> None:
        """Apply a new policy to every cursor (the mode cannot change)."""
        for cursor in self.cursors.values():
            cursor.update_policy(policy)
        self.policy = policy

    # -- consumers ---------------------------------------------------------------------------

    def register(self, consumer_id: str, now_ms: int, max_in_flight: int | None = None) -> None:
        """Add a consumer or refresh it (last seen, credit). Idempotent."""
        if max_in_flight is not None and max_in_flight <= 0:
            raise InvalidArgument("max_in_flight must be positive", max_in_flight=max_in_flight)
        consumer = self._consumers.get(consumer_id)
        if consumer is not None:
            consumer.last_seen_ms = now_ms
            consumer.max_in_flight = max_in_flight
            return
        self._consumers[consumer_id] = ConsumerState(consumer_id, now_ms, max_in_flight)
        self._rebalance()

    def unregister(self, consumer_id: str, now_ms: int) -> None:
        """The consumer left: its leases are released for redelivery now."""
        if self._consumers.pop(consumer_id, None) is None:
            return
        for cursor in self.cursors.values():
            cursor.release(consumer_id, now_ms)
        self._rebalance()

    def consumers(self) -> dict[str, ConsumerState]:
        """The live consumers by id (a copy)."""
        return dict(self._consumers)

    def in_flight_of(self, consumer_id: str) -> int:
        """How many leases ``consumer_id`` holds over all partitions."""
        held = 0
        for cursor in self._cursor_list:  # a loop: a generator costs more at a few partitions
            held += cursor.in_flight_of(consumer_id)
        return held

    def assignments(self) -> dict[str, list[int]]:
        """Which partitions each consumer takes from (all of them, unless ordered)."""
        if not self._ordered:
            return {consumer_id: list(self._partitions) for consumer_id in sorted(self._consumers)}
        owned: dict[str, list[int]] = {consumer_id: [] for consumer_id in sorted(self._consumers)}
        for partition in self._partitions:
            owner = self._owners.get(partition)
            if owner is not None:
                owned[owner].append(partition)
        return owned

    def _rebalance(self) -> None:
        """Ordered mode: deal partitions to consumers; rewind the ones changing owner."""
        if not self._ordered:
            return
        consumer_ids = sorted(self._consumers)
        owners: dict[int, str] = {}
        if consumer_ids:
            for index, partition in enumerate(self._partitions):
                owners[partition] = consumer_ids[index % len(consumer_ids)]
        for partition in self._partitions:
            if owners.get(partition) != self._owners.get(partition):
                self.cursors[partition].rewind()
        self._owners = owners

    # -- delivering ------------------------------------------------------------------------------

    def take(self, consumer_id: str, max_count: int, now_ms: int) -> list[Delivery]:
        """Lease up to ``max_count`` messages to ``consumer_id``, within its credit.

        An unknown consumer is registered (without a credit limit). Each call starts
        at the next partition, and first gives every partition a fair share of the
        batch before filling the rest from whichever partitions still have messages.
        """
        consumer = self._consumers.get(consumer_id)
        if consumer is None:
            self.register(consumer_id, now_ms)
            consumer = self._consumers[consumer_id]
        consumer.last_seen_ms = now_ms
        budget = max_count
        if consumer.max_in_flight is not None:
            budget = min(budget, consumer.max_in_flight - self.in_flight_of(consumer_id))
        partitions = self._partitions_of(consumer_id)
        if budget <= 0 or not partitions:
            return []
        start = self._rotation % len(partitions)
        self._rotation += 1
        if len(partitions) == 1:  # nothing to spread
            return self.cursors[partitions[0]].take(consumer_id, budget, now_ms)
        partitions = partitions[start:] + partitions[:start]
        fair_share = -(-budget // len(partitions))
        deliveries = self._take_round(consumer_id, partitions, fair_share, budget, now_ms)
        if len(deliveries) < budget:
            deliveries += self._take_round(
                consumer_id, partitions, budget, budget - len(deliveries), now_ms
            )
        return deliveries

    def _partitions_of(self, consumer_id: str) -> list[int]:
        if not self._ordered:
            return self._partitions
        owners = self._owners
        return [p for p in self._partitions if owners.get(p) == consumer_id]

    def _take_round(
        self, consumer_id: str, partitions: list[int], per_partition: int, budget: int, now_ms: int
    ) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for partition in partitions:
            wanted = min(per_partition, budget - len(deliveries))
            if wanted <= 0:
                break
            deliveries += self.cursors[partition].take(consumer_id, wanted, now_ms)
        return deliveries

    # -- settling ------------------------------------------------------------------------------

    def _cursor_for(self, receipt: str) -> PartitionCursor:
        # Hot path: route on the receipt's hex prefix with one dict lookup; the cursor
        # validates the whole receipt. Only a miss pays for a full parse. (A receipt
        # without a dot slices to junk here, which the cursor then rejects.)
        if type(receipt) is str:
            cursor = self._by_receipt_prefix.get(receipt[: receipt.find(".")])
            if cursor is not None:
                return cursor
        cursor = self.cursors.get(parse_receipt(receipt)[0])
        if cursor is None:
            raise ReceiptNotFound("the receipt names no partition of this subscription")
        return cursor

    def ack(self, receipt: str, now_ms: int) -> None:
        """Ack one delivery (cumulatively in ordered mode)."""
        self._cursor_for(receipt).ack(receipt, now_ms)

    def nack(
        self, receipt: str, now_ms: int, delay_ms: int | None = None, error: str | None = None
    ) -> DeadLetter | None:
        """Fail one delivery: redelivery after a delay/backoff, or a dead letter."""
        return self._cursor_for(receipt).nack(receipt, now_ms, delay_ms, error)

    def extend(self, receipt: str, now_ms: int, extend_ms: int | None = None) -> int:
        """Extend one lease; returns the new deadline."""
        return self._cursor_for(receipt).extend(receipt, now_ms, extend_ms)

    def term(self, receipt: str, now_ms: int, reason: str | None = None) -> DeadLetter:
        """Dead-letter one delivery now."""
        return self._cursor_for(receipt).term(receipt, now_ms, reason)

    def retry_dead_letters(self, dead_letters: list[DeadLetter]) -> None:
        """Dead letters the broker failed to publish come back from the next :meth:`expire`."""
        for dead_letter in dead_letters:
            cursor = self.cursors.get(dead_letter.message.partition)
            if cursor is not None:
                cursor.retry_dead_letters([dead_letter])

    def confirm_dead_letter(self, dead_letter: DeadLetter) -> None:
        """The broker durably published ``dead_letter``: its message is done."""
        cursor = self.cursors.get(dead_letter.message.partition)
        if cursor is not None:
            cursor.confirm_dead_letter(dead_letter.message.offset)

    # -- time passing ------------------------------------------------------------------------------

    def expire(self, now_ms: int) -> list[DeadLetter]:
        """Drop consumers silent for ``consumer_timeout_ms`` (their leases are released,
        partitions reassigned), then expire every cursor; return the new dead letters."""
        timeout_ms = self.consumer_timeout_ms
        silent = [
            consumer_id
            for consumer_id, consumer in self._consumers.items()
            if now_ms - consumer.last_seen_ms >= timeout_ms
        ]
        for consumer_id in silent:
            self.unregister(consumer_id, now_ms)
        dead_letters: list[DeadLetter] = []
        for cursor in self._cursor_list:
            dead_letters += cursor.expire(now_ms)
        return dead_letters

    def next_wakeup_ms(self) -> int | None:
        """The earliest time a cursor or a consumer timeout needs :meth:`expire`."""
        # Called on every fetch: plain loops, no lists built.
        wakeup_ms = None
        for consumer in self._consumers.values():
            if wakeup_ms is None or consumer.last_seen_ms < wakeup_ms:
                wakeup_ms = consumer.last_seen_ms
        if wakeup_ms is not None:
            wakeup_ms += self.consumer_timeout_ms
        for cursor in self._cursor_list:
            cursor_wakeup_ms = cursor.next_wakeup_ms()
            if cursor_wakeup_ms is not None and (wakeup_ms is None or cursor_wakeup_ms < wakeup_ms):
                wakeup_ms = cursor_wakeup_ms
        return wakeup_ms

    # -- durability and information ---------------------------------------------------------

    def checkpoints(self) -> dict[int, CursorCheckpoint]:
        """The checkpoint of every partition cursor."""
        return {partition: cursor.checkpoint() for partition, cursor in self.cursors.items()}

    def stats(self) -> CursorStats:
        """Every cursor's stats summed (floors and read offsets too: messages past them);
        the oldest unacked timestamp is the minimum over partitions."""
        parts = [cursor.stats() for cursor in self.cursors.values()]
        oldest = [s.oldest_unacked_timestamp_ms for s in parts]
        known = [time_ms for time_ms in oldest if time_ms is not None]
        return CursorStats(
            ack_floor=sum(s.ack_floor for s in parts),
            read_offset=sum(s.read_offset for s in parts),
            pending=sum(s.pending for s in parts),
            in_flight=sum(s.in_flight for s in parts),
            acked_total=sum(s.acked_total for s in parts),
            redelivered_total=sum(s.redelivered_total for s in parts),
            dead_lettered_total=sum(s.dead_lettered_total for s in parts),
            oldest_unacked_timestamp_ms=min(known) if known else None,
        )
