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

from collections import deque
from collections.abc import Sequence
from itertools import islice

from relaymq.core.message import Message

RECENT_MESSAGES = 1_024
RECENT_BYTES = 1024 * 1024


class RecentMessages:
    """The last appended messages, consecutive in offset, at most
    :data:`RECENT_MESSAGES` of them and :data:`RECENT_BYTES` of records."""

    def __init__(self, max_messages: int = RECENT_MESSAGES, max_bytes: int = RECENT_BYTES) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._messages: deque[Message] = deque()
        self._sizes: deque[int] = deque()  # each message's record size in the segment
        self._bytes = 0

    @property
    def first_offset(self) -> int | None:
        """The oldest offset held, or ``None`` when empty."""
        return self._messages[0].offset if self._messages else None

    def add(self, messages: Sequence[Message], record_sizes: Sequence[int]) -> None:
        """Remember an append and its records' sizes (offsets follow the last one held,
        or the window restarts)."""
        held = self._messages
        if held and messages and messages[0].offset != held[-1].offset + 1:
            self.clear()
        held.extend(messages)
        self._sizes.extend(record_sizes)
        self._bytes += sum(record_sizes)
        while held and (len(held) > self.max_messages or self._bytes > self.max_bytes):
            held.popleft()
            self._bytes -= self._sizes.popleft()

    def cut(self, next_offset: int) -> None:
        """Forget offsets from ``next_offset`` on (they were rolled back)."""
        held = self._messages
        while held and held[-1].offset >= next_offset:
            held.pop()
            self._bytes -= self._sizes.pop()

    def clear(self) -> None:
        """Forget everything."""
        self._messages.clear()
        self._sizes.clear()
        self._bytes = 0

    def read(self, start: int, end: int, max_messages: int, max_bytes: int) -> list[Message]:
        """Messages from ``start`` (which must be held) up to ``end``, within the limits
        (``max_bytes`` of records), at least one: the contract of a segment read."""
        skip = start - self._messages[0].offset
        found: list[Message] = []
        used_bytes = 0
        for message, size in zip(
            islice(self._messages, skip, None), islice(self._sizes, skip, None), strict=True
        ):
            if message.offset >= end or len(found) >= max_messages:
                break
            if found and used_bytes + size > max_bytes:
                break
            found.append(message)
            used_bytes += size
        return found
