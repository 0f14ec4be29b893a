"""The leases of an ordered subscriber: what a cumulative ack, a rewind and a term end."""

from __future__ import annotations

from relaymq.api.ordered_leases import OrderedLeases
from relaymq.core.cursor import Delivery
from relaymq.core.message import Message


def deliveries(partition: int, offsets: range) -> list[Delivery]:
    return [
        Delivery(
            Message(subject="s", payload=b"", partition=partition, offset=offset),
            f"{partition}.{offset}",
            1,
            0,
        )
        for offset in offsets
    ]


def test_a_cumulative_ack_ends_its_partitions_earlier_leases_only() -> None:
    leases = OrderedLeases()
    leases.delivered(deliveries(0, range(4)))
    leases.delivered(deliveries(1, range(2)))
    assert leases.acked_through("0.2") == ["0.0", "0.1", "0.2"]
    assert leases.acked_through("0.2") == []  # ended already
    assert leases.partition("0.3") == 0 and leases.partition("1.0") == 1


def test_a_rewind_ends_every_lease_of_its_partition() -> None:
    leases = OrderedLeases()
    leases.delivered(deliveries(0, range(3)))
    leases.delivered(deliveries(1, range(2)))
    assert leases.rewound(0) == ["0.0", "0.1", "0.2"]
    assert leases.partition("0.1") is None and leases.partition("1.1") == 1
    assert leases.rewound(0) == []


def test_termed_leases_at_the_head_are_dropped() -> None:
    leases = OrderedLeases()
    leases.delivered(deliveries(0, range(3)))
    leases.trim("0.0", held={"0.2"})  # 0.0 and 0.1 were termed
    assert leases.partition("0.0") is None and leases.partition("0.1") is None
    assert leases.acked_through("0.2") == ["0.2"]
