"""The WebSocket frame codec: every frame of the protocol as a msgspec struct.

Owns the schema of client and server frames and their two encodings, JSON text
frames and msgpack binary frames (the same schema; ``bytes`` fields are base64
strings in JSON and ``bin`` in msgpack). The server and the SDK both use this
module, so a frame cannot change on one side only. Decoding is pure and
synchronous: it takes a ``str`` or ``bytes`` and returns a frame or raises
:class:`relaymq.errors.InvalidArgument` (server side) or ``msgspec`` errors
(SDK side), nothing else, so it can be fuzzed. ``docs/protocol.md`` documents
every frame defined here.

The hot path: a msgpack ``publish`` whose messages carry raw ``bin`` payloads
and only the known fields (what the SDK sends) decodes straight into the
broker's :class:`~relaymq.core.message.Message` type (:class:`BinaryMessage`),
with no per-message conversion; any other ``publish`` takes the general path.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import msgspec

from relaymq.core.message import Message
from relaymq.errors import InvalidArgument, RelayError

PROTOCOL_VERSION = 1
MAX_SEQUENCE = 2**53 - 1  # largest integer a JavaScript client represents exactly
MAX_ITEMS_PER_FRAME = 10_000  # messages or receipts in one frame (the broker caps lower)
MAX_ID_CHARS = 256

SequenceNumber = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]
SubscriptionHandle = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]
PositiveCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQUENCE)]
Milliseconds = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]
Receipts = Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_ITEMS_PER_FRAME)]
Encoding = Literal["json", "msgpack"]
PayloadEncoding = Literal["utf-8", "base64"]


class _Frame(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="op"):
    """Base of every frame: the ``op`` field names the frame type."""


# -- client frames ----------------------------------------------------------------------


class PublishedMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A message in a ``publish`` frame, shaped like the HTTP API's message.

    ``payload`` is text stored as UTF-8 (``encoding`` ``utf-8``, the default),
    base64 text (``encoding`` ``base64``), or, in msgpack frames only, raw
    ``bin``; or ``payload_json``, any JSON value stored as compact JSON. After
    decoding, ``payload`` always holds the bytes to store."""

    subject: str
    payload: Any = b""  # str, or bytes (msgpack bin); checked in __post_init__
    encoding: PayloadEncoding = "utf-8"
    payload_json: Any = msgspec.UNSET
    key: str | None = None
    headers: dict[str, str] = {}
    id: str | None = None
    deliver_at_ms: Milliseconds | None = None
    priority: int = 0
    expires_at_ms: Milliseconds | None = None

    def __post_init__(self) -> None:
        """Turn the payload into bytes (a ``ValueError`` here is a validation error)."""
        if self.payload_json is not msgspec.UNSET:
            if self.payload:
                raise ValueError("give payload or payload_json, not both")
            self.payload = _json_encoder.encode(self.payload_json)
        elif isinstance(self.payload, str):
            self.payload = payload_bytes(self.payload, self.encoding)
        elif not isinstance(self.payload, bytes):
            raise ValueError("payload must be a string (or msgpack bin)")


