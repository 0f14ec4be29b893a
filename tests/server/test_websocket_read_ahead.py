"""The server's WebSocket protocol reads ahead a few small messages instead of pausing
the socket after each one, and still pauses when the app falls behind.

Uvicorn's real protocol class runs here, fed the bytes a client sends; the transport
only records what the protocol asks of the socket (pause and resume reading)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from relaymq.api.websocket_protocol import (
    READ_AHEAD_MESSAGE_BYTES,
    READ_AHEAD_MESSAGES,
    ReadAheadWebSocketProtocol,
)

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class RecordingTransport(asyncio.Transport):
    """A socket that keeps what is written and whether reading is paused."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.pauses = 0
        self.written = bytearray()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


class SlowApp:
    """Accepts, then reads nothing until told to read everything queued."""

    def __init__(self) -> None:
        self.read = asyncio.Event()
        self.received: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            await self.read.wait()
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            self.received.append(message["bytes"])


def client_frame(size: int) -> bytes:
    """A masked binary frame, as a client sends it."""
    return Frame(Opcode.BINARY, b"x" * size).serialize(mask=True, extensions=[])


async def connected() -> tuple[ReadAheadWebSocketProtocol, RecordingTransport, SlowApp]:
    app = SlowApp()
    config = uvicorn.Config(app, ws=ReadAheadWebSocketProtocol, log_config=None)
    config.load()
    protocol = ReadAheadWebSocketProtocol(
        config, ServerState(), {}, _loop=asyncio.get_running_loop()
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    for _ in range(100):
        if b"101 Switching Protocols" in transport.written:
            break
        await asyncio.sleep(0.01)
    assert b"101 Switching Protocols" in transport.written
    return protocol, transport, app


async def test_small_messages_are_read_ahead_until_the_queue_is_full() -> None:
    protocol, transport, app = await connected()
    for _ in range(READ_AHEAD_MESSAGES - 1):
        protocol.data_received(client_frame(100))
    assert not transport.paused  # uvicorn alone would have paused after the first
    protocol.data_received(client_frame(100))
    assert transport.paused  # the app fell behind: the socket stops being read
    app.read.set()
    for _ in range(100):
        if len(app.received) == READ_AHEAD_MESSAGES:
            break
        await asyncio.sleep(0.01)
    assert len(app.received) == READ_AHEAD_MESSAGES
    assert not transport.paused  # the app caught up: reading resumes
    protocol.connection_lost(None)


@pytest.mark.parametrize("size", [READ_AHEAD_MESSAGE_BYTES + 1, 200_000])
async def test_a_large_message_pauses_reading_at_once(size: int) -> None:
    protocol, transport, app = await connected()
    protocol.data_received(client_frame(size))
    assert transport.paused
    app.read.set()
    for _ in range(100):
        if app.received:
            break
        await asyncio.sleep(0.01)
    assert app.received == [b"x" * size]
    assert not transport.paused
    protocol.connection_lost(None)
