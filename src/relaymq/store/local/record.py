"""The byte format of segment files: the segment header and the record frame.

This module owns encoding a batch of messages into one buffer and decoding
frames back. It is pure: it takes and returns bytes and does no I/O, so the
decoders can be fuzzed. ``docs/storage-format.md`` describes the same format.

Segment header, 16 bytes, at position 0 of every segment file (little-endian)::

    0        4         6          8                        16
    +--------+---------+----------+------------------------+
    | magic  | version | reserved | base_offset u64        |
    | "RMQL" | u16 = 1 | u16 = 0  |                        |
    +--------+---------+----------+------------------------+

Record frame, 24 bytes of header then the body (little-endian)::

    0            4            8                 16                24
    +------------+------------+-----------------+-----------------+----------------+
    | length u32 | crc32c u32 | offset u64      | timestamp_ms u64| body (msgpack) |
    +------------+------------+-----------------+-----------------+----------------+
                              |<------------- length bytes, covered by crc32c ----->|

``length`` counts the bytes after the crc field (16 + body); a frame takes
``8 + length`` bytes. ``body`` is the msgpack array ``[subject, key, headers,
id, deliver_at_ms, priority, expires_at_ms, payload]``. The offset is stored in
every record so recovery and index checks can verify where they are.

The active segment may end in space reserved ahead of the data, which reads as
zeros. A frame's length is never 0, so zeros where a frame should start, up to
the end of the file, are the end of the data (:func:`is_zero_fill`), not damage.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import msgspec
from crc32c import crc32c

from relaymq.core.message import Message

SEGMENT_MAGIC = b"RMQL"
FORMAT_VERSION = 1
SEGMENT_HEADER = struct.Struct("<4sHHQ")
SEGMENT_HEADER_BYTES = SEGMENT_HEADER.size

FRAME_PREFIX = struct.Struct("<II")  # length, crc32c
RECORD_HEADER = struct.Struct("<IIQQ")  # length, crc32c, offset, timestamp_ms
RECORD_HEADER_BYTES = RECORD_HEADER.size
OFFSET_AND_TIMESTAMP = struct.Struct("<QQ")
FRAME_PREFIX_BYTES = FRAME_PREFIX.size
# The header bytes a frame's length and crc32c cover (offset and timestamp).
_COVERED_HEADER_BYTES = OFFSET_AND_TIMESTAMP.size
# A frame whose length field is larger than this is damage, not data.
MAX_RECORD_BYTES = 256 * 1024 * 1024

RecordBody = tuple[str, str | None, dict[str, str], str | None, int | None, int, int | None, bytes]
_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(RecordBody)


class FrameError(Exception):
    """A frame could not be decoded; ``reason`` says why, ``position`` where it starts."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(f"{reason} at position {position}")
        self.reason = reason
        self.position = position


class SegmentHeaderError(Exception):
    """A segment file does not start with a valid header."""


class EncodedBatch(NamedTuple):
    """A batch encoded as consecutive frames; ``sizes`` are the frames' sizes in order
    (the segment indexes by them and the recent-message window counts them).
    A named tuple: one is built per append, and that is cheaper than a frozen dataclass."""

    data: bytes
    sizes: list[int]


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame header: where it is and what it says."""

    position: int
    end: int
    offset: int
    timestamp_ms: int


def encode_segment_header(base_offset: int) -> bytes:
    """The 16-byte header of a segment whose first record has ``base_offset``."""
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, base_offset)


def decode_segment_header(data: bytes) -> int:
    """Check a segment header and return its base offset."""
    if len(data) < SEGMENT_HEADER_BYTES:
        raise SegmentHeaderError("short segment header")
    magic, version, _reserved, base_offset = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise SegmentHeaderError(f"bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise SegmentHeaderError(f"unsupported format version {version}")
    return int(base_offset)


def encode_batch(messages: Sequence[Message], first_offset: int) -> EncodedBatch:
    """Encode ``messages`` with consecutive offsets from ``first_offset`` into one buffer."""
    parts: list[bytes] = []
    sizes: list[int] = []
    offset = first_offset
    for message in messages:
        body = _encoder.encode(
            (
                message.subject,
                message.key,
                message.headers,
                message.id,
                message.deliver_at_ms,
                message.priority,
                message.expires_at_ms,
                message.payload,
            )
        )
        covered = OFFSET_AND_TIMESTAMP.pack(offset, message.timestamp_ms)
        length = _COVERED_HEADER_BYTES + len(body)
        parts += (FRAME_PREFIX.pack(length, crc32c(body, crc32c(covered))), covered, body)
        sizes.append(FRAME_PREFIX_BYTES + length)
        offset += 1
    return EncodedBatch(b"".join(parts), sizes)


def read_frame(data: bytes | memoryview, position: int) -> Frame:
    """Check the frame at ``position`` of ``data`` (length, bounds and CRC) and describe it.

    Raises :class:`FrameError` for a short, oversized or CRC-failing frame.
    """
    available = len(data) - position
    if available < RECORD_HEADER_BYTES:
        raise FrameError("short record header", position)
    length, crc, offset, timestamp_ms = RECORD_HEADER.unpack_from(data, position)
    if length < OFFSET_AND_TIMESTAMP.size or length > MAX_RECORD_BYTES:
        raise FrameError(f"bad record length {length}", position)
    end = position + FRAME_PREFIX_BYTES + length
    if end > len(data):
        raise FrameError("short record", position)
    if crc32c(memoryview(data)[position + FRAME_PREFIX_BYTES : end]) != crc:
        raise FrameError("crc mismatch", position)
    return Frame(position, end, offset, timestamp_ms)


def frame_length(data: bytes | memoryview, position: int) -> int | None:
    """The total length of the frame at ``position`` by its length field, or ``None``
    when not even the length field fits in ``data``."""
    if len(data) - position < FRAME_PREFIX_BYTES:
        return None
    (length,) = struct.unpack_from("<I", data, position)
    return FRAME_PREFIX_BYTES + int(length)


def decode_message(data: bytes | memoryview, frame: Frame) -> Message:
    """Build the message stored in a checked ``frame`` of ``data``."""
    body = memoryview(data)[frame.position + RECORD_HEADER_BYTES : frame.end]
    return decode_body(body, frame.offset, frame.timestamp_ms, frame.position)


def decode_body(body: bytes | memoryview, offset: int, timestamp_ms: int, position: int) -> Message:
    """Build a message from a checked record body and its header fields."""
    try:
        subject, key, headers, id_, deliver_at_ms, priority, expires_at_ms, payload = (
            _body_decoder.decode(body)
        )
    except msgspec.DecodeError as error:
        raise FrameError(f"bad record body: {error}", position) from error
    return Message(
        subject=subject,
        payload=payload,
        key=key,
        headers=headers,
        id=id_,
        timestamp_ms=timestamp_ms,
        deliver_at_ms=deliver_at_ms,
        priority=priority,
        expires_at_ms=expires_at_ms,
        offset=offset,
    )


def is_zero_fill(data: bytes, position: int) -> bool:
    """Whether ``data`` holds only zero bytes from ``position`` to its end: space
    reserved ahead of the data and never written, the normal end of a segment."""
    return data.count(0, position) == len(data) - position


def iter_frames(data: bytes | memoryview, position: int) -> Iterator[Frame]:
    """Every checked frame from ``position`` to the end of ``data``; raises
    :class:`FrameError` at the first damaged one."""
    end = len(data)
    while position < end:
        frame = read_frame(data, position)
        yield frame
        position = frame.end
