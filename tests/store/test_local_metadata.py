"""The SQLite metadata store when SQLite itself fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relaymq.errors import RelayError
from relaymq.store.local.metadata import SqliteMetadataStore


class FailingCommit:
    """A connection whose next COMMIT fails the way a full disk makes it fail."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.failures_left = 1

    def execute(self, statement: str, *arguments: Any) -> Any:
        if statement == "COMMIT" and self.failures_left:
            self.failures_left -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(statement, *arguments)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


async def test_a_failed_commit_does_not_block_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteMetadataStore.open(tmp_path / "metadata.db")
    real_database = store._database
    failing: list[FailingCommit] = []

    def database() -> Any:
        if not failing:
            failing.append(FailingCommit(real_database()))
        return failing[0]

    monkeypatch.setattr(store, "_database", database)
    with pytest.raises((RelayError, sqlite3.Error)):
        await store.save_checkpoints([("a/b/0", b"lost")])
    await store.save_checkpoints([("a/b/0", b"kept")])
    assert await store.load_checkpoint("a/b/0") == b"kept"
    await store.close()
