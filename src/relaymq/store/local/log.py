"""The partition log: the ordered segments of one stream partition on disk.

Owns, for one ``<data_dir>/streams/<namespace>/<stream>/<partition>/``
directory: offset assignment, segment roll, visibility of appended records
(readers see an append only once it is as durable as the policy promises),
rollback after a failed write or fsync, trim (with the persisted logical start
offset in ``start.offset``), retention, and opening with recovery.

Threading: appends, rolls and deletions run on the event loop (a page-cache
``pwrite`` of one buffer per batch); so does the ``posix_fallocate`` that tops up the
active segment's reserved space, but between fsync passes, not in an append (see
:meth:`LocalPartitionLog.finish_sync`). A deleted segment's files are unlinked there
and closed on the store's closer thread (:mod:`.closer`); syncs run on the committer's
worker process or threads; reads of the newest messages are served from memory
(:mod:`.recent`), other reads and scans run in worker threads on pinned segments. A segment
being sealed (rolled) or closed is cut back to its data end before its final
fsync.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from relaymq.core.message import Message
from relaymq.errors import CorruptRecord, StorageFull, StoreClosed
from relaymq.store.base import (
    AppendDone,
    AppendListeners,
    FsyncPolicy,
    PartitionStats,
    RetentionLimits,
    settle_waiter,
    wait_for_append,
)
from relaymq.store.local import record
from relaymq.store.local.closer import DeletedFileCloser
from relaymq.store.local.commit import GroupCommitter
from relaymq.store.local.recent import RecentMessages
from relaymq.store.local.segment import Segment, SegmentMark, segment_file_name
from relaymq.store.local.space import (
    FreeSpaceGuard,
    SpaceReserver,
    fsync_directory,
    make_directories,
    read_start_offset,
    translate_os_error,
    write_start_offset,
)

logger = logging.getLogger("relaymq.store")

START_OFFSET_FILE = "start.offset"
# Rollbacks remembered to tell an append whether its records were cut (they are rare).
_REMEMBERED_ROLLBACKS = 64


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How a partition log writes."""

    fsync: FsyncPolicy
    segment_bytes: int


@dataclass(slots=True)
class SyncJob:
    """One partition's share of an fsync pass: what to sync and what it makes durable."""

    segments: list[tuple[Segment, bool]]
    sync_directory: bool
    active: Segment
    mark: SegmentMark
    generation: int


@dataclass(slots=True)
class _Durable:
    segment: Segment
    mark: SegmentMark
    rollbacks: list[tuple[int, int]] = field(default_factory=list)


class _SyncedAppend:
    """What a written append does once its pass is over: fail it if a rollback cut
    its records meanwhile, then tell its caller. An object with slots, not a closure:
    thousands wait during a long fsync stall, and each young garbage collection
    walks one object instead of a function, its closure and a cell per variable
    (``docs/performance.md``, finding 48)."""

    __slots__ = ("done", "end_offset", "first_offset", "first_timestamp_ms", "generation", "log")

    def __init__(
        self,
        log: LocalPartitionLog,
        first_offset: int,
        end_offset: int,
        first_timestamp_ms: int,
        done: AppendDone,
    ) -> None:
        self.log = log
        self.generation = log._generation
        self.first_offset = first_offset
        self.end_offset = end_offset
        self.first_timestamp_ms = first_timestamp_ms
        self.done = done

    def __call__(self, error: BaseException | None) -> None:
        log = self.log
        # Only a rollback moves the generation on: while it stands, none cut these records.
        if (
            error is None
            and log._generation != self.generation
            and log._was_rolled_back(self.generation, self.end_offset)
        ):
            error = StorageFull("the disk is full; the append was rolled back")
        if error is None:
            log._note_first_timestamp(self.first_offset, self.first_timestamp_ms)
        self.done(error)


