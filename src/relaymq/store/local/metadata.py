"""Metadata documents and cursor checkpoints in SQLite (``<data_dir>/metadata.db``).

SQLite runs in WAL mode with ``synchronous=FULL``: a call returns once its
transaction is in the fsynced WAL. Every call runs on one dedicated thread that
owns the connection (sqlite3 connections belong to the thread that made them),
so the event loop never waits on disk and calls are applied in order.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from relaymq.errors import RelayError, StorageFull, StoreClosed, Unavailable

_Result = TypeVar("_Result")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS documents ("
    " kind TEXT NOT NULL, key TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (kind, key))",
    "CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, state BLOB NOT NULL)",
)


class SqliteMetadataStore:
    """A :class:`relaymq.store.base.MetadataStore` on SQLite. Open with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relaymq-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SqliteMetadataStore:
        """Open (creating if missing) the database at ``path``."""
        store = cls(path)
        await store._call(store._connect)
        return store

    def _connect(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            connection.execute(statement)
        self._connection = connection

    async def _call(self, function: Callable[..., _Result], *arguments: Any) -> _Result:
        if self._closed:
            raise StoreClosed("metadata store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *arguments)
        except sqlite3.Error as error:
            raise _translate(error) from error

    def _database(self) -> sqlite3.Connection:
        assert self._connection is not None
        return self._connection

    async def put_document(self, kind: str, key: str, document: dict[str, Any]) -> None:
        """Create or replace the document ``(kind, key)``."""
        text = json.dumps(document, separators=(",", ":"))
        await self._call(
            self._write,
            "INSERT INTO documents (kind, key, json) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, key) DO UPDATE SET json = excluded.json",
            [(kind, key, text)],
        )

    async def delete_document(self, kind: str, key: str) -> None:
        """Delete a document; deleting a missing one is not an error."""
        await self._call(
            self._write, "DELETE FROM documents WHERE kind = ? AND key = ?", [(kind, key)]
        )

    async def list_documents(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``, in key order."""
        rows = await self._call(
            self._query, "SELECT json FROM documents WHERE kind = ? ORDER BY key", (kind,)
        )
        return [json.loads(text) for (text,) in rows]

    async def save_checkpoints(self, checkpoints: Sequence[tuple[str, bytes]]) -> None:
        """Store many ``(key, state)`` checkpoints in one durable transaction."""
        if not checkpoints:
            return
        await self._call(
            self._write,
            "INSERT INTO checkpoints (key, state) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET state = excluded.state",
            list(checkpoints),
        )

    async def load_checkpoint(self, key: str) -> bytes | None:
        """The last saved checkpoint of ``key``, or ``None``."""
        rows = await self._call(self._query, "SELECT state FROM checkpoints WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    async def delete_checkpoints(self, key_prefix: str) -> None:
        """Delete every checkpoint whose key starts with ``key_prefix``."""
        # substr() rather than LIKE: prefixes may hold '%' or '_'.
        await self._call(
            self._write,
            "DELETE FROM checkpoints WHERE substr(key, 1, ?) = ?",
            [(len(key_prefix), key_prefix)],
        )

    def _write(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        database = self._database()
        database.execute("BEGIN IMMEDIATE")
        try:
            database.executemany(statement, rows)
            database.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full, I/O error) can leave the transaction open;
            # every later BEGIN would then fail until restart.
            if database.in_transaction:
                database.execute("ROLLBACK")
            raise

    def _query(self, statement: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._database().execute(statement, parameters).fetchall()

    async def close(self) -> None:
        """Close the connection (every transaction is already durable) and stop the thread."""
        if self._closed:
            return
        await self._call(self._disconnect)
        self._closed = True
        self._executor.shutdown(wait=True)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _translate(error: sqlite3.Error) -> RelayError:
    """SQLite's errors in the RelayMQ error tree (SQLITE_FULL is a full disk)."""
    if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull("the disk is full (metadata)")
    return Unavailable(f"metadata store error: {error}")
