"""The transport's own framing, byte by byte, against websockets' framing.

Once the handshake is done :class:`~relaymq.client.transport.WebSocketTransport`
splits the stream into frames itself and hands every frame but a whole unmasked
binary one to websockets' protocol. These tests feed it streams cut at every
byte (what no real socket does reliably, hence a stand-in for the socket that
records what is written) and check that it gets what websockets' own parser
gets: the same messages in the same order, the pong of a ping, the echo of a
close and nothing after it, the failure of a masked frame or of a message
inside a fragmented one, and the abnormal closure of a frame cut short by the
end of the stream. Hypothesis then makes up streams of any frames, valid or not,
cut anywhere, and checks the same against websockets' client, final state and
close codes included. Frames it sends are websockets' frames byte for byte.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Generator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets import frames as ws_frames
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import CLOSING, OPEN, Event
from websockets.uri import parse_uri
from websockets.utils import accept_key, apply_mask

from relaymq.client.transport import Message, WebSocketTransport, masked_binary_frame

URL = "ws://relaymq.test/v1/ws"
DATA_OPCODES = (Opcode.BINARY, Opcode.TEXT, Opcode.CONT)


class RecordingSocket:
    """The asyncio transport's part: records writes, and whether it was closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.eof_written = False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def server_frame(opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = False) -> bytes:
    """A frame as a server sends it (websockets' own encoder)."""
    return Frame(opcode, data, fin).serialize(mask=mask)


def response_to(request: bytes) -> bytes:
    """The server's ``101`` accepting the upgrade ``request``."""
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
    )


async def connected(messages: list[Message]) -> tuple[WebSocketTransport, RecordingSocket]:
    """A transport whose upgrade request went out (its response is up to the test)."""
    transport = WebSocketTransport(ClientProtocol(parse_uri(URL), max_size=None), messages.append)
    socket = RecordingSocket()
    transport.connection_made(socket)  # type: ignore[arg-type]
    transport.protocol.send_request(transport.protocol.connect())
    transport._flush()
    return transport, socket


ClientFrame = tuple[Opcode, bytes]


def accepted_protocol() -> ClientProtocol:
    """websockets' client protocol, its upgrade accepted."""
    protocol = ClientProtocol(parse_uri(URL), max_size=None)
    protocol.send_request(protocol.connect())
    protocol.receive_data(response_to(b"".join(protocol.data_to_send())))
    protocol.events_received()  # the response
    return protocol


def websockets_reading(
    stream: bytes, *, eof: bool = False
) -> tuple[list[Message], list[ClientFrame], ClientProtocol]:
    """What websockets' client makes of ``stream`` (after the response), then of the
    end of the stream if ``eof``: the messages, the frames it writes back, and its
    protocol at the end. As its asyncio client does (the protocol leaves text
    undecoded), it fails the connection (1007) when a text message is not UTF-8:
    here right after the message's last byte, where the transport does."""
    protocol = accepted_protocol()
    protocol.receive_data(stream)
    messages, bad_text = assembled(protocol.events_received())
    if bad_text is not None:
        events_read, error = bad_text
        cut = shortest_start_reading(stream, events_read)
        protocol = accepted_protocol()
        protocol.receive_data(stream[:cut])
        protocol.fail(CloseCode.INVALID_DATA, f"{error.reason} at position {error.start}")
        protocol.receive_data(stream[cut:])  # discarded, as after any failure
    if eof:
        protocol.receive_eof()
    return messages, client_frames(b"".join(protocol.data_to_send())), protocol


def assembled(
    events: list[Event],
) -> tuple[list[Message], tuple[int, UnicodeDecodeError] | None]:
    """The messages ``events`` carry, up to the first text message that is not
    UTF-8; then how many events it took to read that one, and why it is not."""
    messages: list[Message] = []
    fragments: list[bytes] = []
    opcode = Opcode.BINARY
    for events_read, event in enumerate(events, 1):
        if not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            continue
        if event.opcode is not Opcode.CONT:
            opcode = event.opcode
        fragments.append(bytes(event.data))
        if not event.fin:
            continue
        whole, fragments = b"".join(fragments), []
        if opcode is Opcode.BINARY:
            messages.append(whole)
            continue
        try:
            messages.append(whole.decode())
        except UnicodeDecodeError as error:
            return messages, (events_read, error)
    return messages, None