class LocalPartitionLog:
    """A :class:`relaymq.store.base.PartitionLog` on segment files. Open with :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        partition: int,
        segments: list[Segment],
        start_offset: int,
        settings: LogSettings,
        committer: GroupCommitter,
        guard: FreeSpaceGuard,
        reserver: SpaceReserver,
        closer: DeletedFileCloser,
    ) -> None:
        self.directory = directory
        self.partition = partition
        self._segments = segments
        self._base_offsets = [segment.base_offset for segment in segments]
        self._start_offset = start_offset
        self._settings = settings
        self._committer = committer
        self._guard = guard
        self._reserver = reserver
        self._closer = closer
        active = segments[-1]
        self._next_offset = active.next_offset
        self._visible_next_offset = active.next_offset
        self._durable = _Durable(active, active.mark())
        self._generation = 0
        self._unsynced: dict[Segment, bool] = {}
        self._directory_dirty = False
        self._closing = False
        self._closed = False
        self._first_timestamp: tuple[int, int | None] | None = None
        self._recent = RecentMessages()
        self._listeners = AppendListeners()

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        directory: Path,
        partition: int,
        settings: LogSettings,
        committer: GroupCommitter,
        guard: FreeSpaceGuard,
        reserver: SpaceReserver,
        closer: DeletedFileCloser,
    ) -> LocalPartitionLog:
        """Open the partition in ``directory`` (creating it if missing, recovering its tail)."""
        segments, start_offset = await asyncio.to_thread(_open_files, directory)
        log = cls(
            directory,
            partition,
            segments,
            start_offset,
            settings,
            committer,
            guard,
            reserver,
            closer,
        )
        await log._refresh_first_timestamp()
        return log

    # -- offsets -----------------------------------------------------------------------------

    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    @property
    def first_offset(self) -> int:
        """The lowest offset still retained (equals ``next_offset`` when empty)."""
        return min(
            max(self._start_offset, self._segments[0].base_offset), self._visible_next_offset
        )

    @property
    def next_offset(self) -> int:
        """One past the last readable message. Appends still waiting for their fsync
        are not counted: until they are confirmed nobody may act on them (a purge or a
        ``latest`` start would otherwise skip them)."""
        return self._visible_next_offset

    # -- appending ---------------------------------------------------------------------------

    async def append(self, messages: Sequence[Message]) -> int:
        """Append ``messages`` in order (one write) and return the first one's offset,
        once the records are as durable as the fsync policy promises, and readable
        (:meth:`start_append`, awaited)."""
        return await wait_for_append(self, messages)

    def start_append(self, messages: Sequence[Message], done: AppendDone) -> int:
        """Write ``messages`` in order (one write) now and return the first one's offset.

        ``done`` is called on the event loop once the records are as durable as
        the fsync policy promises, and readable: with ``None``, or with the error
        that failed them (:class:`StorageFull` when the disk is full; nothing of the
        call is then left on disk or becomes visible). Under ``fsync=never`` it is
        called before this returns. A write that cannot start raises instead, and
        ``done`` is never called.
        """
        if self._closing:  # a closed log is closing too: one test for both on this path
            self._check_open()
            raise StoreClosed(f"partition log {self.directory} is closing")
        first_offset = self._next_offset
        if not messages:
            done(None)
            return first_offset
        self._guard.check()
        active = self._segments[-1]
        if active.size_bytes >= self._settings.segment_bytes and active.message_count:
            active = self._roll(active)
        for position, message in enumerate(messages):
            message.partition = self.partition
            message.offset = first_offset + position
        batch = record.encode_batch(messages, first_offset)
        try:
            active.append(batch, messages, self._reserver)
        except OSError as error:
            self._guard.forget()
            raise translate_os_error(error) from error
        self._recent.add(messages, batch.sizes)
        end_offset = first_offset + len(messages)
        self._next_offset = end_offset
        first_timestamp_ms = messages[0].timestamp_ms
        if self._settings.fsync is FsyncPolicy.NEVER:
            self._publish(active, active.size_bytes, end_offset)
            self._listeners.tell()
            self._note_first_timestamp(first_offset, first_timestamp_ms)
            done(None)
            return first_offset
        synced = _SyncedAppend(self, first_offset, end_offset, first_timestamp_ms, done)
        self._committer.schedule(self, synced)
        return first_offset

    async def flush(self) -> None:
        """Wait until every record written so far is as durable as the policy promises
        and readable: the next pass, when anything is still waiting for one."""
        self._check_open()
        if self._visible_next_offset == self._next_offset:
            return
        waiter: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._committer.schedule(self, partial(settle_waiter, waiter))
        error = await waiter
        if error is not None:
            raise error

    def watch_appends(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` whenever appended records became readable: from the
        fsync pass's completion, before the appends it covered resume."""
        return self._listeners.add(listener)

    def _note_first_timestamp(self, offset: int, timestamp_ms: int) -> None:
        """Fill the cached first timestamp when this append made an empty log non-empty."""
        cached = self._first_timestamp
        if (cached is None or cached[1] is None) and self.first_offset == offset:
            self._first_timestamp = (offset, timestamp_ms)

    def _roll(self, active: Segment) -> Segment:
        """Seal ``active``, which reached ``segment_bytes``, and start the next segment (one
        batch never spans two segments, so a segment may exceed the size by up to one
        batch). The sealed one loses its reserved tail here; the next pass fsyncs it whole."""
        try:
            active.drop_reserved_tail()
            segment = Segment.create(self.directory, self._next_offset)
        except OSError as error:
            self._guard.forget()
            raise translate_os_error(error) from error
        self._unsynced[active] = True
        self._segments.append(segment)
        self._base_offsets.append(segment.base_offset)
        self._directory_dirty = True
        self._committer.forget(self)  # the sealed segment's last sync runs on a thread
        return segment

    def _publish(self, segment: Segment, size_bytes: int, next_offset: int) -> None:
        """Let readers see everything up to ``size_bytes`` of ``segment`` (and all before it)."""
        for earlier in self._segments:
            if earlier is segment:
                break
            earlier.readable_bytes = earlier.size_bytes
        segment.readable_bytes = max(segment.readable_bytes, size_bytes)
        self._visible_next_offset = max(self._visible_next_offset, next_offset)

    def _was_rolled_back(self, generation: int, end_offset: int) -> bool:
        return any(
            rolled_generation > generation and offset < end_offset
            for rolled_generation, offset in self._durable.rollbacks
        )

    # -- the committer's side (see relaymq.store.local.commit) ------------------------------

    def prepare_sync(self) -> SyncJob:
        """Snapshot what is written and pin the files a pass must fsync (event loop)."""
        active = self._segments[-1]
        segments = [*self._unsynced.items(), (active, self._closing)]
        self._unsynced.clear()
        for segment, _with_index in segments:
            segment.acquire()
        job = SyncJob(segments, self._directory_dirty, active, active.mark(), self._generation)
        self._directory_dirty = False
        return job

    def run_sync(self, job: SyncJob) -> None:
        """fsync the job's files, and the directory if a segment was created (worker thread)."""
        for segment, with_index in job.segments:
            segment.sync(with_index=with_index)
        if job.sync_directory:
            fsync_directory(self.directory)

    def datasync_target(self, job: SyncJob) -> tuple[Segment, int] | None:
        """``(segment, descriptor)`` when the pass needs only an ``fdatasync`` of the
        active segment (no sealed segment, index or directory to sync)."""
        if job.sync_directory or len(job.segments) != 1:
            return None
        segment, with_index = job.segments[0]
        descriptor = None if with_index else segment.datasync_descriptor()
        return None if descriptor is None else (segment, descriptor)

    def finish_sync(self, job: SyncJob, error: OSError | None) -> BaseException | None:
        """Publish what the pass made durable, or roll back to the last durable state."""
        for segment, _with_index in job.segments:
            segment.release()
        if job.generation != self._generation:
            return StorageFull("the disk is full; the append was rolled back")
        if error is None:
            self._publish(job.active, job.mark.size_bytes, job.mark.next_offset)
            # Passes of one log can overlap (a close's sync_now beside a batch pass); an
            # older snapshot finishing last must not move the durable mark backwards, or
            # a later failed fsync would roll back records already confirmed.
            if job.mark.next_offset >= self._durable.mark.next_offset:
                self._durable.segment, self._durable.mark = job.active, job.mark
            self._listeners.tell()
            if not self._closing:
                # Now, before the committer starts its next batch pass: posix_fallocate
                # runs on the event loop and can wait for the disk, and right after the
                # disk answered a pass is when a stall is least likely (an append's own
                # reservation would often queue behind a pass in flight).
                self._active.reserve_ahead(self._reserver, self._guard)
            return None
        self._rollback(job)
        self._guard.forget()
        return translate_os_error(error)

    def _rollback(self, job: SyncJob) -> None:
        """Cut everything written after the last durable state (an fsync failed)."""
        durable = self._durable
        logger.warning(
            "partition %s: fsync failed, rolling back to offset %d",
            self.directory,
            durable.mark.next_offset,
        )
        while len(self._segments) > 1 and self._active is not durable.segment:
            segment = self._segments.pop()
            self._base_offsets.pop()
            self._unsynced.pop(segment, None)
            segment.delete(self._closer)
        self._active.restore(durable.mark)
        self._next_offset = self._active.next_offset
        self._recent.cut(self._next_offset)
        self._committer.forget(self)
        for segment, with_index in job.segments:
            if segment in self._segments and segment is not self._active:
                self._unsynced[segment] = self._unsynced.get(segment, False) or with_index
        self._directory_dirty = self._directory_dirty or job.sync_directory
        self._generation += 1
        durable.rollbacks.append((self._generation, self._next_offset))
        del durable.rollbacks[:-_REMEMBERED_ROLLBACKS]

    # -- reading -------------------------------------------------------------------------------

    async def read(self, from_offset: int, max_messages: int, max_bytes: int) -> list[Message]:
        """Messages from ``from_offset`` (clamped up to ``first_offset``) in offset order; at
        least one if any exists, whatever its size. Raises :class:`CorruptRecord` at a
        damaged record in an older segment."""
        self._check_open()
        start = max(from_offset, self.first_offset)
        end = self._visible_next_offset
        if start >= end or max_messages <= 0:
            return []
        recent_offset = self._recent.first_offset
        if recent_offset is not None and start >= recent_offset:
            return self._recent.read(start, end, max_messages, max_bytes)
        segments = self._segments[self._segment_index(start) :]
        for segment in segments:
            segment.acquire()
        try:
            messages = await asyncio.to_thread(
                _read_segments, segments, start, end, max_messages, max_bytes
            )
        finally:
            for segment in segments:
                segment.release()
        for message in messages:
            message.partition = self.partition
        return messages

    def _segment_index(self, offset: int) -> int:
        return max(bisect.bisect_right(self._base_offsets, offset) - 1, 0)

    async def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """The first retained offset whose timestamp is >= ``timestamp_ms`` (``next_offset``
        when none). Skips whole segments by their largest timestamp, then scans from the
        sparse index entry that bounds the time."""
        self._check_open()
        first, end = self.first_offset, self._visible_next_offset
        for segment in self._segments[self._segment_index(first) :]:
            if segment.base_offset >= end:
                break
            if segment.max_timestamp_ms < timestamp_ms or segment.next_offset <= first:
                continue
            segment.acquire()
            try:
                found = await asyncio.to_thread(
                    segment.offset_for_timestamp,
                    timestamp_ms,
                    max(first, segment.base_offset),
                    end,
                )
            finally:
                segment.release()
            if found is not None:
                return found
        return end

    # -- dropping old data --------------------------------------------------------------------

    async def trim(self, before_offset: int) -> int:
        """Drop messages below ``before_offset``: persist the logical start offset first
        (so trimmed messages are never served again, even after a restart), then delete
        every segment entirely below it except the active one."""
        self._check_open()
        target = min(before_offset, self._visible_next_offset)
        if target <= self.first_offset:
            return self.first_offset
        await asyncio.to_thread(write_start_offset, self.directory / START_OFFSET_FILE, target)
        self._start_offset = max(self._start_offset, target)
        while len(self._segments) > 1 and self._segments[0].next_offset <= self._start_offset:
            self._delete_oldest()
        await self._refresh_first_timestamp()
        return self.first_offset

    async def enforce_retention(self, limits: RetentionLimits, now_ms: int) -> int:
        """Delete whole oldest segments (never the active one) while they break ``limits``:
        older than ``max_age_ms`` by their newest timestamp, or while the rest alone still
        holds at least ``max_bytes`` / ``max_messages``. Returns the new ``first_offset``."""
        self._check_open()
        dropped = False
        while len(self._segments) > 1 and self._breaks(self._segments[0], limits, now_ms):
            self._delete_oldest()
            dropped = True
        if dropped:
            await self._refresh_first_timestamp()
        return self.first_offset

    def _breaks(self, oldest: Segment, limits: RetentionLimits, now_ms: int) -> bool:
        if oldest.next_offset > self._visible_next_offset:
            return False
        if limits.max_age_ms is not None and oldest.max_timestamp_ms < now_ms - limits.max_age_ms:
            return True
        remaining_bytes = self._total_bytes() - oldest.size_bytes
        if limits.max_bytes is not None and remaining_bytes >= limits.max_bytes:
            return True
        if limits.max_messages is not None:
            return self._next_offset - oldest.next_offset >= limits.max_messages
        return False

    def _delete_oldest(self) -> None:
        segment = self._segments.pop(0)
        self._base_offsets.pop(0)
        self._unsynced.pop(segment, None)
        segment.delete(self._closer)

    def _total_bytes(self) -> int:
        return sum(segment.size_bytes for segment in self._segments)

    async def _refresh_first_timestamp(self) -> None:
        """Cache the timestamp of the message at ``first_offset`` for :meth:`stats`."""
        first = self.first_offset
        if first >= self._visible_next_offset:
            self._first_timestamp = (first, None)
            return
        messages = await self.read(first, 1, 1)
        self._first_timestamp = (first, messages[0].timestamp_ms if messages else None)

    # -- state -------------------------------------------------------------------------------

    def stats(self) -> PartitionStats:
        """Counts and bounds of what the partition holds; ``bytes`` is the size on disk."""
        first = self.first_offset
        messages = self._visible_next_offset - first
        return PartitionStats(
            first_offset=first,
            next_offset=self._visible_next_offset,
            messages=messages,
            bytes=self._total_bytes(),
            first_timestamp_ms=self._first_timestamp_ms(first) if messages else None,
            last_timestamp_ms=self._last_timestamp_ms() if messages else None,
        )

    def _first_timestamp_ms(self, first: int) -> int | None:
        if self._first_timestamp is not None and self._first_timestamp[0] == first:
            return self._first_timestamp[1]
        segment = self._segments[self._segment_index(first)]
        return segment.first_timestamp_ms if segment.base_offset == first else None

    def _last_timestamp_ms(self) -> int | None:
        for segment in reversed(self._segments):
            if segment.last_timestamp_ms is not None:
                return segment.last_timestamp_ms
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"partition log {self.directory} is closed")

    async def close(self) -> None:
        """Cut the active segment's reserved tail, fsync every file (log and index)
        whatever the policy, then close them."""
        if self._closed:
            return
        self._closing = True
        try:
            self._active.drop_reserved_tail()
        except OSError as error:
            # Harmless: recovery reads a zero tail as the end of the data.
            logger.warning("partition %s: could not cut reserved space: %s", self.directory, error)
        try:
            await self._committer.sync_now([self])
        finally:
            self._closed = True
            for segment in self._segments:
                segment.close()


