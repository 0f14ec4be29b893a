"""The idempotent-publish window of one stream: message id -> where it landed.

Entries live for ``window_ms`` after the original publish. The window is rebuilt
on start from the stream's recent messages, so a client retrying across a
broker restart still gets the original offset back.
"""

from __future__ import annotations

from collections import OrderedDict

# An entry is one int, not a tuple: ints are invisible to the garbage collector, so a
# window of hundreds of thousands of ids adds nothing to what a collection walks (a
# tuple per published message made young collections pause 10-30 ms under load).
_OFFSET_BITS = 64
_PARTITION_BITS = 32
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_PARTITION_MASK = (1 << _PARTITION_BITS) - 1
_TIMESTAMP_SHIFT = _OFFSET_BITS + _PARTITION_BITS


def _pack(partition: int, offset: int, timestamp_ms: int) -> int:
    return (timestamp_ms << _TIMESTAMP_SHIFT) | (partition << _OFFSET_BITS) | offset


def _location(entry: int) -> tuple[int, int]:
    return (entry >> _OFFSET_BITS) & _PARTITION_MASK, entry & _OFFSET_MASK


class DedupWindow:
    """Remembers ``(partition, offset)`` of each message id seen in the last ``window_ms``."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        # Insertion order is publish order, so expiry only ever pops from the front.
        self._entries: OrderedDict[str, int] = OrderedDict()  # id -> packed entry

    def lookup(self, message_id: str, now_ms: int) -> tuple[int, int] | None:
        """The ``(partition, offset)`` of an earlier message with this id, if in the window."""
        entry = self._entries.get(message_id)
        if entry is None or (entry >> _TIMESTAMP_SHIFT) + self.window_ms <= now_ms:
            return None
        return _location(entry)

    def remember(self, message_id: str, partition: int, offset: int, timestamp_ms: int) -> None:
        """Record where a message with this id landed."""
        self._entries[message_id] = _pack(partition, offset, timestamp_ms)
        self._entries.move_to_end(message_id)

    def expire(self, now_ms: int) -> None:
        """Forget ids older than the window."""
        horizon_ms = now_ms - self.window_ms
        entries = self._entries
        while entries:
            message_id, entry = next(iter(entries.items()))
            if entry >> _TIMESTAMP_SHIFT > horizon_ms:
                break
            del entries[message_id]

    def __len__(self) -> int:
        return len(self._entries)
