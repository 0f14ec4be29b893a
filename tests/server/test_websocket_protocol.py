"""The server's WebSocket protocol reads ahead a few small messages instead of pausing
the socket after each one, and still pauses when the app falls behind; it offers the
app a synchronous write, which the connection's outbox uses, and hands binary messages
to a receiver the app registers, in the call that read them, without breaking their
order.

Uvicorn serves a small app on a real socket with the protocol class RelayMQ runs; a
real ``websockets`` client sends and receives the frames. Whether the server's side of
the socket is being read is asked of its transport."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.websockets import WebSocket, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from relaymq.api.websocket import SEND_QUEUE_FRAMES, Outbox
from relaymq.api.websocket_protocol import (
    READ_AHEAD_MESSAGE_BYTES,
    READ_AHEAD_MESSAGES,
    RECEIVE_NOW_EXTENSION,
    WRITE_NOW_EXTENSION,
    ReadAheadWebSocketProtocol,
)
from relaymq.protocol import frames

WAIT_SECONDS = 5


class SlowApp:
    """Accepts, then reads nothing until told to read everything queued; keeps its
    scope and ``send`` for the test."""

    def __init__(self) -> None:
        self.read = asyncio.Event()
        self.received: list[bytes | str] = []
        self.scope: dict[str, Any] = {}
        self.send: Any = None
        self.ended = asyncio.Event()  # it read the disconnect

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope, self.send = scope, send
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            await self.read.wait()
            message = await receive()
            if message["type"] != "websocket.receive":
                self.ended.set()
                return
            self.received.append(message.get("bytes") or message["text"])


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

    @property
    def write_now(self) -> Any:
        return self.app.scope["extensions"][WRITE_NOW_EXTENSION]["write"]

    @property
    def register(self) -> Any:
        return self.app.scope["extensions"][RECEIVE_NOW_EXTENSION]["register"]

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


async def received(client: ClientConnection) -> bytes | str:
    async with asyncio.timeout(WAIT_SECONDS):
        return await client.recv()


async def nothing_received(client: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.recv()


async def test_the_app_writes_a_frame_at_once(served: Served) -> None:
    assert served.write_now(b"binary")
    assert served.write_now("text")
    assert await received(served.client) == b"binary"
    assert await received(served.client) == "text"


async def test_no_write_now_while_the_socket_is_paused_for_writing(served: Served) -> None:
    served.connection.pause_writing()  # what the transport calls above its high-water mark
    assert not served.write_now(b"held")
    await nothing_received(served.client)
    served.connection.resume_writing()
    assert served.write_now(b"sent")
    assert await received(served.client) == b"sent"


async def test_no_write_now_once_the_app_closed(served: Served) -> None:
    await served.app.send({"type": "websocket.close", "code": 1000})
    assert not served.write_now(b"late")


def pong(seq: int) -> frames.Pong:
    return frames.Pong(seq=seq)


def outbox_of(served: Served, write_now: bool = True) -> Outbox:
    """An outbox on the served connection, which the app accepted already; without
    ``write_now`` its scope lacks the extension, as under another ASGI server."""
    scope = served.app.scope if write_now else {**served.app.scope, "extensions": {}}
    websocket = WebSocket(scope, receive=_never, send=served.app.send)
    websocket.client_state = websocket.application_state = WebSocketState.CONNECTED
    return Outbox(websocket)


async def test_the_outbox_writes_in_the_producers_call_when_idle(served: Served) -> None:
    outbox = outbox_of(served)
    assert outbox.offer(pong(1), "msgpack")
    assert not outbox.frames  # written, not queued: no writer task runs in this test
    assert frames.decode_server_frame(await received(served.client)) == pong(1)


async def test_the_outbox_queues_while_paused_and_sends_in_order_on_resume(
    served: Served,
) -> None:
    outbox = outbox_of(served)
    writer = asyncio.create_task(outbox.write_forever())
    try:
        served.connection.pause_writing()
        assert outbox.offer(pong(0), "msgpack")
        await asyncio.sleep(0.05)
        assert outbox.sending  # the writer waits in its ASGI send with the first frame
        for seq in range(1, SEND_QUEUE_FRAMES + 1):
            assert outbox.offer(pong(seq), "msgpack")
        assert not outbox.offer(pong(SEND_QUEUE_FRAMES + 1), "msgpack")  # full
        late = asyncio.create_task(outbox.put(pong(SEND_QUEUE_FRAMES + 1), "msgpack"))
        await nothing_received(served.client)
        served.connection.resume_writing()
        for seq in range(SEND_QUEUE_FRAMES + 2):
            assert frames.decode_server_frame(await received(served.client)) == pong(seq)
        await late
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def test_without_the_extension_the_writer_task_sends_through_asgi(
    served: Served,
) -> None:
    outbox = outbox_of(served, write_now=False)
    assert outbox.offer(pong(1), "msgpack")
    assert list(outbox.frames) == [frames.encode_binary(pong(1))]  # queued for the writer
    writer = asyncio.create_task(outbox.write_forever())
    try:
        assert frames.decode_server_frame(await received(served.client)) == pong(1)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def offered(calls: list[bytes], count: int) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while len(calls) < count:
            await asyncio.sleep(0.005)


async def test_a_registered_receiver_takes_binary_messages_in_order(served: Served) -> None:
    taken: list[bytes] = []
    served.register(lambda data: taken.append(data) or True)
    for number in range(3):
        await served.client.send(bytes([number]))
    await served.client.send("text")  # only binary messages are offered
    await served.queued(1)
    assert taken == [b"\x00", b"\x01", b"\x02"]
    served.app.read.set()
    await served.app_has(1)
    assert served.app.received == ["text"]


async def test_a_refused_message_is_queued_and_so_is_every_one_behind_it(
    served: Served,
) -> None:
    offers: list[bytes] = []

    def receiver(data: bytes) -> bool:
        offers.append(data)
        return data != b"first"

    served.register(receiver)
    await served.client.send(b"first")
    await served.client.send(b"second")
    await served.queued(2)
    assert offers == [b"first"]  # "second" would overtake "first": not offered
    served.app.read.set()
    await served.app_has(2)
    assert served.app.received == [b"first", b"second"]
    await served.client.send(b"third")  # nothing waits ahead any more
    await offered(offers, 2)
    assert offers == [b"first", b"third"]


async def test_a_large_message_is_queued_not_offered(served: Served) -> None:
    offers: list[bytes] = []
    served.register(lambda data: offers.append(data) or True)
    await served.client.send(b"x" * (READ_AHEAD_MESSAGE_BYTES + 1))
    await served.queued(1)
    assert not served.reading()  # and reading pauses, as for any large message
    assert offers == []


async def test_unregistering_the_receiver_queues_messages_again(served: Served) -> None:
    taken: list[bytes] = []
    served.register(lambda data: taken.append(data) or True)
    await served.client.send(b"taken")
    await offered(taken, 1)
    served.register(None)
    await served.client.send(b"queued")
    await served.queued(1)
    assert taken == [b"taken"]


async def test_a_receiver_that_raises_fails_the_connection(served: Served) -> None:
    def receiver(data: bytes) -> bool:
        raise RuntimeError("a bug")

    served.register(receiver)
    await served.client.send(b"boom")
    with pytest.raises(ConnectionClosed):
        await received(served.client)
    assert served.client.close_code == 1011
    served.app.read.set()
    async with asyncio.timeout(WAIT_SECONDS):
        await served.app.ended.wait()
    assert served.app.received == []  # the app hears of the end, not of the message


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")
