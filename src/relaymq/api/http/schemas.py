"""Request and response bodies of the REST API, and their translation to broker types.

Request models (``...Create``, ``...Patch``, ``...Request``) forbid unknown
fields, so a typo is a 422 rather than a silently ignored setting. Response
models (``...Out``) are built from the broker's info structs by their
``from_...`` constructors; nothing else in the HTTP layer shapes a response.
Every integer is bounded (by :data:`MAX_INTEGER` at most) so no input can
overflow anything downstream.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relaymq.broker.models import (
    Backoff,
    DiscardPolicy,
    PartitionInfo,
    PublishResult,
    Received,
    RetentionPolicy,
    StartKind,
    StartPosition,
    StorageKind,
    StreamConfig,
    StreamInfo,
    StreamUpdate,
    SubscriptionConfig,
    SubscriptionInfo,
    SubscriptionUpdate,
)
from relaymq.core.cursor import DeliveryMode
from relaymq.core.message import Message

MAX_INTEGER = 2**53 - 1
"""The largest integer a JSON client in JavaScript represents exactly."""
MAX_TEXT_CHARS = 4_096
MAX_ITEMS = 10_000
MAX_PAGE_ITEMS = 1_000
DEFAULT_PAGE_ITEMS = 100

Count = Annotated[int, Field(ge=0, le=MAX_INTEGER)]
PositiveCount = Annotated[int, Field(ge=1, le=MAX_INTEGER)]
Milliseconds = Annotated[int, Field(ge=0, le=MAX_INTEGER)]
PositiveMilliseconds = Annotated[int, Field(ge=1, le=MAX_INTEGER)]
Offset = Annotated[int, Field(ge=0, le=MAX_INTEGER)]
EarlyDelivery = Annotated[
    bool,
    Field(description="Deliver messages once written, before the fsync that confirms them."),
]
Partition = Annotated[int, Field(ge=0, le=MAX_INTEGER)]
Priority = Annotated[int, Field(ge=0, le=MAX_INTEGER)]
Name = Annotated[str, Field(min_length=1, max_length=256, description="Resource name.")]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Receipts = Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)]

ItemT = TypeVar("ItemT")


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list. Pass ``next_cursor`` back as ``cursor`` for the next page;
    it is ``null`` on the last page."""

    items: list[ItemT]
    next_cursor: str | None = None


# -- namespaces ----------------------------------------------------------------------------


class NamespaceCreate(RequestModel):
    """A new namespace."""

    name: Name


class NamespaceOut(BaseModel):
    """A namespace and how many streams and subscriptions it holds."""

    name: str
    streams: int
    subscriptions: int


class NamespaceStats(BaseModel):
    """Totals over a namespace's streams and subscriptions."""

    namespace: str
    streams: int
    subscriptions: int
    messages: int
    bytes: int
    pending: int
    in_flight: int
    lag_messages: int
    dead_lettered: int


# -- streams -------------------------------------------------------------------------------


class StreamSettings(BaseModel):
    """A stream's configuration (everything but its name)."""

    subjects: list[str]
    partitions: int
    retention: RetentionPolicy
    max_age_ms: int | None
    max_bytes: int | None
    max_messages: int | None
    discard: DiscardPolicy
    max_message_bytes: int | None
    dedup_window_ms: int
    storage: StorageKind
    json_schema: dict[str, Any] | None
    description: str

    @classmethod
    def from_config(cls, config: StreamConfig) -> Self:
        """The settings part of a broker stream config."""
        return cls(
            subjects=list(config.subjects),
            partitions=config.partitions,
            retention=config.retention,
            max_age_ms=config.max_age_ms,
            max_bytes=config.max_bytes,
            max_messages=config.max_messages,
            discard=config.discard,
            max_message_bytes=config.max_message_bytes,
            dedup_window_ms=config.dedup_window_ms,
            storage=config.storage,
            json_schema=config.json_schema,
            description=config.description,
        )