def shortest_start_reading(stream: bytes, events_wanted: int) -> int:
    """How long the shortest start of ``stream`` is from which websockets' parser
    reads ``events_wanted`` events (by bisection: the whole stream reads them)."""
    low, high = 0, len(stream)
    while low < high:
        middle = (low + high) // 2
        protocol = accepted_protocol()
        protocol.receive_data(stream[:middle])
        if len(protocol.events_received()) >= events_wanted:
            high = middle
        else:
            low = middle + 1
    return low


def outcome(protocol: ClientProtocol) -> tuple[object, ...]:
    """Where a protocol ended: its state, the close frames each way and in which
    order, why its parser stopped, and whether it ended its side of the stream."""
    return (
        protocol.state,
        protocol.close_rcvd,
        protocol.close_sent,
        protocol.close_rcvd_then_sent,
        repr(protocol.parser_exc),
        protocol.eof_sent,
    )


def client_frames(stream: bytes) -> list[ClientFrame]:
    """The opcode and unmasked payload of every frame in ``stream`` (masks are random)."""
    unread = bytearray(stream)

    def read_exact(n: int) -> Generator[None, None, bytes]:
        chunk = bytes(unread[:n])
        del unread[:n]
        return chunk
        yield  # a generator, as websockets' parser expects

    frames = []
    while unread:
        parser = Frame.parse(read_exact, mask=True)
        try:
            next(parser)
        except StopIteration as done:
            frames.append((done.value.opcode, bytes(done.value.data)))
    return frames


def written_frames(socket: RecordingSocket) -> list[ClientFrame]:
    """The frames the transport wrote after its upgrade request."""
    written = bytes(socket.written)
    return client_frames(written[written.index(b"\r\n\r\n") + 4 :])


EVERY_KIND = b"".join(
    [
        server_frame(Opcode.BINARY, b"small"),
        server_frame(Opcode.BINARY, b""),
        server_frame(Opcode.BINARY, bytes(range(256)) * 2),  # a 16-bit length
        server_frame(Opcode.PING, b"there?"),
        server_frame(Opcode.TEXT, "h\u00e9llo".encode()),
        server_frame(Opcode.BINARY, b"frag", fin=False),
        server_frame(Opcode.PING, b"between fragments"),
        server_frame(Opcode.CONT, b"men", fin=False),
        server_frame(Opcode.CONT, b"ted"),
        server_frame(Opcode.PONG, b"unasked"),
        server_frame(Opcode.BINARY, b"after"),
    ]
)
LONG = server_frame(Opcode.BINARY, b"L" * 70_000)  # a 64-bit length
CLOSE_THEN_MORE = server_frame(
    Opcode.CLOSE, Close(CloseCode.GOING_AWAY, "bye").serialize()
) + server_frame(Opcode.BINARY, b"after the close")


@pytest.mark.parametrize("stream", [EVERY_KIND, EVERY_KIND + CLOSE_THEN_MORE, LONG + EVERY_KIND])
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, 1_000_000])
async def test_every_cut_of_the_stream_reads_as_websockets_reads_it(
    stream: bytes, chunk_bytes: int
) -> None:
    messages: list[Message] = []
    transport, socket = await connected(messages)
    whole = response_to(bytes(socket.written)) + stream  # the first frame may share a read
    for start in range(0, len(whole), chunk_bytes):
        transport.data_received(whole[start : start + chunk_bytes])
    expected_messages, expected_writes, _ = websockets_reading(stream)
    assert messages == expected_messages
    assert written_frames(socket) == expected_writes
    closed = CLOSE_THEN_MORE in stream
    assert transport.protocol.state is (CLOSING if closed else OPEN)
    assert transport._framing is not closed


