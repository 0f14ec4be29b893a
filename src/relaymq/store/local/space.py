"""Disk space and disk errors: the cheap free-space check before appends, space
reserved ahead of the active segments' write positions, the translation of
``OSError`` into the RelayMQ error tree, and durable small-file and directory
helpers used by the log."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import time
from pathlib import Path

from crc32c import crc32c

from relaymq.errors import RelayError, StorageFull, Unavailable

# Free space is looked up at most this often; a disk does not fill in a millisecond.
FREE_SPACE_CHECK_INTERVAL_SECONDS = 1.0
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# posix_fallocate errors that mean "this file system cannot reserve space".
_UNSUPPORTED_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})
_START_OFFSET = struct.Struct("<QI")  # offset, crc32c of the offset bytes


class FreeSpaceGuard:
    """Refuses appends early while the disk holding ``path`` has less than ``min_free_bytes``.

    Space the store reserved ahead of its active segments (:class:`SpaceReserver`)
    counts as used, as it is: adding it back would let reservations eat into the
    headroom this guard keeps free for SQLite and everything else on the disk.
    """

    def __init__(self, path: Path, min_free_bytes: int) -> None:
        self._path = path
        self._min_free_bytes = min_free_bytes
        self._checked_at = float("-inf")
        self._free_bytes = 0

    def check(self) -> None:
        """Raise :class:`StorageFull` if free space (looked up at most once a second) is low."""
        if self._min_free_bytes <= 0:
            return
        now = time.monotonic()
        if now - self._checked_at >= FREE_SPACE_CHECK_INTERVAL_SECONDS:
            self._free_bytes = shutil.disk_usage(self._path).free
            self._checked_at = now
        if self._free_bytes < self._min_free_bytes:
            raise StorageFull(
                "free disk space is below min_free_bytes",
                free_bytes=self._free_bytes,
                min_free_bytes=self._min_free_bytes,
            )

    def allows(self, reserved_bytes: int) -> bool:
        """Whether reserving ``reserved_bytes`` more keeps ``min_free_bytes`` free, by
        the free space last looked up (a top-up ahead of need must not eat the headroom
        :meth:`check` keeps for SQLite and everything else)."""
        if self._min_free_bytes <= 0:
            return True
        return self._free_bytes - reserved_bytes >= self._min_free_bytes

    def forget(self) -> None:
        """Look the free space up again on the next check (after a disk-full error)."""
        self._checked_at = float("-inf")


class SpaceReserver:
    """Reserves disk space ahead of active segments' write positions (one per store).

    After each fsync pass the log tops its active segment up
    (:meth:`reserve_ahead`): when less than half a chunk is left past the data, to
    the next multiple of ``chunk_bytes`` at least half a chunk past it, never past
    ``segment_bytes`` (where the segment rolls). An append that would still cross
    the reserved end (the first of a segment, a batch larger than what is left,
    ``fsync=never``) reserves for itself first (:meth:`reserve`). Writing into
    reserved space needs no block allocation when the data is synced, which makes
    that sync cheaper. Only the active segment of a partition holds a
    reservation: at most one and a half chunks.

    When the file system cannot reserve (EOPNOTSUPP, ENOTSUP, EINVAL) the
    reserver turns itself off for the store: appends then grow files as they
    write. ``chunk_bytes == 0`` turns it off from the start.
    """

    def __init__(self, chunk_bytes: int, segment_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.segment_bytes = segment_bytes
        self.enabled = chunk_bytes > 0 and hasattr(os, "posix_fallocate")

    def reserve(self, file_descriptor: int, file_size_bytes: int, needed_bytes: int) -> int:
        """Make a file of ``file_size_bytes`` hold at least ``needed_bytes`` and return
        its new size (unchanged when reserving is off or not needed).

        Raises the ``OSError`` of ``posix_fallocate`` (``ENOSPC``...) only when even
        ``needed_bytes`` do not fit, that is when a plain write would fail too.
        """
        if not self.enabled or needed_bytes <= file_size_bytes:
            return file_size_bytes
        chunk_end = -(-needed_bytes // self.chunk_bytes) * self.chunk_bytes
        target = max(needed_bytes, min(chunk_end, self.segment_bytes))
        try:
            return self._allocate(file_descriptor, file_size_bytes, target)
        except OSError as error:
            if error.errno not in _FULL_ERRNOS or target == needed_bytes:
                raise
        # Less than a chunk left: drop what the failed call may have allocated, then
        # reserve only what this append needs.
        os.ftruncate(file_descriptor, file_size_bytes)
        return self._allocate(file_descriptor, file_size_bytes, needed_bytes)

    def reserve_ahead(self, file_descriptor: int, file_size_bytes: int, size_bytes: int) -> int:
        """When less than half a chunk is reserved past ``size_bytes``, reserve up to the
        next chunk boundary at least half a chunk past it (never past ``segment_bytes``)
        and return the file's new size. Called between fsync passes, so the appends that
        follow find their space reserved and do not call ``posix_fallocate`` on the event
        loop themselves. Raises the ``OSError`` of :meth:`reserve`."""
        half_chunk = self.chunk_bytes // 2
        if not self.enabled or file_size_bytes - size_bytes >= half_chunk:
            return file_size_bytes
        wanted_bytes = min(size_bytes + half_chunk, self.segment_bytes)
        if wanted_bytes <= file_size_bytes:
            return file_size_bytes
        return self.reserve(file_descriptor, file_size_bytes, wanted_bytes)

    def _allocate(self, file_descriptor: int, start: int, end: int) -> int:
        try:
            os.posix_fallocate(file_descriptor, start, end - start)
        except OSError as error:
            if error.errno not in _UNSUPPORTED_ERRNOS:
                raise
            self.enabled = False
            return start
        return end


def translate_os_error(error: OSError) -> RelayError:
    """The RelayMQ error for a failed write or fsync."""
    if error.errno in _FULL_ERRNOS:
        return StorageFull("the disk is full", errno=error.errno)
    return Unavailable(f"storage I/O error: {error}", errno=error.errno)


def fsync_directory(path: Path) -> None:
    """fsync a directory so entries created, renamed or deleted in it survive power loss."""
    file_descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(file_descriptor)
    finally:
        os.close(file_descriptor)


def make_directories(path: Path) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that got a new entry."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_directory(directory.parent)


def write_start_offset(path: Path, offset: int) -> None:
    """Durably replace the small file holding a partition's logical start offset:
    temporary file, fsync, rename, fsync the directory."""
    data = struct.pack("<Q", offset)
    temporary = path.with_suffix(".tmp")
    file_descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(file_descriptor, _START_OFFSET.pack(offset, crc32c(data)))
        os.fsync(file_descriptor)
    finally:
        os.close(file_descriptor)
    os.replace(temporary, path)
    fsync_directory(path.parent)


def read_start_offset(path: Path) -> int:
    """The logical start offset stored at ``path`` (0 when missing or unreadable)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if len(data) != _START_OFFSET.size:
        return 0
    offset, crc = _START_OFFSET.unpack(data)
    return int(offset) if crc32c(struct.pack("<Q", offset)) == crc else 0