class StreamCreate(RequestModel):
    """A new stream. ``subjects`` defaults to ``[name]``."""

    name: Name
    subjects: Annotated[list[Text], Field(min_length=1, max_length=1_000)] | None = None
    partitions: Annotated[int, Field(ge=1, le=65_536)] = 1
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    max_age_ms: PositiveMilliseconds | None = None
    max_bytes: PositiveCount | None = None
    max_messages: PositiveCount | None = None
    discard: DiscardPolicy = DiscardPolicy.OLD
    max_message_bytes: PositiveCount | None = None
    dedup_window_ms: Milliseconds = 120_000
    storage: StorageKind = StorageKind.FILE
    json_schema: dict[str, Any] | None = None
    description: Text = ""

    def to_config(self) -> StreamConfig:
        """The broker's stream config."""
        fields = self.model_dump(exclude={"subjects"})
        return StreamConfig(subjects=self.subjects or [self.name], **fields)


class StreamPatch(RequestModel):
    """Changes to a stream; absent fields stay as they are."""

    subjects: Annotated[list[Text], Field(min_length=1, max_length=1_000)] | None = None
    max_age_ms: PositiveMilliseconds | None = None
    max_bytes: PositiveCount | None = None
    max_messages: PositiveCount | None = None
    discard: DiscardPolicy | None = None
    max_message_bytes: PositiveCount | None = None
    dedup_window_ms: Milliseconds | None = None
    json_schema: dict[str, Any] | None = None
    description: Text | None = None

    def to_update(self) -> StreamUpdate:
        """The broker's stream update."""
        return StreamUpdate(**self.model_dump())


class PartitionOut(BaseModel):
    """What one partition holds: offsets ``first_offset`` to ``last_offset``."""

    partition: int
    first_offset: int
    last_offset: int
    messages: int
    bytes: int
    first_timestamp_ms: int | None
    last_timestamp_ms: int | None

    @classmethod
    def from_info(cls, info: PartitionInfo) -> Self:
        """From the broker's partition info."""
        return cls(
            partition=info.partition,
            first_offset=info.first_offset,
            last_offset=info.last_offset,
            messages=info.messages,
            bytes=info.bytes,
            first_timestamp_ms=info.first_timestamp_ms,
            last_timestamp_ms=info.last_timestamp_ms,
        )


class StreamOut(BaseModel):
    """A stream: its settings, contents per partition, and its subscriptions' totals.

    ``depth`` is the number of messages stored; ``in_flight`` sums and
    ``lag_messages`` / ``lag_seconds`` take the worst of its subscriptions."""

    namespace: str
    name: str
    config: StreamSettings
    created_ms: int
    messages: int
    bytes: int
    depth: int
    partitions: list[PartitionOut]
    subscriptions: int
    in_flight: int
    lag_messages: int
    lag_seconds: float

    @classmethod
    def from_info(cls, info: StreamInfo, subscriptions: list[SubscriptionInfo]) -> Self:
        """From the broker's stream info and the infos of its subscriptions."""
        return cls(
            namespace=info.namespace,
            name=info.config.name,
            config=StreamSettings.from_config(info.config),
            created_ms=info.created_ms,
            messages=info.messages,
            bytes=info.bytes,
            depth=info.messages,
            partitions=[PartitionOut.from_info(partition) for partition in info.partitions],
            subscriptions=len(subscriptions),
            in_flight=sum(subscription.in_flight for subscription in subscriptions),
            lag_messages=max((item.lag_messages for item in subscriptions), default=0),
            lag_seconds=max((item.lag_seconds for item in subscriptions), default=0.0),
        )


# -- subscriptions -------------------------------------------------------------------------


class StartIn(RequestModel):
    """Where a new subscription starts: ``earliest``, ``latest``, an ``offset`` or a
    ``timestamp`` (``value`` in ms since the epoch)."""

    kind: StartKind = StartKind.EARLIEST
    value: Count | None = None

    def to_position(self) -> StartPosition:
        """The broker's start position."""
        return StartPosition(kind=self.kind, value=self.value)


