"""Delivery accounting: what producers had confirmed against what consumers saw.

Owns :class:`Publications` (per producer, which sequence numbers the server
confirmed durable, and how many publishes failed), :class:`Deliveries` (per
subscription, which of them arrived, how many arrived again, and how many
arrived before an earlier one of the same producer; the producer is the
message key) and :class:`Verdict`, the count of lost, duplicated and
out-of-order messages. A message is *lost* when it was confirmed and never
delivered: the one outcome that makes a throughput figure meaningless, so the
report withholds it (:mod:`relaymq.bench.report`).

One byte per message per producer, so a run of ten million messages costs ten
megabytes per subscription.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class Publications:
    """Which messages each producer got confirmed."""

    def __init__(self, producers: int) -> None:
        self.confirmed_flags = [bytearray() for _ in range(producers)]
        self.confirmed = 0
        self.failed = 0
        self.producers_done = 0

    def confirm(self, producer: int, sequence: int) -> None:
        """The server confirmed message ``sequence`` of ``producer`` as durable."""
        flags = self.confirmed_flags[producer]
        if sequence >= len(flags):
            flags.extend(bytes(max(sequence + 1 - len(flags), len(flags))))
        if not flags[sequence]:
            flags[sequence] = 1
            self.confirmed += 1

    def fail(self, count: int = 1) -> None:
        """``count`` publishes were refused or never confirmed."""
        self.failed += count

    def is_confirmed(self, producer: int, sequence: int) -> bool:
        """Whether that message was confirmed."""
        flags = self.confirmed_flags[producer]
        return sequence < len(flags) and flags[sequence] == 1


class Deliveries:
    """What one subscription's consumers received, checked against the publications."""

    def __init__(self, publications: Publications) -> None:
        self.publications = publications
        producers = len(publications.confirmed_flags)
        self.seen_flags = [bytearray() for _ in range(producers)]
        self.last_sequence = [-1] * producers
        self.received = 0  # distinct messages
        self.duplicated = 0
        self.out_of_order = 0
        self.foreign = 0  # payloads that are not bench messages

    def receive(self, producer: int, sequence: int) -> bool:
        """Count one delivery; whether it was the first of that message."""
        if producer >= len(self.seen_flags):
            self.foreign += 1
            return False
        flags = self.seen_flags[producer]
        if sequence >= len(flags):
            flags.extend(bytes(max(sequence + 1 - len(flags), len(flags), 1024)))
        if flags[sequence]:
            self.duplicated += 1
            return False
        flags[sequence] = 1
        self.received += 1
        if sequence < self.last_sequence[producer]:
            self.out_of_order += 1
        else:
            self.last_sequence[producer] = sequence
        return True

    def missing(self) -> int:
        """Confirmed messages not (yet) received."""
        missing = 0
        for confirmed, seen in zip(self.publications.confirmed_flags, self.seen_flags, strict=True):
            # Flags are bytes 0 or 1: as little-endian integers, AND keeps the messages
            # both confirmed and seen, and their bit count is how many (no Python loop).
            both = int.from_bytes(confirmed, "little") & int.from_bytes(seen, "little")
            missing += confirmed.count(1) - both.bit_count()
        return missing

    def complete(self) -> bool:
        """Whether every confirmed message arrived (cheap: compares counts first)."""
        return self.received >= self.publications.confirmed and self.missing() == 0


@dataclass(frozen=True)
class Verdict:
    """The delivery accounting of a run, summed over subscriptions."""

    published: int  # confirmed messages
    failed_publishes: int
    expected: int  # confirmed messages times subscriptions
    received: int  # distinct deliveries
    lost: int
    duplicated: int
    out_of_order: int

    @property
    def ok(self) -> bool:
        """No confirmed message was lost and no publish failed."""
        return self.lost == 0 and self.failed_publishes == 0

    def to_dict(self) -> dict[str, int | bool]:
        """JSON-able figures, with ``ok``."""
        return {**asdict(self), "ok": self.ok}


def verdict(publications: Publications, deliveries: list[Deliveries]) -> Verdict:
    """Count lost, duplicated and out-of-order messages over every subscription."""
    return Verdict(
        published=publications.confirmed,
        failed_publishes=publications.failed,
        expected=publications.confirmed * len(deliveries),
        received=sum(delivery.received for delivery in deliveries),
        lost=sum(delivery.missing() for delivery in deliveries),
        duplicated=sum(delivery.duplicated for delivery in deliveries),
        out_of_order=sum(delivery.out_of_order for delivery in deliveries),
    )
