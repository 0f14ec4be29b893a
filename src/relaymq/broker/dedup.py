"""The idempotent-publish window of one stream: message id -> where it landed.

Entries live for ``window_ms`` after the original publish. The window is rebuilt
on start from the stream's recent messages, so a client retrying across a
broker restart still gets the original offset back.
"""

from __future__ import annotations

from collections import OrderedDict


class DedupWindow:
    """Remembers ``(partition, offset)`` of each message id seen in the last ``window_ms``."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        # Insertion order is publish order, so expiry only ever pops from the front.
        self._entries: OrderedDict[str, tuple[int, int, int]] = OrderedDict()

    def lookup(self, message_id: str, now_ms: int) -> tuple[int, int] | None:
        """The ``(partition, offset)`` of an earlier message with this id, if in the window."""
        entry = self._entries.get(message_id)
        if entry is None or entry[2] + self.window_ms <= now_ms:
            return None
        return entry[0], entry[1]

    def location(self, message_id: str) -> tuple[int, int]:
        """The ``(partition, offset)`` recorded for an id just remembered (no expiry check)."""
        partition, offset, _ = self._entries[message_id]
        return partition, offset

    def remember(self, message_id: str, partition: int, offset: int, timestamp_ms: int) -> None:
        """Record where a message with this id landed."""
        self._entries[message_id] = (partition, offset, timestamp_ms)
        self._entries.move_to_end(message_id)

    def expire(self, now_ms: int) -> None:
        """Forget ids older than the window."""
        horizon_ms = now_ms - self.window_ms
        entries = self._entries
        while entries:
            message_id, (_, _, timestamp_ms) = next(iter(entries.items()))
            if timestamp_ms > horizon_ms:
                break
            del entries[message_id]

    def __len__(self) -> int:
        return len(self._entries)