class BackoffIn(RequestModel):
    """Redelivery delay: ``initial_ms * multiplier ** (deliveries - 1)``, at most
    ``max_ms``, with +/- ``jitter`` (a fraction)."""

    initial_ms: Milliseconds = 1_000
    max_ms: Milliseconds = 60_000
    multiplier: Annotated[float, Field(ge=1.0, le=100.0)] = 2.0
    jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2

    def to_backoff(self) -> Backoff:
        """The broker's backoff."""
        return Backoff(**self.model_dump())

    @classmethod
    def from_backoff(cls, backoff: Backoff) -> Self:
        """From the broker's backoff."""
        return cls(
            initial_ms=backoff.initial_ms,
            max_ms=backoff.max_ms,
            multiplier=backoff.multiplier,
            jitter=backoff.jitter,
        )


class SubscriptionOptions(RequestModel):
    """Subscription settings shared by subscriptions on streams and on topics."""

    name: Name
    mode: DeliveryMode = DeliveryMode.SHARED
    filter_subject: Text = ">"
    start: StartIn = Field(default_factory=StartIn)
    ack_timeout_ms: PositiveMilliseconds = 30_000
    max_deliveries: Count = 0
    backoff: BackoffIn = Field(default_factory=BackoffIn)
    dead_letter_stream: Name | None = None
    description: Text = ""
    early_delivery: EarlyDelivery = False

    def to_config(self, stream: str) -> SubscriptionConfig:
        """The broker's subscription config on ``stream``."""
        return SubscriptionConfig(
            name=self.name,
            stream=stream,
            mode=self.mode,
            filter_subject=self.filter_subject,
            start=self.start.to_position(),
            ack_timeout_ms=self.ack_timeout_ms,
            max_deliveries=self.max_deliveries,
            backoff=self.backoff.to_backoff(),
            dead_letter_stream=self.dead_letter_stream,
            description=self.description,
            early_delivery=self.early_delivery,
        )


class SubscriptionCreate(SubscriptionOptions):
    """A new subscription on ``stream``. ``max_deliveries`` 0 means unlimited."""

    stream: Name

    def to_stream_config(self) -> SubscriptionConfig:
        """The broker's subscription config."""
        return self.to_config(self.stream)


class SubscriptionPatch(RequestModel):
    """Changes to a subscription; absent fields stay as they are."""

    ack_timeout_ms: PositiveMilliseconds | None = None
    max_deliveries: Count | None = None
    backoff: BackoffIn | None = None
    dead_letter_stream: Name | None = None
    description: Text | None = None

    def to_update(self) -> SubscriptionUpdate:
        """The broker's subscription update."""
        return SubscriptionUpdate(
            ack_timeout_ms=self.ack_timeout_ms,
            max_deliveries=self.max_deliveries,
            backoff=self.backoff.to_backoff() if self.backoff else None,
            dead_letter_stream=self.dead_letter_stream,
            description=self.description,
        )


class SubscriptionSettings(BaseModel):
    """A subscription's configuration (everything but its name)."""

    stream: str
    mode: DeliveryMode
    filter_subject: str
    start_kind: StartKind
    start_value: int | None
    ack_timeout_ms: int
    max_deliveries: int
    backoff: BackoffIn
    dead_letter_stream: str | None
    description: str
    early_delivery: bool

    @classmethod
    def from_config(cls, config: SubscriptionConfig) -> Self:
        """The settings part of a broker subscription config."""
        return cls(
            stream=config.stream,
            mode=config.mode,
            filter_subject=config.filter_subject,
            start_kind=config.start.kind,
            start_value=config.start.value,
            ack_timeout_ms=config.ack_timeout_ms,
            max_deliveries=config.max_deliveries,
            backoff=BackoffIn.from_backoff(config.backoff),
            dead_letter_stream=config.dead_letter_stream,
            description=config.description,
            early_delivery=config.early_delivery,
        )


class SubscriptionStats(BaseModel):
    """Counters of a subscription. ``depth`` = ``pending`` + ``in_flight``;
    ``lag_seconds`` is the age of the oldest message not yet acked."""

    depth: int
    pending: int
    in_flight: int
    acked: int
    redelivered: int
    dead_lettered: int
    lag_messages: int
    lag_seconds: float
    consumers: int

    @classmethod
    def stats_of(cls, info: SubscriptionInfo) -> dict[str, Any]:
        """The counter fields of a broker subscription info, as keyword arguments."""
        return {
            "depth": info.pending + info.in_flight,
            "pending": info.pending,
            "in_flight": info.in_flight,
            "acked": info.acked,
            "redelivered": info.redelivered,
            "dead_lettered": info.dead_lettered,
            "lag_messages": info.lag_messages,
            "lag_seconds": info.lag_seconds,
            "consumers": info.consumers,
        }


