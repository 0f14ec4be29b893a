"""The SDK's sans-I/O WebSocket transport against real servers on real sockets.

A small ``websockets`` server per test (its asyncio server, a different code
base from the transport's glue) plays the RelayMQ server's part: messages go
both ways, a fragmented message arrives whole, a ping is answered, a send waits
while the server reads nothing and goes on when it reads again, a refused
handshake raises ``InvalidStatus`` with the server's error body (which the SDK
translates as before), both closing handshakes complete, and an end of stream
without a close frame is an abnormal closure (1006). Messages read before the
dispatch starts are kept in order, and a failing callback does not end the
connection. TLS is tested with a test CA; the main scenarios run again on uvloop,
the benchmark client's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
)
from websockets.http11 import Request

from relaymq import errors
from relaymq.client.errors import translate
from relaymq.client.transport import Message, WebSocketTransport
from tests.server.test_tls import Authority

Handler = Callable[[ServerConnection], Awaitable[None]]
WAIT_SECONDS = 5


@contextlib.asynccontextmanager
async def serving(handler: Handler, **options: Any) -> AsyncIterator[str]:
    """A websockets server on an ephemeral port; yields its ``ws://`` URL."""
    options.setdefault("ping_interval", None)  # no pings but the tests' own
    async with serve(handler, "127.0.0.1", 0, compression=None, **options) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/ws"


async def open_transport(
    url: str, on_message: Callable[[Message], None] | None = None
) -> WebSocketTransport:
    """The transport under test, connected to ``url``."""
    return await WebSocketTransport.open(
        url, headers={"X-Test": "yes"}, open_timeout_seconds=WAIT_SECONDS, on_message=on_message
    )


async def ended(transport: WebSocketTransport) -> ConnectionClosed:
    """Wait for the end of the connection; why it ended."""
    await asyncio.shield(transport.closed)
    return transport.close_exception()


