"""The newest messages of one partition log, kept in memory.

Owns :class:`RecentMessages`. A subscriber that keeps up with its stream reads
what was appended a moment ago; serving that from the segment file costs a
thread hop and a decode per read, on the latency path of every delivery. The
log keeps the messages of its last appends (a bounded window) and serves reads
that start inside the window from memory instead.

The window holds messages that were written but may not be durable yet; the
log only asks for offsets below its visible (durable) end, and cuts the window
back when a failed fsync rolls records back.
"""

from __future__ import annotations

from collections.abc import Sequence

from relaymq.core.message import Message

RECENT_MESSAGES = 1_024
RECENT_BYTES = 1024 * 1024


class RecentMessages:
    """The last appended messages, consecutive in offset, at most
    :data:`RECENT_MESSAGES` of them and :data:`RECENT_BYTES` of records.

    Messages live in a list from index ``_head`` on: a read indexes straight to
    its start offset (a deque would walk the window on every read), and evicted
    entries are dropped in bulk once they make up half the list, so the list may
    hold up to twice the window's messages and bytes until then."""

    def __init__(self, max_messages: int = RECENT_MESSAGES, max_bytes: int = RECENT_BYTES) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._messages: list[Message] = []
        self._sizes: list[int] = []  # each message's record size in the segment
        self._head = 0  # index of the oldest message still held
        self._bytes = 0

    @property
    def first_offset(self) -> int | None:
        """The oldest offset held, or ``None`` when empty."""
        return self._messages[self._head].offset if self._head < len(self._messages) else None

    def add(self, messages: Sequence[Message], record_sizes: Sequence[int]) -> None:
        """Remember an append and its records' sizes (offsets follow the last one held,
        or the window restarts)."""
        held, sizes = self._messages, self._sizes
        if held and messages and messages[0].offset != held[-1].offset + 1:
            self.clear()
        held.extend(messages)
        sizes.extend(record_sizes)
        held_bytes = self._bytes + sum(record_sizes)
        count = len(held)
        head = self._head
        while head < count and (count - head > self.max_messages or held_bytes > self.max_bytes):
            held_bytes -= sizes[head]
            head += 1
        if head * 2 >= count:
            del held[:head], sizes[:head]
            head = 0
        self._head = head
        self._bytes = held_bytes

    def cut(self, next_offset: int) -> None:
        """Forget offsets from ``next_offset`` on (they were rolled back)."""
        held = self._messages
        while len(held) > self._head and held[-1].offset >= next_offset:
            held.pop()
            self._bytes -= self._sizes.pop()

    def clear(self) -> None:
        """Forget everything."""
        self._messages.clear()
        self._sizes.clear()
        self._head = 0
        self._bytes = 0

    def read(self, start: int, end: int, max_messages: int, max_bytes: int) -> list[Message]:
        """Messages from ``start`` (which must be held) up to ``end``, within the limits
        (``max_bytes`` of records), at least one: the contract of a segment read."""
        held, sizes = self._messages, self._sizes
        assert start >= held[self._head].offset, "read below the window"
        first = self._head + start - held[self._head].offset
        stop = min(len(held), first + max_messages, first + max(end - start, 0))
        found = held[first:stop]
        used_bytes = 0
        for index, size in enumerate(sizes[first:stop]):
            used_bytes += size
            if index and used_bytes > max_bytes:
                return found[:index]
        return found
