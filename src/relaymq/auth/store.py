"""Persistence of the security state: API keys (hashed) and namespace quotas.

One SQLite file of its own, ``<data_dir>/auth.db``, in WAL mode with
``synchronous=FULL``: a key or quota change is durable when the call returns.
It is small and changes rarely, so every row is loaded at start and served
from memory afterwards (:class:`relaymq.auth.keys.ApiKeys`,
:class:`relaymq.auth.quotas.Quotas`). Calls block: callers on the event loop
run them in a thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from relaymq.auth.keys import ApiKey
from relaymq.auth.principal import grants_from_json

FILE_NAME = "auth.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    salt BLOB NOT NULL,
    digest BLOB NOT NULL,
    grants TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_at_ms INTEGER,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS quotas (
    namespace TEXT PRIMARY KEY,
    quota TEXT NOT NULL
);
"""

KEY_COLUMNS = (
    "key_id, namespace, name, salt, digest, grants, created_ms, created_by, "
    "expires_at_ms, revoked_at_ms"
)


class AuthStore:
    """The SQLite file holding keys and quotas."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.Lock()
        self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=FULL")
        self.connection.executescript(SCHEMA)
        path.chmod(0o600)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> AuthStore:
        """The store of a server's data directory."""
        return cls(Path(data_dir) / FILE_NAME)

    def close(self) -> None:
        """Close the file."""
        with self.lock:
            self.connection.close()

    # -- keys ------------------------------------------------------------------------------

    def load_keys(self) -> list[ApiKey]:
        """Every stored key."""
        with self.lock:
            rows = self.connection.execute(f"SELECT {KEY_COLUMNS} FROM api_keys").fetchall()
        return [key_from_row(row) for row in rows]

    def save_key(self, key: ApiKey) -> None:
        """Insert or replace a key."""
        row = (
            key.key_id,
            key.namespace,
            key.name,
            key.salt,
            key.digest,
            json.dumps([grant.to_dict() for grant in key.grants]),
            key.created_ms,
            key.created_by,
            key.expires_at_ms,
            key.revoked_at_ms,
        )
        with self.lock:
            self.connection.execute(
                f"INSERT OR REPLACE INTO api_keys ({KEY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                row,
            )

    # -- quotas ----------------------------------------------------------------------------

    def load_quotas(self) -> dict[str, dict[str, Any]]:
        """Every namespace's stored quota overrides."""
        with self.lock:
            rows = self.connection.execute("SELECT namespace, quota FROM quotas").fetchall()
        return {namespace: json.loads(quota) for namespace, quota in rows}

    def save_quota(self, namespace: str, quota: dict[str, Any]) -> None:
        """Insert or replace a namespace's quota overrides."""
        with self.lock:
            self.connection.execute(
                "INSERT OR REPLACE INTO quotas (namespace, quota) VALUES (?, ?)",
                (namespace, json.dumps(quota)),
            )


def key_from_row(row: tuple[Any, ...]) -> ApiKey:
    """An :class:`ApiKey` from its row."""
    key_id, namespace, name, salt, digest, grants, created_ms, created_by, expires, revoked = row
    return ApiKey(
        key_id=key_id,
        namespace=namespace,
        name=name,
        salt=bytes(salt),
        digest=bytes(digest),
        grants=grants_from_json(json.loads(grants)),
        created_ms=created_ms,
        created_by=created_by,
        expires_at_ms=expires,
        revoked_at_ms=revoked,
    )