async def test_a_masked_frame_from_the_server_fails_the_connection() -> None:
    messages: list[Message] = []
    transport, socket = await connected(messages)
    transport.data_received(response_to(bytes(socket.written)))
    transport.data_received(server_frame(Opcode.BINARY, b"fine"))
    transport.data_received(server_frame(Opcode.BINARY, b"masked", mask=True)[:3])
    assert messages == [b"fine"]
    assert transport.protocol.state is CLOSING
    assert written_frames(socket)[-1][0] is Opcode.CLOSE
    assert transport.protocol.close_sent is not None
    assert transport.protocol.close_sent.code == CloseCode.PROTOCOL_ERROR


async def test_a_message_inside_a_fragmented_one_fails_the_connection() -> None:
    messages: list[Message] = []
    transport, socket = await connected(messages)
    transport.data_received(
        response_to(bytes(socket.written))
        + server_frame(Opcode.BINARY, b"frag", fin=False)
        + server_frame(Opcode.BINARY, b"not a continuation")
        + server_frame(Opcode.BINARY, b"ignored")
    )
    assert messages == []
    assert transport.protocol.close_sent is not None
    assert transport.protocol.close_sent.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("cut", [1, 2, 5, 300])
async def test_a_frame_cut_short_by_the_end_of_the_stream_is_an_abnormal_closure(
    cut: int,
) -> None:
    messages: list[Message] = []
    transport, socket = await connected(messages)
    transport.data_received(response_to(bytes(socket.written)))
    transport.data_received(server_frame(Opcode.BINARY, b"x" * 400)[:cut])
    transport.eof_received()
    transport.connection_lost(None)
    assert messages == []
    closed = transport.close_exception()
    assert isinstance(closed, ConnectionClosedError) and closed.rcvd is None
    assert transport.protocol.close_code == CloseCode.ABNORMAL_CLOSURE
    assert isinstance(closed.__cause__, EOFError)
    assert "stream ends after" in str(closed.__cause__)  # websockets saw the partial frame


async def test_a_connection_lost_in_a_frame_leaves_the_protocol_closed() -> None:
    messages: list[Message] = []
    transport, socket = await connected(messages)
    transport.data_received(response_to(bytes(socket.written)))
    transport.data_received(server_frame(Opcode.BINARY, b"x" * 400)[:10])
    transport.connection_lost(ConnectionResetError())
    assert transport.closed.done()
    assert transport.protocol.close_code == CloseCode.ABNORMAL_CLOSURE
    assert isinstance(transport.close_exception().__cause__, ConnectionResetError)


def raw_frame(first: int, payload: bytes, *, length_bytes: int = 0, masked: bool = False) -> bytes:
    """A frame with any first byte (extension bits, a reserved opcode, ...), its
    payload's length in the 7-bit field if ``length_bytes`` is 0 and it fits, else in
    an extended field of 2 or 8 bytes (minimal or not), masked if ``masked``."""
    length = len(payload)
    field_bytes = max(length_bytes, 0 if length < 126 else 2 if length < 65536 else 8)
    seven_bit_length = {0: length, 2: 126, 8: 127}[field_bytes]
    head = bytes([first, (0x80 if masked else 0) | seven_bit_length])
    if field_bytes:
        head += length.to_bytes(field_bytes, "big")
    if not masked:
        return head + payload
    mask = b"\x0f\x1e\x2d\x3c"
    return head + mask + apply_mask(payload, mask)


TOP_BIT_LENGTH = b"\x82\x7f" + (2**63 + 5).to_bytes(8, "big")


