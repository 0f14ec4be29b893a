"""The server's WebSocket protocol reads ahead a few small messages instead of pausing
the socket after each one, and still pauses when the app falls behind.

Uvicorn serves a small app on a real socket with the protocol class RelayMQ runs; a
real ``websockets`` client sends the frames. Whether the server's side of the socket
is being read is asked of its transport."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from relaymq.api.websocket_protocol import (
    READ_AHEAD_MESSAGE_BYTES,
    READ_AHEAD_MESSAGES,
    ReadAheadWebSocketProtocol,
)

WAIT_SECONDS = 5


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


class Served:
    """The app behind uvicorn on a loopback port, and the server's connection."""

    def __init__(self, app: SlowApp, server: uvicorn.Server, client: ClientConnection) -> None:
        self.app = app
        self.server = server
        self.client = client

    @property
    def connection(self) -> ReadAheadWebSocketProtocol:
        [protocol] = self.server.server_state.connections
        assert isinstance(protocol, ReadAheadWebSocketProtocol)
        return protocol

    def reading(self) -> bool:
        return self.connection.transport.is_reading()  # type: ignore[attr-defined]

    async def queued(self, count: int) -> None:
        """Wait until ``count`` messages wait for the app."""
        async with asyncio.timeout(WAIT_SECONDS):
            while self.connection.queue.qsize() < count:
                await asyncio.sleep(0.005)

    async def app_has(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.app.received) < count:
                await asyncio.sleep(0.005)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    app = SlowApp()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=ReadAheadWebSocketProtocol, log_config=None
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(WAIT_SECONDS):
        while not server.started:
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with connect(f"ws://127.0.0.1:{port}/", compression=None) as client:
        yield Served(app, server, client)
        app.read.set()
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(serving, WAIT_SECONDS)


async def test_small_messages_are_read_ahead_until_the_queue_is_full(served: Served) -> None:
    for _ in range(READ_AHEAD_MESSAGES - 1):
        await served.client.send(b"x" * 100)
    await served.queued(READ_AHEAD_MESSAGES - 1)
    assert served.reading()  # uvicorn alone stops reading after the first
    await served.client.send(b"x" * 100)
    await served.queued(READ_AHEAD_MESSAGES)
    assert not served.reading()  # the app fell behind: the socket stops being read
    served.app.read.set()
    await served.app_has(READ_AHEAD_MESSAGES)
    assert served.reading()  # the app caught up: reading resumes


@pytest.mark.parametrize("size", [READ_AHEAD_MESSAGE_BYTES + 1, 200_000])
async def test_a_large_message_pauses_reading_at_once(served: Served, size: int) -> None:
    await served.client.send(b"x" * size)
    await served.queued(1)
    assert not served.reading()
    served.app.read.set()
    await served.app_has(1)
    assert served.app.received == [b"x" * size]
    assert served.reading()
