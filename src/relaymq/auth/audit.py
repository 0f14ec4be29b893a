"""The audit log: one JSON line per administrative action — who, what, when, result.

Records go to ``<data_dir>/audit.log`` (appended, flushed per record; mode
0600) and to the ``relaymq.audit`` logger, so they also reach whatever
collects the server log. A record never holds a secret: actors are key ids or
token subjects, never tokens, and request bodies are not recorded. The most
recent records are kept in memory for the ``/v1/audit`` API.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("relaymq.audit")

FILE_NAME = "audit.log"
RECENT_RECORDS = 10_000


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One administrative action and its outcome."""

    time_ms: int
    actor: str  # "key:<id>", "jwt:<sub>", "anonymous", "server"
    action: str  # "POST /v1/namespaces/{namespace}/keys", "bootstrap_admin_key", ...
    namespace: str | None
    target: str | None  # the resource acted on, when the path names one
    result: str  # "ok" or an error code
    status: int | None = None
    client: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON."""
        return asdict(self)


class AuditLog:
    """Appends records to the audit file and the ``relaymq.audit`` logger."""

    def __init__(self, path: Path | None, clock_ms: Callable[[], int] | None = None) -> None:
        self.path = path
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.recent: collections.deque[AuditRecord] = collections.deque(maxlen=RECENT_RECORDS)
        self.lock = threading.Lock()
        self.file = open_private(path) if path is not None else None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> AuditLog:
        """The audit log of a server's data directory."""
        return cls(Path(data_dir) / FILE_NAME)

    def record(
        self,
        actor: str,
        action: str,
        result: str,
        *,
        namespace: str | None = None,
        target: str | None = None,
        status: int | None = None,
        client: str | None = None,
    ) -> AuditRecord:
        """Write one record."""
        entry = AuditRecord(
            self.clock_ms(), actor, action, namespace, target, result, status, client
        )
        line = json.dumps(entry.to_dict(), separators=(",", ":"))
        with self.lock:
            self.recent.append(entry)
            if self.file is not None:
                self.file.write(line + "\n")
                self.file.flush()
        logger.info("audit %s", line, extra={"audit": entry.to_dict()})
        return entry

    def records(self, namespace: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """The most recent records (of one namespace, if given), newest last."""
        with self.lock:
            chosen = [r for r in self.recent if namespace is None or r.namespace == namespace]
        return chosen[-limit:]

    def close(self) -> None:
        """Close the file."""
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


def open_private(path: Path) -> Any:
    """Open ``path`` for appending, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(descriptor, "a", encoding="utf-8")
