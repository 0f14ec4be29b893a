"""The sparse offset index of one segment (the ``.index`` file beside each ``.log``).

Every ``INDEX_INTERVAL_BYTES`` of log the segment adds one 16-byte entry
(little-endian)::

    0                  4              8                              16
    +------------------+--------------+------------------------------+
    | relative_offset  | position u32 | preceding_max_timestamp_ms   |
    | u32              |              | i64                          |
    +------------------+--------------+------------------------------+

``relative_offset`` is the record's offset minus the segment's base offset,
``position`` its byte position in the ``.log`` file, and
``preceding_max_timestamp_ms`` the largest timestamp of every record *before* it
in the segment (-1 for none). That last field is non-decreasing, so a
timestamp lookup can bisect it: every record before an entry whose preceding
maximum is below ``t`` is older than ``t``, so a scan for ``t`` may start there
even when timestamps are not monotonic.

The index is only an accelerator: it is fsynced when its segment is sealed
and on close, never on the append path. A lost or damaged index is trimmed to
its valid prefix on open and the rest rebuilt by scanning the log.
"""

from __future__ import annotations

import bisect
import os
import struct
from pathlib import Path

INDEX_ENTRY = struct.Struct("<IIq")
INDEX_ENTRY_BYTES = INDEX_ENTRY.size
INDEX_INTERVAL_BYTES = 4096


class SparseIndex:
    """In-memory entries of one segment's index, mirrored to its file by appends."""

    def __init__(self, path: Path, file_descriptor: int) -> None:
        self.path = path
        self._file_descriptor = file_descriptor
        self.relative_offsets: list[int] = []
        self.positions: list[int] = []
        self.preceding_max_timestamps_ms: list[int] = []
        self._persisted_entries = 0
        self._dirty = False

    @classmethod
    def open(cls, path: Path, log_size_bytes: int) -> SparseIndex:
        """Open (or create) the index file and load its entries that make sense for a log of
        ``log_size_bytes``: strictly increasing offsets and positions, non-decreasing
        timestamps, positions inside the log. Anything after the first bad entry is cut."""
        file_descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        index = cls(path, file_descriptor)
        size = os.fstat(file_descriptor).st_size
        data = os.pread(file_descriptor, size - size % INDEX_ENTRY_BYTES, 0)
        for relative_offset, position, timestamp_ms in INDEX_ENTRY.iter_unpack(data):
            if not index._accepts(relative_offset, position, timestamp_ms, log_size_bytes):
                break
            index._append_in_memory(relative_offset, position, timestamp_ms)
        index._persisted_entries = len(index.positions)
        if index._persisted_entries * INDEX_ENTRY_BYTES != size:
            os.ftruncate(file_descriptor, index._persisted_entries * INDEX_ENTRY_BYTES)
        return index

    def _accepts(
        self, relative_offset: int, position: int, timestamp_ms: int, log_size_bytes: int
    ) -> bool:
        if position >= log_size_bytes:
            return False
        if not self.positions:
            return True
        return (
            relative_offset > self.relative_offsets[-1]
            and position > self.positions[-1]
            and timestamp_ms >= self.preceding_max_timestamps_ms[-1]
        )

    def _append_in_memory(self, relative_offset: int, position: int, timestamp_ms: int) -> None:
        self.relative_offsets.append(relative_offset)
        self.positions.append(position)
        self.preceding_max_timestamps_ms.append(timestamp_ms)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def last_position(self) -> int | None:
        """Position of the last entry, or ``None`` when empty."""
        return self.positions[-1] if self.positions else None

    def add(self, entries: list[tuple[int, int, int]]) -> None:
        """Add entries (after every existing one) and write them to the file.

        A failed index write is not a failed append: the entries stay in memory and
        the file is rewritten whole when the segment is sealed or closed.
        """
        for entry in entries:
            self._append_in_memory(*entry)
        if self._dirty:
            return
        data = b"".join(INDEX_ENTRY.pack(*entry) for entry in entries)
        try:
            os.pwrite(self._file_descriptor, data, self._persisted_entries * INDEX_ENTRY_BYTES)
        except OSError:
            self._dirty = True
            return
        self._persisted_entries += len(entries)

    def truncate(self, entries: int) -> None:
        """Keep only the first ``entries`` entries (rollback and recovery)."""
        del self.relative_offsets[entries:]
        del self.positions[entries:]
        del self.preceding_max_timestamps_ms[entries:]
        if self._persisted_entries > entries:
            self._persisted_entries = entries
            try:
                os.ftruncate(self._file_descriptor, entries * INDEX_ENTRY_BYTES)
            except OSError:
                self._dirty = True

    def entry_for_offset(self, relative_offset: int) -> int | None:
        """Index of the last entry at or before ``relative_offset``, or ``None``."""
        found = bisect.bisect_right(self.relative_offsets, relative_offset) - 1
        return found if found >= 0 else None

    def entry_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Index of the last entry before which every record is older than ``timestamp_ms``."""
        found = bisect.bisect_left(self.preceding_max_timestamps_ms, timestamp_ms) - 1
        return found if found >= 0 else None

    def sync(self) -> None:
        """Write any entries a failed write left behind and fsync the file (blocking)."""
        if self._dirty:
            data = b"".join(
                INDEX_ENTRY.pack(*entry)
                for entry in zip(
                    self.relative_offsets,
                    self.positions,
                    self.preceding_max_timestamps_ms,
                    strict=True,
                )
            )
            os.pwrite(self._file_descriptor, data, 0)
            os.ftruncate(self._file_descriptor, len(data))
            self._persisted_entries = len(self.positions)
            self._dirty = False
        os.fsync(self._file_descriptor)

    def close(self) -> None:
        """Close the file (no fsync)."""
        os.close(self._file_descriptor)

    def detach(self) -> int:
        """Give the file descriptor up to the caller, who closes it."""
        descriptor, self._file_descriptor = self._file_descriptor, -1
        return descriptor