class Inbox:
    """A message callback that collects what it gets and wakes a waiter."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def wait_for(self, count: int) -> list[Message]:
        """Wait until ``count`` messages arrived."""
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages


async def test_messages_go_both_ways_with_the_request_headers() -> None:
    async def echo(websocket: ServerConnection) -> None:
        assert websocket.request is not None
        await websocket.send(websocket.request.headers["X-Test"])  # a text message
        async for message in websocket:
            await websocket.send(message)

    inbox = Inbox()
    async with serving(echo) as url:
        transport = await open_transport(url, inbox)
        await transport.send(b"\x00binary\xff")
        await transport.send(b"second")
        assert await inbox.wait_for(3) == ["yes", b"\x00binary\xff", b"second"]
        await transport.close()


async def test_a_fragmented_message_arrives_whole() -> None:
    async def fragments(websocket: ServerConnection) -> None:
        await websocket.send([b"frag", b"men", b"ted"])
        await websocket.send(["t\u00e9", "xt"])
        await websocket.send(b"after")
        await websocket.wait_closed()

    inbox = Inbox()
    async with serving(fragments) as url:
        transport = await open_transport(url, inbox)
        assert await inbox.wait_for(3) == [b"fragmented", "t\u00e9xt", b"after"]
        await transport.close()


async def test_a_server_ping_is_answered_with_a_pong() -> None:
    answered: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def pinger(websocket: ServerConnection) -> None:
        pong = await websocket.ping(b"still there?")
        answered.set_result(await pong)
        await websocket.wait_closed()

    async with serving(pinger) as url:
        transport = await open_transport(url, Inbox())
        async with asyncio.timeout(WAIT_SECONDS):
            await answered  # we send nothing: only the transport's pong can answer
        await transport.close()


async def test_a_send_waits_while_the_server_reads_nothing_and_goes_on_when_it_reads() -> None:
    reading = asyncio.Event()
    received: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    async def slow_reader(websocket: ServerConnection) -> None:
        await reading.wait()
        count = size = 0
        async for message in websocket:
            if message == b"end":
                received.set_result((count, size))
            count += 1
            size += len(message)

    payload = b"x" * 256 * 1024
    async with serving(slow_reader, max_size=None, max_queue=1) as url:
        transport = await open_transport(url, Inbox())
        sent = 0
        waiting: asyncio.Task[None] | None = None
        try:
            for _ in range(400):  # 100 MiB: far more than the socket buffers hold
                send = asyncio.create_task(transport.send(payload))
                sent += 1
                # A send may wait a moment while the kernel's buffers grow; one that
                # still waits after a while waits for the server to read.
                done, _ = await asyncio.wait({send}, timeout=0.2)
                if not done:
                    waiting = send
                    break
            assert waiting is not None, "no send waited although the server read nothing"
            await asyncio.sleep(0.3)
            assert not waiting.done()  # nothing drains while the server does not read
        finally:
            reading.set()
        async with asyncio.timeout(WAIT_SECONDS):
            await waiting
            await transport.send(b"end")
            assert await received == (sent, sent * len(payload))
        await transport.close()


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (401, "unauthenticated", errors.Unauthenticated),
        (403, "permission_denied", errors.PermissionDenied),
        (404, "namespace_not_found", errors.NamespaceNotFound),
    ],
)
async def test_a_refused_handshake_raises_invalid_status_with_the_error_body(
    status: int, code: str, error: type[errors.RelayError]
) -> None:
    body = {"error": {"code": code, "message": f"refused: {code}", "details": {}}}

    def refuse(websocket: ServerConnection, request: Request) -> Any:
        return websocket.respond(status, json.dumps(body))

    async def never(websocket: ServerConnection) -> None:
        raise AssertionError("the handshake was refused")

    async with serving(never, process_request=refuse) as url:
        with pytest.raises(InvalidStatus) as raised:
            await open_transport(url)
    assert raised.value.response.status_code == status
    translated = translate(raised.value)
    assert type(translated) is error and translated.message == f"refused: {code}"


async def test_a_closed_port_and_a_silent_server_fail_as_before() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        await open_transport(f"ws://127.0.0.1:{closed_port}/")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the upgrade request, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        with pytest.raises(TimeoutError) as raised:
            await WebSocketTransport.open(
                f"ws://127.0.0.1:{port}/", headers={}, open_timeout_seconds=0.2
            )
        assert time.monotonic() - started < 2
        assert isinstance(translate(raised.value), errors.RequestTimeout)


async def test_closing_completes_the_handshake_with_the_server() -> None:
    server_saw: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def waits(websocket: ServerConnection) -> None:
        await websocket.wait_closed()
        server_saw.set_result(websocket.close_code)

    async with serving(waits) as url:
        transport = await open_transport(url, Inbox())
        started = time.monotonic()
        await transport.close(close_timeout_seconds=WAIT_SECONDS)
        assert time.monotonic() - started < 1  # the server closed TCP: no time-out
        reason = await ended(transport)
        assert isinstance(reason, ConnectionClosedOK)
        assert reason.sent is not None and reason.sent.code == 1000
        assert reason.rcvd is not None and reason.rcvd.code == 1000
        assert await asyncio.wait_for(server_saw, WAIT_SECONDS) == 1000
        with pytest.raises(ConnectionClosedOK):
            await transport.send(b"too late")


async def test_a_close_from_the_server_is_echoed_and_ends_the_connection() -> None:
    echoed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def closes(websocket: ServerConnection) -> None:
        await websocket.close(4001, "bye")
        received = websocket.protocol.close_rcvd  # our echo, if it came
        echoed.set_result(received.code if received is not None else None)

    async with serving(closes, close_timeout=WAIT_SECONDS) as url:
        transport = await open_transport(url, Inbox())
        async with asyncio.timeout(WAIT_SECONDS):
            reason = await ended(transport)
            assert await echoed == 4001
        assert reason.rcvd is not None and (reason.rcvd.code, reason.rcvd.reason) == (4001, "bye")
        assert transport.protocol.close_code == 4001


async def test_an_end_of_stream_without_a_close_frame_is_an_abnormal_closure() -> None:
    async def hangs_up(websocket: ServerConnection) -> None:
        websocket.transport.close()  # TCP FIN, no close frame
        await websocket.wait_closed()

    async with serving(hangs_up) as url:
        transport = await open_transport(url, Inbox())
        async with asyncio.timeout(WAIT_SECONDS):
            reason = await ended(transport)
        assert isinstance(reason, ConnectionClosedError) and reason.rcvd is None
        assert transport.protocol.close_code == 1006
        with pytest.raises(ConnectionClosedError):
            await transport.send(b"anyone?")


async def test_messages_before_the_dispatch_are_kept_in_order() -> None:
    async def greets(websocket: ServerConnection) -> None:
        for message in (b"welcome", b"first", b"second"):
            await websocket.send(message)
        async for message in websocket:
            await websocket.send(message)

    async with serving(greets) as url:
        transport = await open_transport(url)  # no callback yet
        assert await asyncio.wait_for(transport.receive(), WAIT_SECONDS) == b"welcome"
        await asyncio.sleep(0.1)  # "first" and "second" arrive meanwhile
        inbox = Inbox()
        transport.start_dispatch(inbox)
        await transport.send(b"third")
        assert await inbox.wait_for(3) == [b"first", b"second", b"third"]
        await transport.close()


async def test_a_failing_callback_is_logged_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def echo(websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)

    inbox = Inbox()

    def fails_once(message: Message) -> None:
        if message == b"poison":
            raise ValueError("a bug in the handler")
        inbox(message)

    async with serving(echo) as url:
        transport = await open_transport(url, fails_once)
        with caplog.at_level(logging.ERROR, logger="relaymq.client"):
            await transport.send(b"poison")
            await transport.send(b"fine")
            assert await inbox.wait_for(1) == [b"fine"]
        assert "error handling a message" in caplog.text
        assert transport.protocol.close_code is None  # still open
        await transport.close()


async def test_wss_verifies_the_server_by_its_host(tmp_path: Path) -> None:
    authority = Authority(tmp_path, "transport-test-ca")
    issued = authority.issue("server", server=True)  # for 127.0.0.1 and localhost
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(issued.certificate, issued.key)
    client_context = ssl.create_default_context(cafile=str(authority.files.certificate))

    async def echo(websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)

    async with serving(echo, ssl=server_context) as url:
        secure_url = url.replace("ws://", "wss://")
        with pytest.raises(ssl.SSLCertVerificationError):  # the system CAs do not know ours
            await WebSocketTransport.open(secure_url, headers={}, open_timeout_seconds=5)
        inbox = Inbox()
        transport = await WebSocketTransport.open(
            secure_url,
            headers={},
            open_timeout_seconds=5,
            on_message=inbox,
            ssl_context=client_context,
        )
        await transport.send(b"over tls")
        assert await inbox.wait_for(1) == [b"over tls"]
        await transport.close()
        assert isinstance(await ended(transport), ConnectionClosedOK)


async def test_receive_raises_connection_closed_at_the_end() -> None:
    async def hangs_up(websocket: ServerConnection) -> None:
        await websocket.send(b"last words")
        await websocket.close()

    async with serving(hangs_up) as url:
        transport = await open_transport(url)
        assert await asyncio.wait_for(transport.receive(), WAIT_SECONDS) == b"last words"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(transport.receive(), WAIT_SECONDS)


class ConnectProxy:
    """An HTTP proxy that only tunnels (``CONNECT``), recording where to."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ")
        assert method == "CONNECT"
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


