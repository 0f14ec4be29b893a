"""Partition choice: which partition of a stream a message goes to.

A message with a key goes to ``xxh3_64(utf8(key)) % partitions``, so every
message of one key lands in one partition and keeps its order there. This
mapping is part of the on-disk contract: messages already stored under a key
are found in, and ordered within, the partition it names. It must give the
same answer in every process, platform and release, which is why it uses a
pinned, seed-free xxHash and never Python's randomized ``hash()``. Changing it
(or a stream's partition count) moves keys to other partitions.

Keyless messages are spread round robin; that choice is not persisted and
may differ between nodes.
"""

from __future__ import annotations

import xxhash

from relaymq.errors import InvalidArgument


def _check_partitions(partitions: int) -> None:
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise InvalidArgument(
            f"partitions must be a positive integer, got {partitions!r}",
            partitions=repr(partitions),
        )


def partition_for_key(key: str, partitions: int) -> int:
    """The partition in ``range(partitions)`` owning ``key``; stable forever (see module doc).

    Lone surrogates (which JSON can carry) are hashed through ``surrogatepass`` so
    that every ``str`` has a partition instead of raising.
    """
    _check_partitions(partitions)
    return _hash_partition(key, partitions)


def _hash_partition(key: str, partitions: int) -> int:
    # The one place the on-disk key mapping is computed; partitions already checked.
    return xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass")) % partitions


class RoundRobinPartitioner:
    """Cycles ``start, start + 1, ..., partitions - 1, 0, ...`` for keyless messages.

    A random ``start`` per producer keeps many producers from all hitting partition 0 first.
    """

    __slots__ = ("_next_partition", "partitions")

    def __init__(self, partitions: int, start: int = 0) -> None:
        _check_partitions(partitions)
        self.partitions = partitions
        self._next_partition = start % partitions

    def next(self) -> int:
        """The partition for the next keyless message."""
        partition = self._next_partition
        self._next_partition = (partition + 1) % self.partitions
        return partition


class Partitioner:
    """Partition choice for one stream: by key hash when there is a key, else round robin
    over the partitions not avoided."""

    __slots__ = ("_avoided", "_round_robin", "partitions")

    def __init__(self, partitions: int, start: int = 0) -> None:
        _check_partitions(partitions)
        self.partitions = partitions
        self._round_robin = RoundRobinPartitioner(partitions, start)
        self._avoided: set[int] = set()

    def avoid(self, partition: int) -> None:
        """Give keyless messages to the other partitions from now on, while one is left
        (a key's partition never changes)."""
        self._avoided.add(partition)

    def choose(self, key: str | None) -> int:
        """The partition for a message with ``key`` (``None``: no key; ``""`` is a key)."""
        if key is None:
            partition = self._round_robin.next()
            if self._avoided and len(self._avoided) < self.partitions:
                while partition in self._avoided:
                    partition = self._round_robin.next()
            return partition
        # One partition needs no hash; the result is the same either way.
        if self.partitions == 1:
            return 0
        return _hash_partition(key, self.partitions)
