"""One segment: a ``.log`` file of records (format in :mod:`.record`) and its sparse index.

The segment owns its file descriptors, the byte size written so far, the
size readers may see (``readable_bytes``, advanced once an append is as
durable as the policy promises), offset and timestamp bounds, and tail
recovery on open. Appends and truncation run on the event loop (a page-cache
write of one buffer); reads, scans and fsync run in worker threads, guarded by
a reference count so a segment deleted meanwhile closes its files only after
the last user lets go.

The file of the active segment is longer than its data: space is reserved ahead
of the write position, by the log between fsync passes and by an append that
would cross the reserved end (:class:`~relaymq.store.local.space.SpaceReserver`)::

    0        16                          size_bytes            file_size_bytes
    +--------+---------------------------+---------------------+
    | header | records                   | reserved: zeros     |
    +--------+---------------------------+---------------------+

Sealing the segment (a roll) or closing it cuts the file back to
``size_bytes``, so a finished file's size is its data size. Recovery reads
zeros where a frame should start, up to the end of the file, as the end of the
data (a crash left the reservation behind), not as damage.

Syncing appended data needs only ``fdatasync``: it also persists a changed file
size. A full ``fsync`` is kept for a file created or truncated since its last
sync, and for the final sync of a sealed or closed segment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from crc32c import crc32c

from relaymq.core.message import Message
from relaymq.errors import CorruptRecord
from relaymq.store.local import record
from relaymq.store.local.closer import DeletedFileCloser
from relaymq.store.local.index import INDEX_INTERVAL_BYTES, SparseIndex
from relaymq.store.local.space import FreeSpaceGuard, SpaceReserver

logger = logging.getLogger("relaymq.store")

# Reads fetch at least this much per pread; a larger record widens one read.
READ_CHUNK_BYTES = 256 * 1024
OFFSET_DIGITS = 20


def segment_file_name(base_offset: int) -> str:
    """``00000000000000000042.log`` for base offset 42."""
    return f"{base_offset:0{OFFSET_DIGITS}d}.log"


class SegmentMark(NamedTuple):
    """What a segment held at one moment, to roll an append back to. (A named tuple:
    every fsync pass takes one, and that is cheaper than a frozen dataclass.)"""

    size_bytes: int
    next_offset: int
    index_entries: int
    max_timestamp_ms: int
    last_timestamp_ms: int | None
    last_index_position: int


class Segment:
    """One ``.log`` file and its index. See the module docstring for threading rules."""

    def __init__(
        self, path: Path, file_descriptor: int, base_offset: int, index: SparseIndex
    ) -> None:
        self.path = path
        self.base_offset = base_offset
        self.index = index
        self._file_descriptor = file_descriptor
        self.size_bytes = record.SEGMENT_HEADER_BYTES
        self.readable_bytes = record.SEGMENT_HEADER_BYTES
        # The file's size on disk: ``size_bytes`` plus the space reserved after it.
        self.file_size_bytes = record.SEGMENT_HEADER_BYTES
        self.next_offset = base_offset
        self.first_timestamp_ms: int | None = None
        self.last_timestamp_ms: int | None = None
        self.max_timestamp_ms = -1
        # Offset at which an older segment was found damaged on open; reads stop there.
        self.damaged_at_offset: int | None = None
        self._last_index_position = record.SEGMENT_HEADER_BYTES
        # Set (event loop) when the file was created or truncated; the next sync is a
        # full fsync. Cleared by the syncing thread before it syncs.
        self._metadata_changed = False
        self._users = 0
        self._deleted = False
        self._closer: DeletedFileCloser | None = None  # set when the files were unlinked
        self._topping_up_failed = False

    # -- creating and opening ---------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int) -> Segment:
        """Create an empty segment file with its header (the caller fsyncs the directory)."""
        path = directory / segment_file_name(base_offset)
        file_descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(file_descriptor, record.encode_segment_header(base_offset), 0)
            index = SparseIndex.open(path.with_suffix(".index"), record.SEGMENT_HEADER_BYTES)
            index.truncate(0)
        except BaseException:
            os.close(file_descriptor)
            path.unlink(missing_ok=True)
            raise
        segment = cls(path, file_descriptor, base_offset, index)
        segment._metadata_changed = True
        return segment

    @classmethod
    def open(cls, path: Path, *, is_last: bool) -> Segment:
        """Open an existing segment and check its tail (blocking; run in a thread).

        A zero-filled tail (reserved space a crash left behind) is truncated away
        silently in any segment. The last segment's damaged tail is truncated to the
        end of its last valid record and logged. An older segment's damage is logged
        and remembered so reads stop there with :class:`CorruptRecord`.
        """
        base_offset = int(path.stem)
        file_descriptor = os.open(path, os.O_RDWR)
        size = os.fstat(file_descriptor).st_size
        header = os.pread(file_descriptor, record.SEGMENT_HEADER_BYTES, 0)
        header_rewritten = False
        try:
            header_base = record.decode_segment_header(header)
        except record.SegmentHeaderError as error:
            if not is_last:
                os.close(file_descriptor)
                raise CorruptRecord(f"segment {path}: {error}", path=str(path)) from error
            _log_dropped(path, 0, size, str(error))
            os.ftruncate(file_descriptor, 0)
            _write_all(file_descriptor, record.encode_segment_header(base_offset), 0)
            size, header_base = record.SEGMENT_HEADER_BYTES, base_offset
            header_rewritten = True
        if header_base != base_offset:
            os.close(file_descriptor)
            raise CorruptRecord(f"segment {path}: header says base offset {header_base}")
        index = SparseIndex.open(path.with_suffix(".index"), size)
        segment = cls(path, file_descriptor, base_offset, index)
        segment._metadata_changed = header_rewritten
        segment.file_size_bytes = size
        segment._recover(size, is_last=is_last)
        return segment

    def _recover(self, size: int, *, is_last: bool) -> None:
        position, offset, max_timestamp_ms = self._last_trusted_index_entry()
        self.size_bytes = position
        self.next_offset = offset
        self.max_timestamp_ms = max_timestamp_ms
        self._last_index_position = position if len(self.index) else self._last_index_position
        data = os.pread(self._file_descriptor, size - position, position)
        damage = self._scan_tail(data, position)
        if damage is not None:
            damage_position, reason = damage
            if record.is_zero_fill(data, damage_position - position):
                # Reserved space the writer never reached: the end of the data, not damage.
                self._truncate(damage_position)
            elif is_last:
                _log_dropped(self.path, damage_position, size - damage_position, reason)
                self._truncate(damage_position)
            else:
                logger.error(
                    "segment %s: damaged record at position %d (%s); reads stop there",
                    self.path,
                    damage_position,
                    reason,
                )
                self.damaged_at_offset = self.next_offset
        self.readable_bytes = self.size_bytes
        self._load_first_timestamp()

    def _last_trusted_index_entry(self) -> tuple[int, int, int]:
        """(position, offset, preceding max timestamp) of the last index entry that points
        at a record with the offset it claims; entries after it are dropped. (Zeros, as
        in reserved space, never pass: their length field is 0.)"""
        while len(self.index):
            entry = len(self.index) - 1
            position = self.index.positions[entry]
            offset = self.base_offset + self.index.relative_offsets[entry]
            header = os.pread(self._file_descriptor, record.RECORD_HEADER_BYTES, position)
            if len(header) == record.RECORD_HEADER_BYTES:
                length, _crc, stored_offset, _timestamp = record.RECORD_HEADER.unpack(header)
                if stored_offset == offset and length >= record.OFFSET_AND_TIMESTAMP.size:
                    return position, offset, self.index.preceding_max_timestamps_ms[entry]
            self.index.truncate(entry)
        return record.SEGMENT_HEADER_BYTES, self.base_offset, -1

    def _scan_tail(self, data: bytes, start: int) -> tuple[int, str] | None:
        """Walk the frames in ``data`` (read from ``start``), adopting each valid one;
        return (position, reason) of the first damage, or ``None``."""
        entries: list[tuple[int, int, int]] = []
        try:
            for frame in record.iter_frames(data, 0):
                if frame.offset != self.next_offset:
                    raise record.FrameError(
                        f"offset {frame.offset} out of sequence (expected {self.next_offset})",
                        frame.position,
                    )
                self._adopt_frame(start + frame.position, frame, entries)
                self.size_bytes = start + frame.end
        except record.FrameError as error:
            self.index.add(entries)
            return start + error.position, error.reason
        self.index.add(entries)
        return None

    def _adopt_frame(
        self, position: int, frame: record.Frame, entries: list[tuple[int, int, int]]
    ) -> None:
        if position - self._last_index_position >= INDEX_INTERVAL_BYTES:
            entries.append((frame.offset - self.base_offset, position, self.max_timestamp_ms))
            self._last_index_position = position
        self.max_timestamp_ms = max(self.max_timestamp_ms, frame.timestamp_ms)
        self.last_timestamp_ms = frame.timestamp_ms
        self.next_offset = frame.offset + 1

    def _load_first_timestamp(self) -> None:
        if self.next_offset == self.base_offset:
            return
        header = os.pread(
            self._file_descriptor, record.RECORD_HEADER_BYTES, record.SEGMENT_HEADER_BYTES
        )
        self.first_timestamp_ms = record.RECORD_HEADER.unpack(header)[3]

    # -- appending (event loop) ----------------------------------------------------------

    @property
    def message_count(self) -> int:
        """Records written to this segment."""
        return self.next_offset - self.base_offset

    def mark(self) -> SegmentMark:
        """The current written state, to restore on a failed append."""
        return SegmentMark(
            self.size_bytes,
            self.next_offset,
            len(self.index),
            self.max_timestamp_ms,
            self.last_timestamp_ms,
            self._last_index_position,
        )

    def append(
        self, batch: record.EncodedBatch, messages: Sequence[Message], reserver: SpaceReserver
    ) -> None:
        """Write an encoded batch (one ``pwrite``) and index it, first reserving the next
        chunk of space when the batch would cross the reserved end.

        Raises the ``OSError`` of a failed reservation or write after truncating the
        file back, so nothing partial stays on disk.
        """
        start = self.size_bytes
        end = start + len(batch.data)
        try:
            if end > self.file_size_bytes:
                self.file_size_bytes = reserver.reserve(
                    self._file_descriptor, self.file_size_bytes, end
                )
            _write_all(self._file_descriptor, batch.data, start)
        except OSError:
            # Nothing but the file changed yet: the mark taken now is the state before.
            self.restore(self.mark())
            raise
        if end > self.file_size_bytes:  # nothing reserved: the write grew the file
            self.file_size_bytes = end
        entries: list[tuple[int, int, int]] = []
        max_timestamp_ms = self.max_timestamp_ms
        position = start
        for message, size in zip(messages, batch.sizes, strict=True):
            if position - self._last_index_position >= INDEX_INTERVAL_BYTES:
                entries.append((message.offset - self.base_offset, position, max_timestamp_ms))
                self._last_index_position = position
            if message.timestamp_ms > max_timestamp_ms:
                max_timestamp_ms = message.timestamp_ms
            position += size
        if entries:
            self.index.add(entries)
        if self.first_timestamp_ms is None:
            self.first_timestamp_ms = messages[0].timestamp_ms
        self.max_timestamp_ms = max_timestamp_ms
        self.last_timestamp_ms = messages[-1].timestamp_ms
        self.size_bytes = end
        self.next_offset += len(messages)

    def restore(self, mark: SegmentMark) -> None:
        """Cut the segment back to ``mark`` (file, index and bounds); the reserved tail
        goes too (the next append reserves again)."""
        self._truncate(mark.size_bytes)
        self.index.truncate(mark.index_entries)
        self.size_bytes = mark.size_bytes
        self.readable_bytes = min(self.readable_bytes, mark.size_bytes)
        self.next_offset = mark.next_offset
        self.max_timestamp_ms = mark.max_timestamp_ms
        self.last_timestamp_ms = mark.last_timestamp_ms
        self._last_index_position = mark.last_index_position
        if self.next_offset == self.base_offset:
            self.first_timestamp_ms = None

    def reserve_ahead(self, reserver: SpaceReserver, guard: FreeSpaceGuard) -> None:
        """Top the reserved space up (event loop, between fsync passes; see
        :meth:`SpaceReserver.reserve_ahead`), unless the free-space guard's headroom
        would pay for it. A failure is not the caller's: it is logged, whatever it
        allocated is cut off, and this segment is not topped up again (the next append
        that needs space reserves it itself and reports the error)."""
        if self._topping_up_failed or not guard.allows(reserver.chunk_bytes):
            return
        before_bytes = self.file_size_bytes
        try:
            self.file_size_bytes = reserver.reserve_ahead(
                self._file_descriptor, before_bytes, self.size_bytes
            )
        except OSError as error:
            self._topping_up_failed = True
            guard.forget()
            logger.warning("segment %s: could not reserve space ahead: %s", self.path, error)
            with contextlib.suppress(OSError):
                # Only a partial allocation needs the cut (which costs a full fsync).
                if os.fstat(self._file_descriptor).st_size != before_bytes:
                    self._truncate(before_bytes)

    def drop_reserved_tail(self) -> None:
        """Cut the file back to its data end (event loop), before the final fsync of a
        sealed or closed segment, so the size of a finished file is its data size."""
        if os.fstat(self._file_descriptor).st_size != self.size_bytes:
            self._truncate(self.size_bytes)

    def _truncate(self, size_bytes: int) -> None:
        os.ftruncate(self._file_descriptor, size_bytes)
        self.file_size_bytes = size_bytes
        self._metadata_changed = True

    # -- lifetime of the file descriptors ----------------------------------------------

    def acquire(self) -> None:
        """Keep the files open until :meth:`release` (for a worker thread's use)."""
        self._users += 1

    def release(self) -> None:
        """Undo one :meth:`acquire`; closes the files if the segment was deleted meanwhile."""
        self._users -= 1
        if self._deleted and self._users == 0:
            self._close_files()

    def delete(self, closer: DeletedFileCloser) -> None:
        """Unlink the files now and close them once no worker uses them, on
        ``closer``'s thread (that last close frees the blocks, which can wait for the
        disk)."""
        self.path.unlink(missing_ok=True)
        self.index.path.unlink(missing_ok=True)
        self._deleted = True
        self._closer = closer
        if self._users == 0:
            self._close_files()

    def close(self) -> None:
        """Close the files (the caller synced them first)."""
        self._deleted = True
        if self._users == 0:
            self._close_files()

    def _close_files(self) -> None:
        if self._file_descriptor < 0:
            return
        if self._closer is None:
            os.close(self._file_descriptor)
            self.index.close()
        else:
            self._closer.close([self._file_descriptor, self.index.detach()])
        self._file_descriptor = -1

    def datasync_descriptor(self) -> int | None:
        """The descriptor to ``fdatasync`` when that is all a sync of the log file needs
        (no creation or truncation since the last one), else ``None``."""
        if self._metadata_changed or self._file_descriptor < 0 or not hasattr(os, "fdatasync"):
            return None
        return self._file_descriptor

    def sync(self, *, with_index: bool) -> None:
        """Make the log file durable, and the index too when asked (blocking).

        Appended data needs only ``fdatasync`` (it persists a grown size too). A full
        ``fsync`` is kept for the final sync of a sealed or closed segment
        (``with_index``) and after the file was created or truncated.
        """
        full = with_index or self._metadata_changed
        # Cleared before syncing: a change the event loop makes from now on is synced
        # by the next pass.
        self._metadata_changed = False
        try:
            if full or not hasattr(os, "fdatasync"):
                os.fsync(self._file_descriptor)
            else:
                os.fdatasync(self._file_descriptor)
        except OSError:
            self._metadata_changed = self._metadata_changed or full
            raise
        if with_index:
            self.index.sync()

    # -- reading (worker thread) ---------------------------------------------------------

    def read(
        self, from_offset: int, end_offset: int, max_messages: int, max_bytes: int
    ) -> tuple[list[Message], int]:
        """Messages in ``[from_offset, end_offset)`` up to the limits, and the bytes they
        took; the first one is returned whatever its size (blocking).

        The hot path of every consumer that is behind: one tight loop per chunk with
        the same checks as :meth:`_frames_from` (length, CRC, offset sequence), but no
        generator and no per-record ``Frame`` object.
        """
        run = _ReadRun(from_offset, end_offset, max_messages, max_bytes)
        position, run.expected_offset = self._position_for_offset(from_offset)
        limit = self.readable_bytes
        chunk_bytes = READ_CHUNK_BYTES
        while position < limit and not run.finished:
            if self.damaged_at_offset is not None and run.expected_offset >= self.damaged_at_offset:
                raise self._corrupt("damaged record found on open", run.expected_offset)
            data = os.pread(self._file_descriptor, min(limit - position, chunk_bytes), position)
            try:
                consumed, needed_bytes = run.decode_chunk(data)
            except record.FrameError as error:
                raise self._corrupt(error.reason, run.expected_offset) from error
            if consumed == 0 and not run.finished:
                if position + needed_bytes > limit or len(data) == limit - position:
                    raise self._corrupt("record runs past the end", run.expected_offset)
                chunk_bytes = max(chunk_bytes, needed_bytes)
            position += consumed
        return run.messages, run.used_bytes

    def offset_for_timestamp(
        self, timestamp_ms: int, from_offset: int, end_offset: int
    ) -> int | None:
        """First offset in ``[from_offset, end_offset)`` whose timestamp is at least
        ``timestamp_ms``, or ``None`` (blocking)."""
        entry = self.index.entry_for_timestamp(timestamp_ms)
        position, offset = self._position_for_offset(from_offset)
        if entry is not None and self.index.positions[entry] > position:
            position = self.index.positions[entry]
            offset = self.base_offset + self.index.relative_offsets[entry]
        for _data, frame in self._frames_from(offset, (position, offset)):
            if frame.offset >= end_offset:
                return None
            if frame.offset >= from_offset and frame.timestamp_ms >= timestamp_ms:
                return frame.offset
        return None

    def _position_for_offset(self, offset: int) -> tuple[int, int]:
        entry = self.index.entry_for_offset(offset - self.base_offset)
        if entry is None:
            return record.SEGMENT_HEADER_BYTES, self.base_offset
        return self.index.positions[entry], self.base_offset + self.index.relative_offsets[entry]

    def _frames_from(
        self, wanted_offset: int, start: tuple[int, int]
    ) -> Iterator[tuple[bytes, record.Frame]]:
        """Checked frames from a known (position, offset) up to ``readable_bytes``, read in
        chunks. Raises :class:`CorruptRecord` at damage or at an offset out of sequence."""
        position, expected_offset = start
        limit = self.readable_bytes
        chunk_bytes = READ_CHUNK_BYTES
        while position < limit:
            if self.damaged_at_offset is not None and expected_offset >= self.damaged_at_offset:
                raise self._corrupt("damaged record found on open", expected_offset)
            data = os.pread(self._file_descriptor, min(limit - position, chunk_bytes), position)
            cursor = 0
            while cursor < len(data):
                length = record.frame_length(data, cursor)
                if length is None or cursor + length > len(data):
                    if length is not None and position + cursor + length > limit:
                        raise self._corrupt("record runs past the end", expected_offset)
                    chunk_bytes = max(chunk_bytes, length or 0)
                    break
                try:
                    frame = record.read_frame(data, cursor)
                except record.FrameError as error:
                    raise self._corrupt(error.reason, expected_offset) from error
                if frame.offset != expected_offset:
                    raise self._corrupt("offset out of sequence", expected_offset)
                yield data, frame
                expected_offset += 1
                cursor = frame.end
            if cursor == 0 and len(data) == limit - position:
                raise self._corrupt("short record at the end", expected_offset)
            position += cursor

    def _corrupt(self, reason: str, offset: int) -> CorruptRecord:
        return CorruptRecord(
            f"segment {self.path}: {reason} at offset {offset}", path=str(self.path), offset=offset
        )


def _write_all(file_descriptor: int, data: bytes, position: int) -> None:
    """``pwrite`` until every byte is written (a regular file may take fewer)."""
    written = os.pwrite(file_descriptor, data, position)
    if written == len(data):  # the usual case: one call wrote it all
        return
    view = memoryview(data)[written:]
    position += written
    while view:
        written = os.pwrite(file_descriptor, view, position)
        view = view[written:]
        position += written


def _log_dropped(path: Path, position: int, dropped_bytes: int, reason: str) -> None:
    logger.warning(
        "segment %s: dropped %d bytes of damaged tail at position %d (%s)",
        path,
        dropped_bytes,
        position,
        reason,
    )


class _ReadRun:
    """The state of one :meth:`Segment.read`: what is wanted, what was decoded so far."""

    __slots__ = (
        "end_offset",
        "expected_offset",
        "finished",
        "from_offset",
        "max_bytes",
        "max_messages",
        "messages",
        "used_bytes",
    )

    def __init__(
        self, from_offset: int, end_offset: int, max_messages: int, max_bytes: int
    ) -> None:
        self.from_offset = from_offset
        self.end_offset = end_offset
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.expected_offset = 0
        self.messages: list[Message] = []
        self.used_bytes = 0
        self.finished = False

    def decode_chunk(self, data: bytes) -> tuple[int, int]:
        """Decode whole records of ``data``; return the bytes consumed and, if a record
        was cut by the chunk's end, the bytes that record needs (else 0).

        Raises :class:`record.FrameError` at a bad length, CRC or offset.
        """
        view = memoryview(data)
        size = len(data)
        unpack = record.RECORD_HEADER.unpack_from
        header_bytes = record.RECORD_HEADER_BYTES
        prefix_bytes = record.FRAME_PREFIX_BYTES
        minimum_length = record.OFFSET_AND_TIMESTAMP.size
        messages = self.messages
        cursor = 0
        while cursor + header_bytes <= size:
            length, crc, offset, timestamp_ms = unpack(data, cursor)
            if length < minimum_length or length > record.MAX_RECORD_BYTES:
                raise record.FrameError(f"bad record length {length}", cursor)
            end = cursor + prefix_bytes + length
            if end > size:
                return cursor, prefix_bytes + length
            if crc32c(view[cursor + prefix_bytes : end]) != crc:
                raise record.FrameError("crc mismatch", cursor)
            if offset != self.expected_offset:
                raise record.FrameError("offset out of sequence", cursor)
            self.expected_offset = offset + 1
            if offset >= self.end_offset:
                self.finished = True
                return cursor, 0
            if offset >= self.from_offset:
                frame_bytes = end - cursor
                if messages and self.used_bytes + frame_bytes > self.max_bytes:
                    self.finished = True
                    return cursor, 0
                messages.append(
                    record.decode_body(
                        view[cursor + header_bytes : end], offset, timestamp_ms, cursor
                    )
                )
                self.used_bytes += frame_bytes
                if len(messages) >= self.max_messages or self.used_bytes >= self.max_bytes:
                    self.finished = True
                    return end, 0
            cursor = end
        return cursor, header_bytes if cursor < size else 0