class SubscriptionOut(SubscriptionStats):
    """A subscription: its settings and counters."""

    namespace: str
    name: str
    config: SubscriptionSettings
    created_ms: int

    @classmethod
    def from_info(cls, info: SubscriptionInfo) -> Self:
        """From the broker's subscription info."""
        return cls(
            namespace=info.namespace,
            name=info.config.name,
            config=SubscriptionSettings.from_config(info.config),
            created_ms=info.created_ms,
            **SubscriptionStats.stats_of(info),
        )


# -- queues and topics ---------------------------------------------------------------------


class QueueCreate(RequestModel):
    """A new queue: a work-queue stream plus one subscription of the same name and,
    with ``dead_letter``, a ``{name}-dlq`` queue for messages that keep failing."""

    name: Name
    partitions: Annotated[int, Field(ge=1, le=65_536)] = 1
    mode: DeliveryMode = DeliveryMode.SHARED
    ack_timeout_ms: PositiveMilliseconds = 30_000
    max_deliveries: Count = 5
    backoff: BackoffIn = Field(default_factory=BackoffIn)
    dead_letter: bool = True
    max_age_ms: PositiveMilliseconds | None = None
    max_bytes: PositiveCount | None = None
    max_messages: PositiveCount | None = None
    early_delivery: EarlyDelivery = False

    def to_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``Broker.create_queue`` (besides namespace and name)."""
        arguments = self.model_dump(exclude={"name", "backoff"})
        arguments["backoff"] = self.backoff.to_backoff()
        return arguments


class QueueOut(SubscriptionStats):
    """A queue: its settings, how many messages its stream holds, its counters."""

    namespace: str
    name: str
    mode: DeliveryMode
    partitions: int
    created_ms: int
    messages: int
    ack_timeout_ms: int
    max_deliveries: int
    dead_letter_queue: str | None
    early_delivery: bool

    @classmethod
    def from_infos(cls, stream: StreamInfo, subscription: SubscriptionInfo) -> Self:
        """From the infos of the queue's stream and its subscription."""
        config = subscription.config
        return cls(
            namespace=stream.namespace,
            name=config.name,
            mode=config.mode,
            partitions=stream.config.partitions,
            created_ms=stream.created_ms,
            messages=stream.messages,
            ack_timeout_ms=config.ack_timeout_ms,
            max_deliveries=config.max_deliveries,
            dead_letter_queue=config.dead_letter_stream,
            early_delivery=config.early_delivery,
            **SubscriptionStats.stats_of(subscription),
        )


class TopicCreate(RequestModel):
    """A new topic: a stream capturing ``{name}`` and ``{name}.>``; each subscriber
    gets its own subscription and every message."""

    name: Name
    partitions: Annotated[int, Field(ge=1, le=65_536)] = 1
    max_age_ms: PositiveMilliseconds | None = None
    max_bytes: PositiveCount | None = None
    max_messages: PositiveCount | None = None


class TopicOut(BaseModel):
    """A topic: its subjects, contents and subscriptions."""

    namespace: str
    name: str
    subjects: list[str]
    partitions: int
    created_ms: int
    messages: int
    bytes: int
    subscriptions: list[SubscriptionOut]

    @classmethod
    def from_infos(cls, stream: StreamInfo, subscriptions: list[SubscriptionInfo]) -> Self:
        """From the topic stream's info and its subscriptions' infos."""
        return cls(
            namespace=stream.namespace,
            name=stream.config.name,
            subjects=list(stream.config.subjects),
            partitions=stream.config.partitions,
            created_ms=stream.created_ms,
            messages=stream.messages,
            bytes=stream.bytes,
            subscriptions=[SubscriptionOut.from_info(item) for item in subscriptions],
        )