def _read_segments(
    segments: list[Segment], start: int, end: int, max_messages: int, max_bytes: int
) -> list[Message]:
    """Read across segments until a limit is reached (worker thread).

    Segments are contiguous, so a segment starting after the next wanted offset means
    the offsets in between are unreadable: only a segment found damaged on open (its
    readable part ends early) leaves such a gap. Skipping it would silently drop
    confirmed messages, so the read stops there: it returns what it has, or raises
    :class:`CorruptRecord` when the gap is the first thing asked for.
    """
    messages: list[Message] = []
    used_bytes = 0
    wanted = start
    for segment in segments:
        if segment.base_offset >= end:
            break
        if segment.base_offset > wanted:
            if messages:
                break
            raise CorruptRecord(
                f"offsets {wanted} to {segment.base_offset - 1} are unreadable (a damaged segment)",
                offset=wanted,
            )
        if segment.next_offset <= wanted:
            continue
        found, found_bytes = segment.read(
            wanted,
            end,
            max_messages - len(messages),
            max_bytes - used_bytes if messages else max_bytes,
        )
        if messages and not found:
            break
        messages.extend(found)
        used_bytes += found_bytes
        if found:
            wanted = found[-1].offset + 1
        if len(messages) >= max_messages or used_bytes >= max_bytes:
            break
    return messages