class BinaryMessage(Message, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """A message of a msgpack ``publish`` with a raw ``bin`` payload and only the
    fields of :class:`PublishedMessage` that need no conversion (what the SDK
    sends). It *is* the broker's :class:`Message`, so the server hands it on
    without a copy; ``timestamp_ms``, ``partition`` and ``offset`` are assigned
    by the broker whatever a client sends. A message that does not fit (a text
    payload, ``encoding``, ``payload_json``, an unknown field) fails this shape
    and the frame is decoded by the general path instead."""

    deliver_at_ms: Milliseconds | None = None
    expires_at_ms: Milliseconds | None = None


def payload_bytes(payload: str, encoding: PayloadEncoding) -> bytes:
    """The bytes of a text payload in ``encoding``."""
    if encoding == "base64":
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("payload is not valid base64") from None
    return payload.encode("utf-8", "surrogatepass")


def payload_text(payload: bytes) -> tuple[str, PayloadEncoding]:
    """A payload for a JSON frame: its text when valid UTF-8, else base64."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


class Hello(_Frame, tag="hello"):
    """Optional first frame: pins the encoding of every server frame."""

    encoding: Encoding | None = None
    seq: SequenceNumber | None = None


class Publish(_Frame, tag="publish"):
    """Publish one or many messages; confirmed by ``confirm`` with the same ``seq``."""

    seq: SequenceNumber
    messages: Annotated[
        list[PublishedMessage], msgspec.Meta(min_length=1, max_length=MAX_ITEMS_PER_FRAME)
    ]
    stream: str | None = None

    def broker_messages(self) -> list[Message]:
        """The broker's messages of this frame."""
        return [to_message(published) for published in self.messages]


class BinaryPublish(_Frame, tag="publish"):
    """A ``publish`` whose messages are all :class:`BinaryMessage` (the fast path;
    the same frame on the wire as :class:`Publish`)."""

    seq: SequenceNumber
    messages: Annotated[
        list[BinaryMessage], msgspec.Meta(min_length=1, max_length=MAX_ITEMS_PER_FRAME)
    ]
    stream: str | None = None

    def broker_messages(self) -> list[Message]:
        """The broker's messages of this frame: the decoded ones themselves."""
        return self.messages  # type: ignore[return-value]  # BinaryMessage is a Message


class Subscribe(_Frame, tag="subscribe"):
    """Attach to subscription ``subscription`` under the handle ``sub``, with
    ``credit`` = the most unacked messages the server may have outstanding."""

    sub: SubscriptionHandle
    subscription: str
    credit: Count = 0
    batch: PositiveCount | None = None
    seq: SequenceNumber | None = None


class Credit(_Frame, tag="credit"):
    """Raise the credit (max unacked messages) of ``sub`` by ``credit``."""

    sub: SubscriptionHandle
    credit: PositiveCount
    seq: SequenceNumber | None = None


class Unsubscribe(_Frame, tag="unsubscribe"):
    """Detach ``sub``; its unacked messages are released for redelivery."""

    sub: SubscriptionHandle
    seq: SequenceNumber | None = None


class Ack(_Frame, tag="ack"):
    """Acknowledge delivered messages by receipt (cumulative in ``ordered`` mode)."""

    sub: SubscriptionHandle
    receipts: Receipts
    seq: SequenceNumber | None = None


class Nack(_Frame, tag="nack"):
    """Reject delivered messages: redeliver after ``delay_ms`` (or the backoff)."""

    sub: SubscriptionHandle
    receipts: Receipts
    delay_ms: Milliseconds | None = None
    error: str | None = None
    seq: SequenceNumber | None = None


class Extend(_Frame, tag="extend"):
    """Extend the leases of delivered messages by ``extend_ms`` (or the ack timeout)."""

    sub: SubscriptionHandle
    receipts: Receipts
    extend_ms: Milliseconds | None = None
    seq: SequenceNumber | None = None


class Term(_Frame, tag="term"):
    """Give up on delivered messages: dead-letter them, never redeliver."""

    sub: SubscriptionHandle
    receipts: Receipts
    reason: str | None = None
    seq: SequenceNumber | None = None


class Ping(_Frame, tag="ping"):
    """Keep the connection alive; answered by ``pong`` with the same ``seq``."""

    seq: SequenceNumber | None = None


ClientFrame = Hello | Publish | Subscribe | Credit | Unsubscribe | Ack | Nack | Extend | Term | Ping
BinaryClientFrame = (
    Hello | BinaryPublish | Subscribe | Credit | Unsubscribe | Ack | Nack | Extend | Term | Ping
)
AnyPublish = Publish | BinaryPublish
ReceiptFrame = Ack | Nack | Extend | Term


# -- server frames ----------------------------------------------------------------------


class Welcome(_Frame, tag="welcome"):
    """The answer to ``hello``: protocol version, connection id and limits."""

    version: int
    connection_id: str
    encoding: Encoding | None = None
    limits: dict[str, int] = {}
    seq: SequenceNumber | None = None


class PublishResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a published message landed; ``duplicate`` when its id was already
    stored within the stream's dedup window (then these are the original's)."""

    stream: str
    partition: int
    offset: int
    duplicate: bool = False


class Confirm(_Frame, tag="confirm"):
    """Every message of publish ``seq`` is durable; results in request order."""

    seq: int
    results: list[PublishResult]


class DeliveredMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A message in a ``deliver`` frame, shaped like the HTTP API's message.

    In JSON frames ``payload`` is text when valid UTF-8 (``encoding`` ``utf-8``)
    and base64 otherwise (``encoding`` ``base64``); in msgpack frames it is
    ``bin`` and ``encoding`` is absent. ``id`` is the publisher's id or
    ``"{partition}-{offset}"``."""

    id: str
    subject: str
    payload: Any  # str in JSON frames, bytes in msgpack frames
    encoding: PayloadEncoding | None = None
    key: str | None = None
    headers: dict[str, str] = {}
    timestamp_ms: int
    partition: int
    offset: int
    priority: int = 0
    deliver_at_ms: int | None = None
    expires_at_ms: int | None = None
    receipt: str
    delivery_count: int
    lease_deadline_ms: int


