"""The message as it is published, stored and delivered.

One struct travels the whole path so the hot path never copies a message
into another shape: the broker stamps ``timestamp_ms``, the store assigns
``partition`` and ``offset`` on append, and the cursor hands the same object
to consumers.
"""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, kw_only=True, gc=False):
    """A message. Times are milliseconds since the Unix epoch (UTC).

    Not tracked by the garbage collector (``gc=False``, subclasses too): its fields
    are strings, bytes, numbers and a dict of strings, so it can never be part of a
    reference cycle, and a broker holds many thousands of messages (windows, the
    appends waiting for their fsync) that a collection would otherwise walk, on
    the latency path (``docs/performance.md``, finding 48)."""

    subject: str
    payload: bytes = b""
    key: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    id: str | None = None
    timestamp_ms: int = 0
    deliver_at_ms: int | None = None
    priority: int = 0
    expires_at_ms: int | None = None
    partition: int = -1
    offset: int = -1

    def size_bytes(self) -> int:
        """Approximate stored size: payload, subject, key and headers."""
        size = len(self.payload) + len(self.subject)
        if self.key:
            size += len(self.key)
        for name, value in self.headers.items():
            size += len(name) + len(value)
        return size