def _open_files(directory: Path) -> tuple[list[Segment], int]:
    """Open (or create) every segment of a partition directory (blocking).

    Returns the segments, oldest first, and the logical start offset. When the start
    offset lies beyond the recovered end (records lost under ``fsync=never``), a new
    empty segment starts at the start offset so offsets handed out never go back.
    """
    make_directories(directory)
    start_offset = read_start_offset(directory / START_OFFSET_FILE)
    paths = sorted(path for path in directory.glob("*.log") if path.stem.isdigit())
    segments: list[Segment] = []
    try:
        for position, path in enumerate(paths):
            segments.append(Segment.open(path, is_last=position == len(paths) - 1))
        _log_gaps(segments, start_offset)
        if not segments or segments[-1].next_offset < start_offset:
            base_offset = max(start_offset, segments[-1].next_offset if segments else 0)
            segments.append(Segment.create(directory, base_offset))
            fsync_directory(directory)
    except BaseException:
        for segment in segments:
            segment.close()
        raise
    return segments, start_offset


def _log_gaps(segments: list[Segment], start_offset: int) -> None:
    """Log retained offsets no segment holds: an older segment whose records were lost
    (its tail read as zeros) before the next one. Reads stop at such a gap."""
    for earlier, later in itertools.pairwise(segments):
        if earlier.damaged_at_offset is not None or earlier.next_offset < start_offset:
            continue  # damage already logged, or a gap below the start (trimmed)
        if earlier.next_offset < later.base_offset:
            logger.error(
                "segment %s ends at offset %d but the next starts at %d; reads stop there",
                earlier.path,
                earlier.next_offset,
                later.base_offset,
            )


__all__ = ["LocalPartitionLog", "LogSettings", "segment_file_name"]
