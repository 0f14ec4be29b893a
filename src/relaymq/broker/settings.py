"""The broker's typed settings: limits, durability policy and timer intervals.

Built once by the caller (the server builds it from :class:`relaymq.config.Settings`)
and passed in; the broker reads nothing from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relaymq.store.base import FsyncPolicy

MEBIBYTE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Everything the broker needs to know to run. Sizes in bytes, times in ms."""

    data_dir: Path
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    segment_bytes: int = 64 * MEBIBYTE
    reserve_chunk_bytes: int = 4 * MEBIBYTE
    min_free_disk_bytes: int = 64 * MEBIBYTE
    max_payload_bytes: int = 1 * MEBIBYTE
    max_batch_messages: int = 1_000
    max_headers_bytes: int = 16 * 1024
    max_fetch_messages: int = 1_000
    max_wait_ms: int = 30_000
    max_streams_per_namespace: int = 10_000
    max_subscriptions_per_stream: int = 1_000
    max_namespaces: int = 1_000
    max_partitions: int = 256
    window_messages: int = 10_000
    consumer_timeout_ms: int = 30_000
    checkpoint_interval_ms: int = 200
    retention_interval_ms: int = 5_000