class TopicSubscriptionCreate(SubscriptionOptions):
    """A new subscription on a topic; ``filter_subject`` narrows what it receives."""


# -- messages ------------------------------------------------------------------------------


class MessageIn(RequestModel):
    """A message to publish. The payload is ``payload`` (UTF-8 text, or base64 with
    ``"encoding": "base64"``) or ``payload_json`` (any JSON value, stored as its
    JSON text). Delay with ``deliver_at_ms`` or ``delay_ms``; expire with
    ``expires_at_ms`` or ``ttl_ms``. ``subject`` may be left out when publishing
    to a stream or queue by name: it then defaults to that name."""

    subject: Text | None = None
    key: Text | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    id: Text | None = None
    payload: str | None = None
    encoding: Literal["utf-8", "base64"] = "utf-8"
    payload_json: Any = None
    deliver_at_ms: Milliseconds | None = None
    delay_ms: Milliseconds | None = None
    priority: Priority = 0
    expires_at_ms: Milliseconds | None = None
    ttl_ms: PositiveMilliseconds | None = None

    @model_validator(mode="after")
    def check_exclusive_fields(self) -> Self:
        """At most one payload, one delay and one expiry; base64 that decodes."""
        if self.payload is not None and "payload_json" in self.model_fields_set:
            raise ValueError("give payload or payload_json, not both")
        if self.deliver_at_ms is not None and self.delay_ms is not None:
            raise ValueError("give deliver_at_ms or delay_ms, not both")
        if self.expires_at_ms is not None and self.ttl_ms is not None:
            raise ValueError("give expires_at_ms or ttl_ms, not both")
        self.payload_bytes()
        return self

    def payload_bytes(self) -> bytes:
        """The payload as the bytes to store."""
        if "payload_json" in self.model_fields_set:
            return json.dumps(self.payload_json, separators=(",", ":")).encode()
        if self.payload is None:
            return b""
        if self.encoding == "base64":
            try:
                return base64.b64decode(self.payload, validate=True)
            except (binascii.Error, ValueError) as error:
                raise ValueError("payload is not valid base64") from error
        return self.payload.encode("utf-8", errors="surrogatepass")

    def to_message(self, default_subject: str | None, now_ms: int) -> Message:
        """The broker message; relative times are resolved against ``now_ms``."""
        deliver_at_ms = self.deliver_at_ms
        if self.delay_ms is not None:
            deliver_at_ms = now_ms + self.delay_ms
        expires_at_ms = self.expires_at_ms
        if self.ttl_ms is not None:
            expires_at_ms = now_ms + self.ttl_ms
        return Message(
            subject=self.subject if self.subject is not None else default_subject or "",
            payload=self.payload_bytes(),
            key=self.key,
            headers=dict(self.headers),
            id=self.id,
            deliver_at_ms=deliver_at_ms,
            priority=self.priority,
            expires_at_ms=expires_at_ms,
        )


class PublishBatch(RequestModel):
    """Several messages published together (all validated before any is stored)."""

    messages: Annotated[list[MessageIn], Field(min_length=1, max_length=MAX_ITEMS)]


class PublishResultOut(BaseModel):
    """Where a message landed. ``duplicate``: its id was seen within the dedup window,
    and these are the original's partition and offset."""

    stream: str
    partition: int
    offset: int
    duplicate: bool

    @classmethod
    def from_result(cls, result: PublishResult) -> Self:
        """From the broker's publish result."""
        return cls(
            stream=result.stream,
            partition=result.partition,
            offset=result.offset,
            duplicate=result.duplicate,
        )


class PublishResponse(BaseModel):
    """One result per published message, in order; sent once they are durable."""

    results: list[PublishResultOut]


