"""The leases an ``ordered`` subscription's subscriber holds, by partition.

Owns :class:`OrderedLeases`. In ordered mode the broker ends more leases than a
frame names: an ack is cumulative (it ends every earlier lease of its
partition), and a nack or an expired lease rewinds the partition (every lease
of it ends). The subscriber's credit must come back for all of them, without a
scan of every lease in flight (up to ``ws_max_credit``) per frame: leases are
kept per partition in delivery order, which is offset order until a rewind,
and a rewind drops the partition's leases.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from relaymq.core.cursor import Delivery


class OrderedLeases:
    """``(offset, receipt)`` of each delivered lease, per partition, oldest first."""

    def __init__(self) -> None:
        self._by_partition: dict[int, collections.deque[tuple[int, str]]] = {}

    def delivered(self, deliveries: Iterable[Delivery]) -> None:
        """Remember the leases of a push."""
        by_partition = self._by_partition
        for delivery in deliveries:
            message = delivery.message
            leases = by_partition.get(message.partition)
            if leases is None:
                leases = by_partition[message.partition] = collections.deque()
            leases.append((message.offset, delivery.receipt))

    def acked_through(self, partition: int, offset: int) -> list[str]:
        """The receipts a cumulative ack of ``offset`` ended (some may be gone already)."""
        leases = self._by_partition.get(partition)
        ended: list[str] = []
        while leases and leases[0][0] <= offset:
            ended.append(leases.popleft()[1])
        return ended

    def rewound(self, partition: int) -> list[str]:
        """The receipts a rewind of ``partition`` ended: all of its leases."""
        leases = self._by_partition.pop(partition, None)
        return [] if leases is None else [receipt for _, receipt in leases]