class Deliver(_Frame, tag="deliver"):
    """A batch of messages for subscription handle ``sub``."""

    sub: str
    messages: list[DeliveredMessage]


class ReceiptOutcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The outcome of an ack-family op on one receipt."""

    receipt: str
    ok: bool
    code: str | None = None
    message: str | None = None
    deadline_ms: int | None = None


class Result(_Frame, tag="result"):
    """The outcome of a ``subscribe``/``credit``/``unsubscribe`` (empty ``results``)
    or of an ack-family op (one entry per receipt, in request order). A
    ``subscribe``'s names the subscription's delivery ``mode``."""

    results: list[ReceiptOutcome] = []
    seq: int | None = None
    sub: str | None = None
    mode: str | None = None


class Error(_Frame, tag="error"):
    """A failed frame: stable ``code``, human ``message``, JSON ``details``, and
    the ``seq`` / ``sub`` of the frame it refers to when known."""

    code: str
    message: str
    details: dict[str, Any] = {}
    seq: int | None = None
    sub: str | None = None


class Pong(_Frame, tag="pong"):
    """The answer to ``ping``."""

    seq: int | None = None


ServerFrame = Welcome | Confirm | Deliver | Result | Error | Pong


# -- decoding client frames (the server's side) -----------------------------------------


class _Probe(msgspec.Struct):
    """The fields worth echoing in an error about a frame that failed validation."""

    op: Any = None
    seq: Any = None
    sub: Any = None


_json_decoder = msgspec.json.Decoder(ClientFrame)
_msgpack_decoder = msgspec.msgpack.Decoder(ClientFrame)
_msgpack_fast_decoder = msgspec.msgpack.Decoder(BinaryClientFrame)
_json_probe = msgspec.json.Decoder(_Probe)
_msgpack_probe = msgspec.msgpack.Decoder(_Probe)


def decode_text(text: str | bytes) -> ClientFrame:
    """Decode a JSON text frame. Raises :class:`InvalidArgument` on anything invalid."""
    return _decode(_json_decoder, _json_probe, text)


def decode_binary(data: bytes) -> ClientFrame | BinaryPublish:
    """Decode a msgpack binary frame. Raises :class:`InvalidArgument` on anything invalid.

    Tries the fast shape first (see :class:`BinaryMessage`); whatever does not
    fit it, valid or not, is decoded again by the general decoder, which has
    the final word."""
    try:
        return _msgpack_fast_decoder.decode(data)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        pass
    return _decode(_msgpack_decoder, _msgpack_probe, data)


def _decode(
    decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder,
    probe: msgspec.json.Decoder | msgspec.msgpack.Decoder,
    data: str | bytes,
) -> ClientFrame:
    try:
        return decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as error:
        raise _invalid_frame(probe, data, str(error)) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError) as error:
        raise InvalidArgument("malformed frame: " + str(error), reason="malformed") from None


def _invalid_frame(
    probe: msgspec.json.Decoder | msgspec.msgpack.Decoder, data: str | bytes, problem: str
) -> InvalidArgument:
    """An :class:`InvalidArgument` naming the frame's ``seq``/``sub`` when readable."""
    try:
        fields = probe.decode(data)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        fields = _Probe()
    details: dict[str, Any] = {"reason": "invalid_frame"}
    if isinstance(fields.op, str) and fields.op not in CLIENT_OPS:
        details = {"reason": "unknown_op", "op": fields.op[:MAX_ID_CHARS]}
    if _is_sequence(fields.seq):
        details["seq"] = fields.seq
    if isinstance(fields.sub, str) and len(fields.sub) <= MAX_ID_CHARS:
        details["sub"] = fields.sub
    return InvalidArgument("invalid frame: " + problem, **details)