class MessageOut(BaseModel):
    """A stored message. ``payload`` is text when it is valid UTF-8 (``encoding``
    ``utf-8``), else base64 (``encoding`` ``base64``). ``id`` is the publisher's id, or
    ``"{partition}-{offset}"`` when it set none. ``receipt``, ``delivery_count`` and
    ``lease_deadline_ms`` are set on messages fetched from a subscription."""

    id: str
    subject: str
    key: str | None
    headers: dict[str, str]
    payload: str
    encoding: Literal["utf-8", "base64"]
    timestamp_ms: int
    partition: int
    offset: int
    priority: int
    deliver_at_ms: int | None = None
    expires_at_ms: int | None = None
    delivery_count: int | None = None
    receipt: str | None = None
    lease_deadline_ms: int | None = None

    @classmethod
    def from_message(cls, message: Message) -> Self:
        """A message read from a stream."""
        payload, encoding = encode_payload(message.payload)
        return cls(
            id=message.id or f"{message.partition}-{message.offset}",
            subject=message.subject,
            key=message.key,
            headers=dict(message.headers),
            payload=payload,
            encoding=encoding,
            timestamp_ms=message.timestamp_ms,
            partition=message.partition,
            offset=message.offset,
            priority=message.priority,
            deliver_at_ms=message.deliver_at_ms,
            expires_at_ms=message.expires_at_ms,
        )

    @classmethod
    def from_received(cls, received: Received) -> Self:
        """A message fetched from a subscription, with its receipt."""
        out = cls.from_message(received.message)
        out.receipt = received.receipt
        out.delivery_count = received.delivery_count
        out.lease_deadline_ms = received.deadline_ms
        return out


def encode_payload(payload: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """The payload as text if it is valid UTF-8, else as base64."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


class MessagesOut(BaseModel):
    """Messages fetched from a subscription."""

    messages: list[MessageOut]


class StreamMessagesOut(BaseModel):
    """Messages read from a stream partition; continue from ``next_offset``."""

    messages: list[MessageOut]
    next_offset: int | None


# -- consuming -----------------------------------------------------------------------------


class FetchRequest(RequestModel):
    """Pull messages. With ``wait_ms`` > 0 the request waits (long-poll) until at least
    one message is available or the time is up. ``consumer_id`` names the consumer
    (for ordering and credit); requests without one share the consumer ``http``."""

    consumer_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    max_messages: Annotated[int, Field(ge=1, le=MAX_INTEGER)] = 1
    wait_ms: Milliseconds = 0


class ReceiptsRequest(RequestModel):
    """Receipts of fetched messages."""

    receipts: Receipts


class NackRequest(ReceiptsRequest):
    """Give messages back for redelivery after ``delay_ms`` (default: the backoff)."""

    delay_ms: Milliseconds | None = None
    error: Text | None = None


class ExtendRequest(ReceiptsRequest):
    """Extend leases by ``extend_ms`` (default: the ack timeout)."""

    extend_ms: PositiveMilliseconds | None = None


class TermRequest(ReceiptsRequest):
    """Stop delivering messages: they go to the dead-letter stream, if any."""

    reason: Text | None = None


class ReceiptError(BaseModel):
    """Why a receipt was not applied."""

    code: str
    message: str


class ReceiptResult(BaseModel):
    """The outcome of one receipt: ``ok``, or ``error``. ``deadline_ms`` is the new
    lease deadline after an extend."""

    receipt: str
    ok: bool
    error: ReceiptError | None = None
    deadline_ms: int | None = None


class ReceiptResults(BaseModel):
    """One outcome per receipt, in request order."""

    results: list[ReceiptResult]


class SeekRequest(RequestModel):
    """Move an ordered subscription to an ``offset`` or the first message at or after
    ``timestamp_ms`` (exactly one), on one ``partition`` or (absent) on all."""

    offset: Offset | None = None
    timestamp_ms: Milliseconds | None = None
    partition: Partition | None = None

    @model_validator(mode="after")
    def check_one_position(self) -> Self:
        """Exactly one of offset and timestamp_ms."""
        if (self.offset is None) == (self.timestamp_ms is None):
            raise ValueError("give exactly one of offset and timestamp_ms")
        return self


class RedriveRequest(RequestModel):
    """Move dead letters back to the subscription's stream (at most ``max_messages``)."""

    max_messages: PositiveCount | None = None


class RedriveOut(BaseModel):
    """How many dead letters were moved back."""

    redriven: int


# -- health --------------------------------------------------------------------------------


class HealthOut(BaseModel):
    """The process is alive."""

    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    """The broker is ready: its store is open and writable."""

    ready: bool
