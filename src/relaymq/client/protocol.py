"""The WebSocket frames as the SDK speaks them: msgpack binary frames, msgspec structs.

Owns the client's view of the protocol in ``docs/protocol.md``: the structs it
encodes (``hello``, ``publish``, ``subscribe``, the ack family, ...) and the
server frames it decodes (``welcome``, ``confirm``, ``deliver``, ``result``,
``error``, ``pong``). It imports nothing of the server, so ``relaymq.client``
stays light. Encoding and decoding are pure functions of bytes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from relaymq.client.models import PublishResult

PROTOCOL_VERSION = 1


class _ClientFrame(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="op"):
    """Base of every frame the SDK sends."""


class Hello(_ClientFrame, tag="hello"):
    """Pins msgpack as the encoding of every server frame."""

    encoding: str = "msgpack"
    seq: int | None = None


class OutgoingMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message of a ``publish`` frame (``payload`` is raw msgpack ``bin``)."""

    subject: str
    payload: bytes = b""
    key: str | None = None
    headers: dict[str, str] = {}
    id: str | None = None
    deliver_at_ms: int | None = None
    priority: int = 0
    expires_at_ms: int | None = None


class Publish(_ClientFrame, tag="publish"):
    """A batch of messages, confirmed as a whole by ``confirm`` with the same ``seq``."""

    seq: int
    messages: list[OutgoingMessage]
    stream: str | None = None


class Subscribe(_ClientFrame, tag="subscribe"):
    """Attach to a subscription under the connection-local handle ``sub``."""

    sub: str
    subscription: str
    credit: int = 0
    batch: int | None = None
    seq: int | None = None


class Unsubscribe(_ClientFrame, tag="unsubscribe"):
    """Detach ``sub``; the server redelivers what it held unacked."""

    sub: str
    seq: int | None = None


class Ack(_ClientFrame, tag="ack"):
    """Acknowledge receipts (cumulative in ``ordered`` mode)."""

    sub: str
    receipts: list[str]
    seq: int | None = None


class Nack(_ClientFrame, tag="nack"):
    """Redeliver after ``delay_ms`` (``None``: the subscription's backoff)."""

    sub: str
    receipts: list[str]
    delay_ms: int | None = None
    error: str | None = None
    seq: int | None = None


class Extend(_ClientFrame, tag="extend"):
    """Push lease deadlines out by ``extend_ms`` (``None``: the ack timeout)."""

    sub: str
    receipts: list[str]
    extend_ms: int | None = None
    seq: int | None = None


class Term(_ClientFrame, tag="term"):
    """Dead-letter the receipts' messages at once."""

    sub: str
    receipts: list[str]
    reason: str | None = None
    seq: int | None = None


class Ping(_ClientFrame, tag="ping"):
    """Keep-alive; answered by ``pong``."""

    seq: int | None = None


ClientFrame = Hello | Publish | Subscribe | Unsubscribe | Ack | Nack | Extend | Term | Ping


# -- server frames ----------------------------------------------------------------------


class _ServerFrame(msgspec.Struct, kw_only=True, tag_field="op"):
    """Base of every frame the server sends."""


class Welcome(_ServerFrame, tag="welcome"):
    """The answer to ``hello``: the connection id and the server's limits."""

    version: int
    connection_id: str
    limits: dict[str, int] = {}
    seq: int | None = None


class Confirm(_ServerFrame, tag="confirm"):
    """Every message of publish ``seq`` is durable."""

    seq: int
    results: list[PublishResult]


class Delivered(msgspec.Struct, kw_only=True):
    """A message in a ``deliver`` frame, as msgpack carries it."""

    id: str
    subject: str
    payload: bytes
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


class Deliver(_ServerFrame, tag="deliver"):
    """A batch of messages for the handle ``sub``."""

    sub: str
    messages: list[Delivered]


class ReceiptOutcome(msgspec.Struct, kw_only=True):
    """The outcome of an ack-family op on one receipt."""

    receipt: str
    ok: bool
    code: str | None = None
    message: str | None = None
    deadline_ms: int | None = None


class Result(_ServerFrame, tag="result"):
    """The outcome of a request with a ``seq`` (or of receipts that failed)."""

    results: list[ReceiptOutcome] = []
    seq: int | None = None
    sub: str | None = None


class Error(_ServerFrame, tag="error"):
    """A failed frame, with the ``seq`` / ``sub`` it refers to when known."""

    code: str
    message: str
    details: dict[str, Any] = {}
    seq: int | None = None
    sub: str | None = None


class Pong(_ServerFrame, tag="pong"):
    """The answer to ``ping``."""

    seq: int | None = None


ServerFrame = Welcome | Confirm | Deliver | Result | Error | Pong

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ServerFrame)


def encode(frame: ClientFrame) -> bytes:
    """A client frame as a msgpack binary WebSocket message."""
    return _encoder.encode(frame)


def decode(data: bytes | str) -> ServerFrame:
    """A server frame from a WebSocket message (msgpack, or JSON text should the
    server answer in text, e.g. the ``error`` before a close).

    Raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` on garbage."""
    if isinstance(data, str):
        return msgspec.json.decode(data, type=ServerFrame)
    return _decoder.decode(data)
