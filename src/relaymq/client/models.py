"""The typed values the SDK returns from admin calls: streams, subscriptions,
queues, topics, namespaces, and messages read back from a stream.

Owns their shape as the REST API (``/openapi.json``) describes it; fields the
server adds later are ignored, so an older SDK keeps working. Settings the
SDK does not model one by one stay in ``config`` as a plain dict.
:class:`PublishResult` is the protocol's own (a ``confirm`` carries it).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec

from relaymq.protocol.frames import PublishResult

__all__ = [
    "NamespaceInfo",
    "PartitionInfo",
    "PublishResult",
    "QueueInfo",
    "StreamInfo",
    "StreamMessage",
    "SubscriptionInfo",
    "TopicInfo",
]


class PartitionInfo(msgspec.Struct, kw_only=True):
    """One partition of a stream: its offsets, size and time span."""

    partition: int
    first_offset: int
    last_offset: int
    messages: int
    bytes: int
    first_timestamp_ms: int | None = None
    last_timestamp_ms: int | None = None


class StreamInfo(msgspec.Struct, kw_only=True):
    """A stream: its settings (``config``), contents and subscription totals."""

    namespace: str
    name: str
    config: dict[str, Any]
    created_ms: int
    messages: int
    bytes: int
    depth: int = 0
    partitions: list[PartitionInfo] = []
    subscriptions: int = 0
    in_flight: int = 0
    lag_messages: int = 0
    lag_seconds: float = 0.0


class SubscriptionInfo(msgspec.Struct, kw_only=True):
    """A subscription: its settings (``config``: stream, mode, ...) and counters."""

    namespace: str
    name: str
    config: dict[str, Any]
    created_ms: int
    depth: int = 0
    pending: int = 0
    in_flight: int = 0
    acked: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
    lag_messages: int = 0
    lag_seconds: float = 0.0
    consumers: int = 0

    @property
    def stream(self) -> str:
        """The stream the subscription reads."""
        return str(self.config.get("stream", ""))

    @property
    def mode(self) -> str:
        """``shared``, ``key_ordered`` or ``ordered``."""
        return str(self.config.get("mode", ""))


class QueueInfo(msgspec.Struct, kw_only=True):
    """A queue (a work-queue stream and its one subscription) and its counters."""

    namespace: str
    name: str
    mode: str
    partitions: int
    created_ms: int
    messages: int
    ack_timeout_ms: int
    max_deliveries: int
    dead_letter_queue: str | None = None
    early_delivery: bool = False
    depth: int = 0
    pending: int = 0
    in_flight: int = 0
    acked: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
    lag_messages: int = 0
    lag_seconds: float = 0.0
    consumers: int = 0


class TopicInfo(msgspec.Struct, kw_only=True):
    """A topic (a stream capturing ``name`` and ``name.>``) and its subscriptions."""

    namespace: str
    name: str
    subjects: list[str]
    partitions: int
    created_ms: int
    messages: int
    bytes: int
    subscriptions: list[SubscriptionInfo] = []


class NamespaceInfo(msgspec.Struct, kw_only=True):
    """A namespace and how many streams and subscriptions it holds."""

    name: str
    streams: int = 0
    subscriptions: int = 0


class StreamMessage:
    """A message read back from a stream (replay, dead letters): no receipt, no ack."""

    __slots__ = (
        "expires_at_ms",
        "headers",
        "id",
        "key",
        "offset",
        "partition",
        "payload",
        "priority",
        "subject",
        "timestamp_ms",
    )

    def __init__(
        self,
        *,
        id: str,
        subject: str,
        payload: bytes,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        timestamp_ms: int = 0,
        partition: int = 0,
        offset: int = 0,
        priority: int = 0,
        expires_at_ms: int | None = None,
    ) -> None:
        self.id = id
        self.subject = subject
        self.payload = payload
        self.key = key
        self.headers = headers or {}
        self.timestamp_ms = timestamp_ms
        self.partition = partition
        self.offset = offset
        self.priority = priority
        self.expires_at_ms = expires_at_ms

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (invalid bytes replaced)."""
        return self.payload.decode("utf-8", "replace")

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON-able values (payload as text, else base64)."""
        text, encoding = payload_text(self.payload)
        fields = {
            name: getattr(self, name) for name in StreamMessage.__slots__ if name != "payload"
        }
        return {**fields, "payload": text, "encoding": encoding}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id!r}, subject={self.subject!r}, "
            f"partition={self.partition}, offset={self.offset}, payload={self.payload[:40]!r})"
        )

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> StreamMessage:
        """A message of the REST API (``MessageOut``)."""
        return cls(
            id=item["id"],
            subject=item["subject"],
            payload=payload_bytes(item.get("payload") or "", item.get("encoding") or "utf-8"),
            key=item.get("key"),
            headers=item.get("headers") or {},
            timestamp_ms=item.get("timestamp_ms", 0),
            partition=item.get("partition", 0),
            offset=item.get("offset", 0),
            priority=item.get("priority", 0),
            expires_at_ms=item.get("expires_at_ms"),
        )


def payload_bytes(payload: str, encoding: str) -> bytes:
    """The bytes of a REST payload (UTF-8 text or base64)."""
    if encoding == "base64":
        return base64.b64decode(payload)
    return payload.encode("utf-8", "surrogatepass")


def payload_text(payload: bytes) -> tuple[str, str]:
    """A payload as text when valid UTF-8, else base64, and which it is."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"
