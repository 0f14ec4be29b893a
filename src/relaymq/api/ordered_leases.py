"""The leases an ``ordered`` subscription's subscriber holds, by partition.

Owns :class:`OrderedLeases`. In ordered mode the broker ends more leases than a
frame names: an ack is cumulative (it ends every earlier lease of its
partition), and a nack or an expired lease rewinds the partition (every lease
of it ends). The subscriber's credit must come back for all of them, without a
scan of every lease in flight (up to ``ws_max_credit``) and without parsing
receipts: each partition's receipts are kept in delivery order, which is offset
order until a rewind, and a rewind drops them.
"""

from __future__ import annotations

import collections
from collections.abc import Container, Iterable

from relaymq.core.cursor import Delivery


class OrderedLeases:
    """Each delivered receipt's partition, and each partition's receipts, oldest first."""

    def __init__(self) -> None:
        self._partition_of: dict[str, int] = {}
        self._by_partition: dict[int, collections.deque[str]] = {}

    def delivered(self, deliveries: Iterable[Delivery]) -> None:
        """Remember the leases of a push."""
        partition_of, by_partition = self._partition_of, self._by_partition
        for delivery in deliveries:
            partition = delivery.message.partition
            receipts = by_partition.get(partition)
            if receipts is None:
                receipts = by_partition[partition] = collections.deque()
            receipts.append(delivery.receipt)
            partition_of[delivery.receipt] = partition

    def partition(self, receipt: str) -> int | None:
        """The partition of a receipt still remembered (``None``: ended or unknown)."""
        return self._partition_of.get(receipt)

    def acked_through(self, receipt: str) -> list[str]:
        """The receipts a cumulative ack of ``receipt`` ended: it and every receipt
        delivered before it in its partition (some may be settled already)."""
        partition = self._partition_of.get(receipt)
        if partition is None:
            return []
        receipts, partition_of = self._by_partition[partition], self._partition_of
        ended: list[str] = []
        while receipts:
            earlier = receipts.popleft()
            del partition_of[earlier]
            ended.append(earlier)
            if earlier == receipt:
                break
        return ended

    def trim(self, receipt: str, held: Container[str]) -> None:
        """Drop the oldest receipts of ``receipt``'s partition that are no longer
        ``held`` (termed ones), so that a consumer that never acks holds no memory."""
        partition = self._partition_of.get(receipt)
        if partition is None:
            return
        receipts = self._by_partition[partition]
        while receipts and receipts[0] not in held:
            del self._partition_of[receipts.popleft()]

    def rewound(self, partition: int) -> list[str]:
        """The receipts a rewind of ``partition`` ended: all of its leases."""
        receipts = self._by_partition.pop(partition, None)
        if receipts is None:
            return []
        for receipt in receipts:
            del self._partition_of[receipt]
        return list(receipts)
