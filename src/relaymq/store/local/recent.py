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
from operator import attrgetter

from relaymq.core.message import Message

RECENT_MESSAGES = 1_024
RECENT_BYTES = 1024 * 1024

_payload = attrgetter("payload")


class RecentMessages:
    """The last appended messages, consecutive in offset, at most
    :data:`RECENT_MESSAGES` of them and :data:`RECENT_BYTES` of payload."""

    def __init__(self, max_messages: int = RECENT_MESSAGES, max_bytes: int = RECENT_BYTES) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._messages: deque[Message] = deque()
        self._bytes = 0

    @property
    def first_offset(self) -> int | None:
        """The oldest offset held, or ``None`` when empty."""
        return self._messages[0].offset if self._messages else None

    def add(self, messages: Sequence[Message]) -> None:
        """Remember an append (offsets follow the last one held, or the window restarts)."""
        held = self._messages
        if held and messages and messages[0].offset != held[-1].offset + 1:
            self.clear()
        held.extend(messages)
        # Payload bytes only: a C-level sum on the append path, close enough for a bound.
        self._bytes += sum(map(len, map(_payload, messages)))
        while held and (len(held) > self.max_messages or self._bytes > self.max_bytes):
            self._bytes -= len(held.popleft().payload)

    def cut(self, next_offset: int) -> None:
        """Forget offsets from ``next_offset`` on (they were rolled back)."""
        held = self._messages
        while held and held[-1].offset >= next_offset:
            self._bytes -= len(held.pop().payload)

    def clear(self) -> None:
        """Forget everything."""
        self._messages.clear()
        self._bytes = 0

    def read(self, start: int, end: int, max_messages: int, max_bytes: int) -> list[Message]:
        """Messages from ``start`` (which must be held) up to ``end``, within the limits
        (``max_bytes`` of payload), at least one: the contract of a segment read."""
        first = self._messages[0].offset
        found: list[Message] = []
        used_bytes = 0
        for message in islice(self._messages, start - first, None):
            if message.offset >= end or len(found) >= max_messages:
                break
            size = len(message.payload)
            if found and used_bytes + size > max_bytes:
                break
            found.append(message)
            used_bytes += size
        return found
