"""Configuration and information types of the broker's public API.

These are the values adapters pass into :class:`relaymq.broker.Broker` and get
back from it. They are plain msgspec structs: adapters translate their wire
format into these and nothing else.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from relaymq.core.cursor import Delivery, DeliveryMode


class RetentionPolicy(enum.StrEnum):
    """When messages leave a stream besides the age / bytes / count limits.

    * ``limits``: only by the limits.
    * ``interest``: also once every subscription of the stream has acked them.
    * ``work_queue``: also once acked by the (single) subscription.
    """

    LIMITS = "limits"
    INTEREST = "interest"
    WORK_QUEUE = "work_queue"


class DiscardPolicy(enum.StrEnum):
    """What a full stream (``max_bytes`` / ``max_messages``) does: drop its oldest
    messages, or reject new publishes with ``storage_full``."""

    OLD = "old"
    NEW = "new"


class StorageKind(enum.StrEnum):
    """``file``: the durable local store. ``memory``: fast, lost on restart."""

    FILE = "file"
    MEMORY = "memory"


class StartKind(enum.StrEnum):
    EARLIEST = "earliest"
    LATEST = "latest"
    OFFSET = "offset"
    TIMESTAMP = "timestamp"


class StartPosition(msgspec.Struct, kw_only=True, frozen=True):
    """Where a new subscription begins reading. ``value`` is an offset (applied to
    every partition) or a time in ms since the epoch."""

    kind: StartKind = StartKind.EARLIEST
    value: int | None = None


class Backoff(msgspec.Struct, kw_only=True, frozen=True):
    """Redelivery delay after a nack or a lease expiry: ``initial_ms * multiplier **
    (deliveries - 1)``, capped at ``max_ms``, with +/- ``jitter`` (a fraction)."""

    initial_ms: int = 1_000
    max_ms: int = 60_000
    multiplier: float = 2.0
    jitter: float = 0.2


class StreamConfig(msgspec.Struct, kw_only=True, frozen=True):
    """A stream definition. ``subjects`` are filters (``*`` and ``>`` allowed);
    no two streams of a namespace may capture the same subject."""

    name: str
    subjects: list[str]
    partitions: int = 1
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    max_age_ms: int | None = None
    max_bytes: int | None = None
    max_messages: int | None = None
    discard: DiscardPolicy = DiscardPolicy.OLD
    max_message_bytes: int | None = None
    dedup_window_ms: int = 120_000
    storage: StorageKind = StorageKind.FILE
    json_schema: dict[str, Any] | None = None
    description: str = ""


class StreamUpdate(msgspec.Struct, kw_only=True, frozen=True):
    """Fields of a stream that may change after creation (``None`` = unchanged).
    Partitions, storage and retention policy are fixed at creation."""

    subjects: list[str] | None = None
    max_age_ms: int | None = None
    max_bytes: int | None = None
    max_messages: int | None = None
    discard: DiscardPolicy | None = None
    max_message_bytes: int | None = None
    dedup_window_ms: int | None = None
    json_schema: dict[str, Any] | None = None
    description: str | None = None


class SubscriptionConfig(msgspec.Struct, kw_only=True, frozen=True):
    """A durable cursor on a stream.

    ``early_delivery`` hands messages to consumers once written, before the fsync
    that makes them durable and confirms their publish: delivery no longer waits
    for the disk, and a crash of the machine (not of the server alone) or a failed
    flush may take back a message that was delivered but never confirmed (after a
    failed flush the partition takes no appends until a restart).
    """

    name: str
    stream: str
    mode: DeliveryMode = DeliveryMode.SHARED
    filter_subject: str = ">"
    start: StartPosition = StartPosition()
    ack_timeout_ms: int = 30_000
    max_deliveries: int = 0
    backoff: Backoff = Backoff()
    dead_letter_stream: str | None = None
    description: str = ""
    early_delivery: bool = False


class SubscriptionUpdate(msgspec.Struct, kw_only=True, frozen=True):
    """Fields of a subscription that may change after creation (``None`` = unchanged)."""

    ack_timeout_ms: int | None = None
    max_deliveries: int | None = None
    backoff: Backoff | None = None
    dead_letter_stream: str | None = None
    description: str | None = None


class PartitionInfo(msgspec.Struct, kw_only=True, frozen=True):
    partition: int
    first_offset: int
    last_offset: int
    messages: int
    bytes: int
    first_timestamp_ms: int | None
    last_timestamp_ms: int | None


class StreamInfo(msgspec.Struct, kw_only=True, frozen=True):
    namespace: str
    config: StreamConfig
    created_ms: int
    messages: int
    bytes: int
    partitions: list[PartitionInfo]


class SubscriptionInfo(msgspec.Struct, kw_only=True, frozen=True):
    """Counters of a subscription. ``pending`` counts messages not yet delivered
    (including those waiting for a retry); ``lag_seconds`` is the age of the oldest
    message not yet acked."""

    namespace: str
    config: SubscriptionConfig
    created_ms: int
    pending: int
    in_flight: int
    acked: int
    redelivered: int
    dead_lettered: int
    lag_messages: int
    lag_seconds: float
    consumers: int


class PublishResult(msgspec.Struct, kw_only=True, frozen=True):
    """Where a message landed. ``duplicate`` is true when the message id was seen
    within the dedup window: the original's partition and offset are returned."""

    stream: str
    partition: int
    offset: int
    duplicate: bool = False


Received = Delivery
"""A message handed to a consumer: ``message``, ``receipt`` (acks it),
``delivery_count`` and ``deadline_ms`` (when the lease ends)."""
