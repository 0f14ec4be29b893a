"""The embedded store: segment files with a sparse index per partition, group commit,
torn-tail recovery, and SQLite (WAL) for metadata and checkpoints.

``docs/storage-format.md`` describes the files on disk and how commits become durable.
"""

from relaymq.store.local.log import LocalPartitionLog
from relaymq.store.local.store import LocalStore

__all__ = ["LocalPartitionLog", "LocalStore"]