@pytest.mark.parametrize(
    ("header", "framing"),
    [
        # websockets fails the connection once the payload is read, or at once (opcodes)
        pytest.param(raw_frame(0xC2, b"r" * 70_000), False, id="rsv1"),
        pytest.param(raw_frame(0x92, b"r" * 300), False, id="rsv3"),
        pytest.param(raw_frame(0x83, b"r" * 70_000), False, id="reserved opcode"),
        pytest.param(raw_frame(0x8B, b"r"), False, id="reserved control opcode"),
        pytest.param(raw_frame(0x09, b"fragment"), False, id="fragmented ping"),
        pytest.param(raw_frame(0x89, b"p" * 126), False, id="ping too long"),
        pytest.param(raw_frame(0x88, b"c" * 70_000), False, id="close too long"),
        pytest.param(TOP_BIT_LENGTH + b"xyz", False, id="length top bit"),  # waited for
        # lengths not minimal, but valid
        pytest.param(raw_frame(0x89, b"fine", length_bytes=2), True, id="ping 16-bit"),
        pytest.param(raw_frame(0x89, b"fine", length_bytes=8), True, id="ping 64-bit"),
        pytest.param(raw_frame(0x82, b"m" * 70_000, length_bytes=8), True, id="binary 64-bit"),
    ],
)
async def test_the_header_alone_decides_whether_the_protocol_reads_the_rest(
    header: bytes, framing: bool
) -> None:
    messages: list[Message] = []
    transport, socket = await connected(messages)
    transport.data_received(response_to(bytes(socket.written)))
    header_bytes = 2 + {126: 2, 127: 8}.get(header[1], 0)
    for byte in range(header_bytes):
        transport.data_received(header[byte : byte + 1])
    assert transport._framing is framing  # decided by the header alone
    assert bool(transport._unparsed) is framing  # a header waits here only while framing
    transport.data_received(header[header_bytes:])
    expected_messages, expected_writes, expected = websockets_reading(header)
    assert messages == expected_messages
    assert written_frames(socket) == expected_writes
    assert outcome(transport.protocol) == outcome(expected)


async def test_after_a_refused_handshake_all_goes_straight_to_the_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport, _ = await connected([])
    body = b"no\r\n\r\n entry"
    head = b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(body)
    transport.data_received(head + body[:5])

    def searched_again(data: bytes) -> None:
        raise AssertionError("searched a refusal's body for the response's blank line")

    monkeypatch.setattr(transport, "_receive_response", searched_again)
    transport.data_received(body[5:])
    refusal = transport.protocol.handshake_exc
    assert isinstance(refusal, InvalidStatus)
    assert refusal.response.status_code == 403
    assert refusal.response.body == body


# -- any stream, fuzzed -------------------------------------------------------------------------

FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def filled(pattern: bytes, length: int) -> bytes:
    """``length`` bytes of ``pattern`` repeated (long payloads cost hypothesis nothing)."""
    return (pattern * (length // len(pattern) + 1))[:length]


length_fields = st.sampled_from([0, 0, 0, 2, 8])  # mostly minimal
payload_lengths = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536]) | st.integers(0, 130)
payloads = st.builds(filled, st.binary(min_size=1, max_size=8), payload_lengths)
control_payloads = st.builds(filled, st.binary(min_size=1, max_size=8), st.integers(0, 125))
texts = st.text(max_size=20).map(str.encode) | st.binary(max_size=6)  # the latter seldom UTF-8
close_payloads = st.sampled_from([b"", b"\x03"]) | st.builds(
    lambda code, reason: struct.pack("!H", code) + reason,
    st.sampled_from([1000, 1001, 1002, 1011, 3000, 4999, 999, 1005, 1015, 5000]),
    st.text(max_size=10).map(str.encode) | st.binary(max_size=4),
)
control_frames = st.builds(
    raw_frame, st.sampled_from([0x89, 0x8A]), control_payloads, length_bytes=length_fields
) | st.builds(raw_frame, st.just(0x88), close_payloads, length_bytes=length_fields)


binary_frames = st.builds(raw_frame, st.just(0x82), payloads, length_bytes=length_fields)


