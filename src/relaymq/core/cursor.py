"""The subscription cursor of one partition: what is done, what is leased, what is due.

CONTRACT STUB — the public surface below is fixed (the broker codes against it);
the bodies are to be implemented.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relaymq.core.message import Message


class DeliveryMode(enum.StrEnum):
    """``shared``: competing consumers, per-message ack (a queue).
    ``key_ordered``: like shared, but at most one message per key in flight, in order.
    ``ordered``: one consumer per partition, cumulative ack (a consumer group)."""

    SHARED = "shared"
    KEY_ORDERED = "key_ordered"
    ORDERED = "ordered"


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_ms: int = 1_000
    max_ms: int = 60_000
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay_ms(self, delivery_count: int, rng: random.Random) -> int:
        """Delay before redelivery after the ``delivery_count``-th delivery failed."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class CursorPolicy:
    mode: DeliveryMode = DeliveryMode.SHARED
    ack_timeout_ms: int = 30_000
    max_deliveries: int = 0  # 0 = unlimited
    backoff: BackoffPolicy = BackoffPolicy()
    window_messages: int = 10_000


@dataclass(slots=True)
class Delivery:
    message: Message
    receipt: str
    delivery_count: int
    deadline_ms: int


@dataclass(slots=True)
class DeadLetter:
    message: Message
    delivery_count: int
    reason: str  # "max_deliveries" | "terminated" | "expired"
    last_error: str | None


@dataclass(frozen=True, slots=True)
class CursorCheckpoint:
    ack_floor: int
    acked_ranges: tuple[tuple[int, int], ...]
    delivery_counts: tuple[tuple[int, int], ...]

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> CursorCheckpoint:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class CursorStats:
    ack_floor: int
    read_offset: int
    pending: int
    in_flight: int
    acked_total: int
    redelivered_total: int
    dead_lettered_total: int
    oldest_unacked_timestamp_ms: int | None


class PartitionCursor:
    def __init__(
        self,
        partition: int,
        policy: CursorPolicy,
        start_offset: int,
        lease_nonce: int,
        rng: random.Random,
        subject_filter: Callable[[str], bool] | None = None,
        checkpoint: CursorCheckpoint | None = None,
    ) -> None:
        raise NotImplementedError
