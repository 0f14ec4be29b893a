"""The embedded store: partition logs on segment files plus SQLite metadata.

:class:`LocalStore` is both a :class:`relaymq.store.base.LogStore` and a
:class:`relaymq.store.base.MetadataStore`. It owns the data directory layout::

    <data_dir>/metadata.db                                  SQLite (WAL) documents, checkpoints
    <data_dir>/streams/<namespace>/<stream>/<partition>/    one partition (see log.py)

and the resources every partition shares: one group committer (fsync thread),
one free-space guard, one space reserver (``reserve_chunk_bytes`` reserved
ahead of each active segment's write position), one closer thread for the files
of deleted segments, one SQLite thread.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relaymq.errors import InvalidArgument, InvalidConfig, StoreClosed
from relaymq.store.base import FsyncPolicy
from relaymq.store.local.closer import DeletedFileCloser
from relaymq.store.local.commit import FsyncObserver, GroupCommitter
from relaymq.store.local.log import LocalPartitionLog, LogSettings
from relaymq.store.local.metadata import SqliteMetadataStore
from relaymq.store.local.space import (
    FreeSpaceGuard,
    SpaceReserver,
    fsync_directory,
    make_directories,
)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
# Index entries hold 32-bit positions; a segment may overrun its size by one batch.
MAX_SEGMENT_BYTES = 1024 * 1024 * 1024
# Space reserved ahead of each active segment's write position, a chunk at a time: a
# partition holds at most one and a half chunks it has not written. Recovery reads the
# unwritten rest after a crash (up to 96 MiB at this bound), hence the bound.
DEFAULT_RESERVE_CHUNK_BYTES = 4 * 1024 * 1024
MAX_RESERVE_CHUNK_BYTES = 64 * 1024 * 1024


class LocalStore:
    """Segment-file partition logs and SQLite metadata under one data directory.

    Build with ``await LocalStore.open(data_dir, ...)``: the constructor only checks
    settings; the async classmethod also creates directories and opens SQLite.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        reserve_chunk_bytes: int = DEFAULT_RESERVE_CHUNK_BYTES,
        fsync_observer: FsyncObserver | None = None,
    ) -> None:
        if not 1 <= segment_bytes <= MAX_SEGMENT_BYTES:
            raise InvalidConfig(
                "segment_bytes out of range", segment_bytes=segment_bytes, max=MAX_SEGMENT_BYTES
            )
        if not 0 <= reserve_chunk_bytes <= MAX_RESERVE_CHUNK_BYTES:
            raise InvalidConfig(
                "reserve_chunk_bytes out of range (0 turns reserving off)",
                reserve_chunk_bytes=reserve_chunk_bytes,
                max=MAX_RESERVE_CHUNK_BYTES,
            )
        self.data_dir = Path(data_dir)
        self.fsync = FsyncPolicy(fsync)
        self._settings = LogSettings(self.fsync, segment_bytes)
        self._min_free_bytes = min_free_bytes
        self._committer = GroupCommitter(self.fsync, fsync_observer)
        self._guard = FreeSpaceGuard(self.data_dir, min_free_bytes)
        self._reserver = SpaceReserver(reserve_chunk_bytes, segment_bytes)
        self._closer = DeletedFileCloser()
        self._metadata: SqliteMetadataStore | None = None
        self._partitions: dict[tuple[str, str, int], LocalPartitionLog] = {}
        self._opening: dict[tuple[str, str, int], asyncio.Task[LocalPartitionLog]] = {}
        self._closed = False

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        reserve_chunk_bytes: int = DEFAULT_RESERVE_CHUNK_BYTES,
        fsync_observer: FsyncObserver | None = None,
    ) -> LocalStore:
        """Create the data directory if missing and open the metadata database."""
        store = cls(
            data_dir,
            fsync=fsync,
            segment_bytes=segment_bytes,
            min_free_bytes=min_free_bytes,
            reserve_chunk_bytes=reserve_chunk_bytes,
            fsync_observer=fsync_observer,
        )
        await asyncio.to_thread(make_directories, store.data_dir / "streams")
        store._metadata = await SqliteMetadataStore.open(store.data_dir / "metadata.db")
        await store._committer.start_process()
        return store

    @property
    def fsync_passes(self) -> int:
        """fsync passes run so far (each covers every partition that had written)."""
        return self._committer.passes

    # -- LogStore -----------------------------------------------------------------------------

    def _stream_directory(self, namespace: str, stream: str) -> Path:
        for name in (namespace, stream):
            if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
                raise InvalidArgument(f"name {name!r} cannot be a directory name")
        return self.data_dir / "streams" / namespace / stream

    async def open_partition(
        self, namespace: str, stream: str, partition: int
    ) -> LocalPartitionLog:
        """Open (creating if missing, recovering if damaged) one partition's log; opening
        the same partition twice returns the same object."""
        self._check_open()
        if partition < 0:
            raise InvalidArgument("partition must be >= 0", partition=partition)
        key = (namespace, stream, partition)
        if key in self._partitions:
            return self._partitions[key]
        if key not in self._opening:
            directory = self._stream_directory(namespace, stream) / str(partition)
            self._opening[key] = asyncio.ensure_future(
                LocalPartitionLog.open(
                    directory,
                    partition,
                    self._settings,
                    self._committer,
                    self._guard,
                    self._reserver,
                    self._closer,
                )
            )
        try:
            log = await asyncio.shield(self._opening[key])
        finally:
            if self._opening.get(key) is not None and self._opening[key].done():
                del self._opening[key]
        self._partitions[key] = log
        return log

    async def delete_stream(self, namespace: str, stream: str) -> None:
        """Close (if still open) and delete every partition of a stream."""
        self._check_open()
        directory = self._stream_directory(namespace, stream)
        for key in [key for key in self._partitions if key[:2] == (namespace, stream)]:
            await self._partitions.pop(key).close()
        await asyncio.to_thread(_remove_tree, directory)

    # -- MetadataStore --------------------------------------------------------------------------

    def _meta(self) -> SqliteMetadataStore:
        self._check_open()
        if self._metadata is None:
            raise StoreClosed("LocalStore was not opened; use `await LocalStore.open(...)`")
        return self._metadata

    async def put_document(self, kind: str, key: str, document: dict[str, Any]) -> None:
        """Create or replace the document ``(kind, key)``."""
        await self._meta().put_document(kind, key, document)

    async def delete_document(self, kind: str, key: str) -> None:
        """Delete a document; deleting a missing one is not an error."""
        await self._meta().delete_document(kind, key)

    async def list_documents(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``, in key order."""
        return await self._meta().list_documents(kind)

    async def save_checkpoints(self, checkpoints: Sequence[tuple[str, bytes]]) -> None:
        """Durably store many ``(key, state)`` checkpoints in one transaction."""
        await self._meta().save_checkpoints(checkpoints)

    async def load_checkpoint(self, key: str) -> bytes | None:
        """The last saved checkpoint of ``key``, or ``None``."""
        return await self._meta().load_checkpoint(key)

    async def delete_checkpoints(self, key_prefix: str) -> None:
        """Delete every checkpoint whose key starts with ``key_prefix``."""
        await self._meta().delete_checkpoints(key_prefix)

    # -- lifetime ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    async def close(self) -> None:
        """fsync and close every partition, close the metadata database, stop the threads."""
        if self._closed:
            return
        self._closed = True
        partitions = list(self._partitions.values())
        self._partitions.clear()
        try:
            for log in partitions:
                await log.close()
        finally:
            try:
                await self._committer.close()
            finally:
                await self._closer.wait_closed()
                if self._metadata is not None:
                    await self._metadata.close()


def _remove_tree(directory: Path) -> None:
    """Delete a stream directory and make its disappearance durable."""
    if directory.exists():
        shutil.rmtree(directory)
        fsync_directory(directory.parent)
