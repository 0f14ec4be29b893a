"""The payload of a bench message: who sent it, its number, and when.

Every message carries an ASCII header, padded with ``.`` to the message size::

    0      6 7             19 20                  39 40
    +------+-+--------------+-+--------------------+-+--------- ...
    |producer| sequence (12) | sent_ns (19 digits) |:| padding
    +------+-+--------------+-+--------------------+-+--------- ...
      6 digits  ':'            ':'

ASCII so that the HTTP API carries it as plain UTF-8 text (no base64), and the
same bytes travel both protocols. ``sent_ns`` is :func:`time.perf_counter_ns`
of the bench process as the message is handed to the client (the send call,
as other broker benchmarks measure). A paced producer's lateness behind its
schedule is recorded apart, as schedule lag (:class:`relaymq.bench.pacing.Pacer`),
so a stalled publisher still shows.
"""

from __future__ import annotations

HEADER_BYTES = 40
MAX_PRODUCERS = 999_999
MAX_SEQUENCE = 999_999_999_999


def encode_payload(producer: int, sequence: int, sent_ns: int, size_bytes: int) -> bytes:
    """The payload of message ``sequence`` of ``producer``, ``size_bytes`` long (at
    least the header)."""
    header = b"%06d:%012d:%019d:" % (producer, sequence, sent_ns)
    return header + b"." * (size_bytes - HEADER_BYTES) if size_bytes > HEADER_BYTES else header


def decode_payload(payload: bytes) -> tuple[int, int, int]:
    """``(producer, sequence, sent_ns)`` of a bench payload; ``ValueError`` if it is not one."""
    if len(payload) < HEADER_BYTES or payload[6:7] != b":" or payload[19:20] != b":":
        raise ValueError("not a bench payload")
    return int(payload[0:6]), int(payload[7:19]), int(payload[20:39])
