"""The transport's own framing, byte by byte, against websockets' framing.

Once the handshake is done :class:`~relaymq.client.transport.WebSocketTransport`
splits the stream into frames itself and hands every frame but a whole unmasked
binary one to websockets' protocol. These tests feed it streams cut at every
byte (what no real socket does reliably, hence a stand-in for the socket that
records what is written) and check that it gets what websockets' own parser
gets: the same messages in the same order, the pong of a ping, the echo of a
close and nothing after it, the failure of a masked frame or of a message
inside a fragmented one, and the abnormal closure of a frame cut short by the
end of the stream. Frames it sends are websockets' frames byte for byte.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest
from websockets import frames as ws_frames
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import CLOSING, OPEN
from websockets.uri import parse_uri
from websockets.utils import accept_key

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


def websockets_reading(stream: bytes) -> tuple[list[Message], list[ClientFrame]]:
    """What websockets' parser makes of ``stream`` (after the response): the
    messages, and the frames it would write back."""
    protocol = ClientProtocol(parse_uri(URL), max_size=None)
    protocol.send_request(protocol.connect())
    request = b"".join(protocol.data_to_send())
    protocol.receive_data(response_to(request) + stream)
    messages: list[Message] = []
    fragments: list[bytes] = []
    opcode = Opcode.BINARY
    for event in protocol.events_received():
        if not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            continue
        if event.opcode is not Opcode.CONT:
            opcode = event.opcode
        fragments.append(bytes(event.data))
        if event.fin:
            whole, fragments = b"".join(fragments), []
            messages.append(whole.decode() if opcode is Opcode.TEXT else whole)
    return messages, client_frames(b"".join(protocol.data_to_send()))


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
    expected_messages, expected_writes = websockets_reading(stream)
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