PROXY_VARIABLES = ("ws", "wss", "socks", "http", "https", "all", "no")


@contextlib.asynccontextmanager
async def proxied(monkeypatch: pytest.MonkeyPatch, **proxies: str) -> AsyncIterator[ConnectProxy]:
    """A tunnelling proxy on loopback, named in the environment as ``proxies`` say
    (``{"ws": "proxy"}`` sets ``ws_proxy`` to it); every other proxy variable unset."""
    proxy = ConnectProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    address = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for name in PROXY_VARIABLES:
        for variable in (f"{name}_proxy", f"{name.upper()}_PROXY"):
            monkeypatch.delenv(variable, raising=False)
    for name, value in proxies.items():
        monkeypatch.setenv(f"{name}_proxy", address if value == "proxy" else value)
    async with server:
        yield proxy


async def echo_server(websocket: ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def round_trip(url: str, **options: Any) -> None:
    inbox = Inbox()
    transport = await WebSocketTransport.open(
        url, headers={}, open_timeout_seconds=WAIT_SECONDS, on_message=inbox, **options
    )
    await transport.send(b"hello")
    assert await inbox.wait_for(1) == [b"hello"]
    await transport.close()


def host_port(url: str) -> str:
    return url.split("://", 1)[1].split("/")[0]


async def test_the_environments_http_proxy_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    async with proxied(monkeypatch, http="proxy") as proxy, serving(echo_server) as url:
        await round_trip(url)
    assert proxy.tunnels == [host_port(url)]


async def test_no_proxy_bypasses_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async with (
        proxied(monkeypatch, ws="proxy", no="127.0.0.1") as proxy,
        serving(echo_server) as url,
    ):
        await round_trip(url)
    assert proxy.tunnels == []


async def test_wss_runs_tls_inside_the_proxys_tunnel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    authority = Authority(tmp_path, "proxy-test-ca")
    issued = authority.issue("server", server=True)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(issued.certificate, issued.key)
    client_context = ssl.create_default_context(cafile=str(authority.files.certificate))
    async with (
        proxied(monkeypatch, https="proxy") as proxy,
        serving(echo_server, ssl=server_context) as url,
    ):
        await round_trip(url.replace("ws://", "wss://"), ssl_context=client_context)
    assert proxy.tunnels == [host_port(url)]


def test_wss_through_a_proxy_on_uvloop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # start_tls on a tunnel's transport is where uvloop's transports differ most.
    uvloop.run(test_wss_runs_tls_inside_the_proxys_tunnel(monkeypatch, tmp_path))


@pytest.mark.parametrize(
    "scenario",
    [
        test_messages_go_both_ways_with_the_request_headers,
        test_a_server_ping_is_answered_with_a_pong,
        test_a_send_waits_while_the_server_reads_nothing_and_goes_on_when_it_reads,
        test_closing_completes_the_handshake_with_the_server,
        test_an_end_of_stream_without_a_close_frame_is_an_abnormal_closure,
    ],
    ids=lambda scenario: scenario.__name__.removeprefix("test_"),
)
def test_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    # The benchmark's clients run on uvloop, whose transports are not asyncio's classes.
    uvloop.run(scenario())
