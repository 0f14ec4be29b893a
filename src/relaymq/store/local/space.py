"""Disk space and disk errors: the cheap free-space check before appends, the
translation of ``OSError`` into the RelayMQ error tree, and durable small-file
and directory helpers used by the log."""

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
_START_OFFSET = struct.Struct("<QI")  # offset, crc32c of the offset bytes


class FreeSpaceGuard:
    """Refuses appends early while the disk holding ``path`` has less than ``min_free_bytes``."""

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

    def forget(self) -> None:
        """Look the free space up again on the next check (after a disk-full error)."""
        self._checked_at = float("-inf")


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