def _is_sequence(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_SEQUENCE


CLIENT_OPS = frozenset(
    member.__struct_config__.tag
    for member in ClientFrame.__args__  # type: ignore[attr-defined]
)


def to_message(published: PublishedMessage) -> Message:
    """The broker's :class:`Message` for a published wire message."""
    payload = published.payload
    assert isinstance(payload, bytes)  # __post_init__ converted it
    return Message(
        subject=published.subject,
        payload=payload,
        key=published.key,
        headers=published.headers,
        id=published.id,
        deliver_at_ms=published.deliver_at_ms,
        priority=published.priority,
        expires_at_ms=published.expires_at_ms,
    )


def frame_size_bytes(data: str | bytes, limit_bytes: int) -> int:
    """The frame's size in bytes, exact whenever it matters for ``limit_bytes``
    (a text frame is encoded only when its length alone cannot decide)."""
    if isinstance(data, bytes):
        return len(data)
    if len(data) > limit_bytes or len(data) * 4 <= limit_bytes:
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


# -- decoding server frames (the SDK's side) ----------------------------------------------

_server_msgpack_decoder = msgspec.msgpack.Decoder(ServerFrame)
_server_json_decoder = msgspec.json.Decoder(ServerFrame)


def decode_server_frame(data: bytes | str) -> ServerFrame:
    """A server frame from a WebSocket message: msgpack, or JSON text should the
    server answer in text (the ``error`` before a close, say).

    Raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` on garbage."""
    if isinstance(data, str):
        return _server_json_decoder.decode(data)  # type: ignore[no-any-return]
    return _server_msgpack_decoder.decode(data)  # type: ignore[no-any-return]


decode_server_binary = _server_msgpack_decoder.decode
"""A msgpack server frame: :func:`decode_server_frame` of ``bytes``, without a
Python call of its own (the SDK decodes every frame it receives)."""


# -- encoding ---------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Fallback for error details that are not JSON-able: their ``str``."""
    return str(value)


_json_encoder = msgspec.json.Encoder(enc_hook=_jsonable)
_msgpack_encoder = msgspec.msgpack.Encoder(enc_hook=_jsonable)


def encode_text(frame: msgspec.Struct) -> str:
    """The frame as a JSON text frame."""
    return _json_encoder.encode(frame).decode("utf-8")


def encode_binary(frame: msgspec.Struct) -> bytes:
    """The frame as a msgpack binary frame."""
    return _msgpack_encoder.encode(frame)


def error_frame(error: RelayError, seq: int | None = None, sub: str | None = None) -> Error:
    """The one mapping of a :class:`RelayError` to an ``error`` frame."""
    details = dict(error.details)
    seq = seq if seq is not None else _pop_sequence(details)
    sub = sub if sub is not None else _pop_text(details, "sub")
    return Error(code=error.code, message=error.message, details=details, seq=seq, sub=sub)


def _pop_sequence(details: dict[str, Any]) -> int | None:
    value = details.pop("seq", None)
    return value if _is_sequence(value) else None


def _pop_text(details: dict[str, Any], name: str) -> str | None:
    value = details.pop(name, None)
    return value if isinstance(value, str) else None


def confirm_frame(seq: int, results: list[Any]) -> Confirm:
    """The ``confirm`` of a publish from the broker's results. They have the fields
    of :class:`PublishResult` and msgspec encodes them as they are, so no
    per-message copy is made."""
    return Confirm(seq=seq, results=results)


def deliver_frame(sub: str, deliveries: list[Any], encoding: Encoding) -> Deliver:
    """A ``deliver`` frame for a batch of broker deliveries (``Received`` values)."""
    if encoding == "msgpack":
        return Deliver(sub=sub, messages=[_delivered_binary(delivery) for delivery in deliveries])
    return Deliver(sub=sub, messages=[_delivered_text(delivery) for delivery in deliveries])


def _delivered_binary(delivery: Any) -> DeliveredMessage:
    message: Message = delivery.message
    return DeliveredMessage(
        id=message.id or f"{message.partition}-{message.offset}",
        subject=message.subject,
        payload=message.payload,
        key=message.key,
        headers=message.headers,
        timestamp_ms=message.timestamp_ms,
        partition=message.partition,
        offset=message.offset,
        priority=message.priority,
        deliver_at_ms=message.deliver_at_ms,
        expires_at_ms=message.expires_at_ms,
        receipt=delivery.receipt,
        delivery_count=delivery.delivery_count,
        lease_deadline_ms=delivery.deadline_ms,
    )


def _delivered_text(delivery: Any) -> DeliveredMessage:
    delivered = _delivered_binary(delivery)
    delivered.payload, delivered.encoding = payload_text(delivery.message.payload)
    return delivered
