"""The memory store: partition logs and metadata held in process memory.

Same behaviour as the local store through the same interface (offsets,
trim, retention, timestamps), but nothing survives the process: for tests
and for data that need not be durable. Retention here is exact, message by
message; the local store drops whole segments.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from relaymq.core.message import Message
from relaymq.errors import InvalidArgument, StoreClosed
from relaymq.store.base import (
    AppendDone,
    AppendListeners,
    PartitionStats,
    RetentionLimits,
    wait_for_append,
)


class MemoryPartitionLog:
    """A :class:`relaymq.store.base.PartitionLog` in a deque of messages."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self._messages: deque[Message] = deque()
        self._first_offset = 0
        self._bytes = 0
        self._closed = False
        self._listeners = AppendListeners()

    @property
    def first_offset(self) -> int:
        """The lowest offset still retained (equals ``next_offset`` when empty)."""
        return self._first_offset

    @property
    def next_offset(self) -> int:
        """The offset the next appended message will get."""
        return self._first_offset + len(self._messages)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("partition log is closed")

    async def append(self, messages: Sequence[Message]) -> int:
        """Append ``messages`` in order and return the first one's offset."""
        return await wait_for_append(self, messages)

    def start_append(self, messages: Sequence[Message], done: AppendDone) -> int:
        """Append ``messages`` in order and return the first one's offset; readable at
        once, so ``done`` is called before this returns."""
        self._check_open()
        first_offset = self.next_offset
        for position, message in enumerate(messages):
            message.partition = self.partition
            message.offset = first_offset + position
            # A copy, so a caller mutating its message later does not change the log.
            self._messages.append(copy.copy(message))
            self._bytes += message.size_bytes()
        self._listeners.tell()
        done(None)
        return first_offset

    async def flush(self) -> None:
        """Nothing to wait for: an append here is done before it returns."""
        self._check_open()

    def watch_appends(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every append (its messages are readable at once)."""
        return self._listeners.add(listener)

    async def read(self, from_offset: int, max_messages: int, max_bytes: int) -> list[Message]:
        """Messages from ``from_offset`` (clamped up to ``first_offset``); at least one if any."""
        self._check_open()
        start = max(from_offset, self._first_offset) - self._first_offset
        found: list[Message] = []
        used_bytes = 0
        for index in range(start, min(len(self._messages), start + max(max_messages, 0))):
            message = self._messages[index]
            size = message.size_bytes()
            if found and used_bytes + size > max_bytes:
                break
            found.append(copy.copy(message))
            used_bytes += size
        return found

    async def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """The first offset whose timestamp is >= ``timestamp_ms`` (``next_offset`` if none)."""
        self._check_open()
        for message in self._messages:
            if message.timestamp_ms >= timestamp_ms:
                return message.offset
        return self.next_offset

    async def trim(self, before_offset: int) -> int:
        """Drop messages below ``before_offset``; return the new ``first_offset``."""
        self._check_open()
        while self._messages and self._first_offset < before_offset:
            self._drop_oldest()
        return self._first_offset

    async def enforce_retention(self, limits: RetentionLimits, now_ms: int) -> int:
        """Drop the oldest messages that break ``limits`` (exactly, one by one)."""
        self._check_open()
        while self._messages and _breaks(self._messages[0], limits, now_ms, self):
            self._drop_oldest()
        return self._first_offset

    def _drop_oldest(self) -> None:
        message = self._messages.popleft()
        self._bytes -= message.size_bytes()
        self._first_offset += 1

    def stats(self) -> PartitionStats:
        """Counts and bounds of what the partition holds; ``bytes`` by ``Message.size_bytes``."""
        messages = self._messages
        return PartitionStats(
            first_offset=self._first_offset,
            next_offset=self.next_offset,
            messages=len(messages),
            bytes=self._bytes,
            first_timestamp_ms=messages[0].timestamp_ms if messages else None,
            last_timestamp_ms=messages[-1].timestamp_ms if messages else None,
        )

    async def close(self) -> None:
        """Refuse further use (the data stays with the store until the stream is deleted)."""
        self._closed = True


def _breaks(oldest: Message, limits: RetentionLimits, now_ms: int, log: MemoryPartitionLog) -> bool:
    stats = log.stats()
    if limits.max_age_ms is not None and oldest.timestamp_ms < now_ms - limits.max_age_ms:
        return True
    if limits.max_bytes is not None and stats.bytes > limits.max_bytes:
        return True
    return limits.max_messages is not None and stats.messages > limits.max_messages


class MemoryLogStore:
    """A :class:`relaymq.store.base.LogStore` whose partitions live in memory."""

    def __init__(self) -> None:
        # The messages outlive a closed log object so reopening finds them (as on disk).
        self._data: dict[tuple[str, str, int], MemoryPartitionLog] = {}
        self._closed = False

    async def open_partition(
        self, namespace: str, stream: str, partition: int
    ) -> MemoryPartitionLog:
        """Open (creating if missing) one partition's log."""
        if self._closed:
            raise StoreClosed("the store is closed")
        if partition < 0:
            raise InvalidArgument("partition must be >= 0", partition=partition)
        key = (namespace, stream, partition)
        log = self._data.get(key)
        if log is None:
            log = self._data[key] = MemoryPartitionLog(partition)
        log._closed = False
        return log

    async def delete_stream(self, namespace: str, stream: str) -> None:
        """Forget every partition of a stream."""
        for key in [key for key in self._data if key[:2] == (namespace, stream)]:
            del self._data[key]

    async def close(self) -> None:
        """Close every partition log."""
        for log in self._data.values():
            await log.close()
        self._closed = True


class MemoryMetadataStore:
    """A :class:`relaymq.store.base.MetadataStore` in dictionaries."""

    def __init__(self) -> None:
        self._documents: dict[str, dict[str, dict[str, Any]]] = {}
        self._checkpoints: dict[str, bytes] = {}

    async def put_document(self, kind: str, key: str, document: dict[str, Any]) -> None:
        """Create or replace the document ``(kind, key)`` (stored as a deep copy)."""
        self._documents.setdefault(kind, {})[key] = copy.deepcopy(document)

    async def delete_document(self, kind: str, key: str) -> None:
        """Delete a document; deleting a missing one is not an error."""
        self._documents.get(kind, {}).pop(key, None)

    async def list_documents(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``, in key order."""
        documents = self._documents.get(kind, {})
        return [copy.deepcopy(documents[key]) for key in sorted(documents)]

    async def save_checkpoints(self, checkpoints: Sequence[tuple[str, bytes]]) -> None:
        """Store many ``(key, state)`` checkpoints at once."""
        self._checkpoints.update((key, bytes(state)) for key, state in checkpoints)

    async def load_checkpoint(self, key: str) -> bytes | None:
        """The last saved checkpoint of ``key``, or ``None``."""
        return self._checkpoints.get(key)

    async def delete_checkpoints(self, key_prefix: str) -> None:
        """Delete every checkpoint whose key starts with ``key_prefix``."""
        for key in [key for key in self._checkpoints if key.startswith(key_prefix)]:
            del self._checkpoints[key]

    async def close(self) -> None:
        """Nothing to flush."""


__all__ = ["MemoryLogStore", "MemoryMetadataStore", "MemoryPartitionLog"]