@st.composite
def fragmented_messages(draw: st.DrawFn) -> bytes:
    """A text or binary message in two fragments or more, cut anywhere (inside a
    character, for text), with control frames between them, and now and then a
    binary message, which may not come there."""
    opcode, data = draw(st.tuples(st.just(0x01), texts) | st.tuples(st.just(0x02), payloads))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), min_size=1, max_size=3)))
    pieces = [data[begin:end] for begin, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    parts = []
    for index, piece in enumerate(pieces):
        first = (0x80 if index == len(pieces) - 1 else 0) | (opcode if index == 0 else 0x00)
        parts.append(raw_frame(first, piece, length_bytes=draw(length_fields)))
        if index < len(pieces) - 1:
            between = control_frames | control_frames | control_frames | binary_frames
            parts.extend(draw(st.lists(between, max_size=2)))
    return b"".join(parts)


odd_frames = st.one_of(  # out of place, or invalid
    st.builds(raw_frame, st.sampled_from([0x01, 0x02]), payloads),  # never finished
    st.builds(raw_frame, st.sampled_from([0x00, 0x80]), payloads),  # continuing nothing
    # any first byte: extension bits, reserved opcodes, fragmented control frames, ...
    st.builds(raw_frame, st.integers(0, 255), payloads, length_bytes=length_fields),
    st.builds(raw_frame, st.sampled_from([0x82, 0x81, 0x89]), payloads, masked=st.just(True)),
    st.builds(
        raw_frame,
        st.sampled_from([0x88, 0x89, 0x8A]),
        st.builds(filled, st.binary(min_size=1, max_size=8), st.integers(126, 300)),
    ),
)
stream_frames = st.one_of(  # mostly valid, so that most streams go on after their first frames
    binary_frames,
    binary_frames,
    binary_frames,
    st.builds(raw_frame, st.just(0x81), texts, length_bytes=length_fields),
    control_frames,
    fragmented_messages(),
    odd_frames,
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A few frames, the last perhaps cut short or followed by a length too long to
    be valid (which websockets waits for, and so must the transport)."""
    whole = draw(st.lists(stream_frames, min_size=1, max_size=6))
    stream = b"".join(whole)
    ending = draw(st.sampled_from(["whole", "whole", "cut short", "top bit"]))
    if ending == "cut short":
        return stream[: draw(st.integers(len(stream) - len(whole[-1]), len(stream)))]
    if ending == "top bit":
        return stream + TOP_BIT_LENGTH + b"never whole"
    return stream


@FUZZ_SETTINGS
@given(
    stream=streams(),
    eof=st.booleans(),
    chunk_bytes=st.lists(
        st.sampled_from([1, 2, 3, 7, 64]) | st.integers(1, 100_000), min_size=1, max_size=5
    ),
)
async def test_any_stream_in_any_chunks_reads_as_websockets_reads_it(
    stream: bytes, eof: bool, chunk_bytes: list[int]
) -> None:
    messages: list[Message] = []
    transport, socket = await connected(messages)
    whole = response_to(bytes(socket.written)) + stream
    sizes = itertools.cycle(chunk_bytes)
    start = 0
    while start < len(whole):
        end = start + next(sizes)
        transport.data_received(whole[start:end])
        start = end
    if eof:
        transport.eof_received()
    expected_messages, expected_writes, expected = websockets_reading(stream, eof=eof)
    assert messages == expected_messages
    assert written_frames(socket) == expected_writes
    assert socket.eof_written is expected.eof_sent
    assert outcome(transport.protocol) == outcome(expected)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70_000])
def test_a_sent_frame_is_websockets_frame_byte_for_byte(
    length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (bytes(range(256)) * (length // 256 + 1))[:length]
    mask = b"\x01\x82\xfe\x7f"
    monkeypatch.setattr(ws_frames.secrets, "token_bytes", lambda n: mask)
    assert masked_binary_frame(data, mask) == Frame(Opcode.BINARY, data).serialize(mask=True)


async def test_sent_frames_are_masked_with_a_fresh_mask_each() -> None:
    transport, socket = await connected([])
    transport.data_received(response_to(bytes(socket.written)))
    socket.written.clear()
    for _ in range(600):  # more than one draw of masks
        assert transport.send_nowait(b"payload")
    assert client_frames(bytes(socket.written)) == [(Opcode.BINARY, b"payload")] * 600
    frame_bytes = 2 + 4 + len(b"payload")  # the header, the mask, the payload
    starts = range(0, 600 * frame_bytes, frame_bytes)
    masks = {bytes(socket.written[start + 2 : start + 6]) for start in starts}
    assert len(masks) > 590  # random 32-bit masks: a repeat or two at most


async def test_send_nowait_refuses_while_paused_or_closing() -> None:
    transport, socket = await connected([])
    transport.data_received(response_to(bytes(socket.written)))
    transport.pause_writing()
    assert not transport.send_nowait(b"later")
    transport.resume_writing()
    assert transport.send_nowait(b"now")
    transport.protocol.send_close(CloseCode.NORMAL_CLOSURE)
    assert not transport.send_nowait(b"too late")
