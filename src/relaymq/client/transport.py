"""The SDK's WebSocket transport: websockets' sans-I/O client driven by an
``asyncio.Protocol``.

Owns one TCP (or TLS) connection and the WebSocket protocol on it, nothing
above: the connection (directly, or through the proxy the environment names, as
websockets' own client does), the opening handshake, framing, answering pings,
the closing handshake, and write flow control. websockets'
:class:`~websockets.client.ClientProtocol` does the handshake and every frame
but the two kinds that carry RelayMQ's frames, which cost about twenty calls
each through its generator-based parser and its serializer; this module is the
glue between it and the event loop, so that

* a sent message is framed here (one masked binary frame, the only kind the
  SDK sends) and written with one ``transport.write``; a send awaits only
  while the socket's write buffer is over its high-water mark;
* a received message is handed to a callback synchronously from
  ``data_received``: no queue, no future and no task wake-up per message.
  Once the handshake is done this module splits the stream into frames and
  hands a whole unmasked binary frame (every frame a RelayMQ server sends in
  msgpack) straight on; any other valid frame (ping, close, text, fragments)
  goes to the protocol whole, which answers it, closes or fails the connection
  as always, and reads everything after a close or a failure. A frame whose
  header is anything else (masked, extension bits, a reserved opcode, a control
  frame fragmented or too long) hands the protocol the stream from that header
  on, so it fails the connection exactly as it would have.

While websockets' debug log is on every frame goes through the protocol, which
logs it.

Messages that arrive before a callback is set (the server's ``welcome``, say)
are kept in order; :meth:`WebSocketTransport.receive` reads them one by one and
:meth:`WebSocketTransport.start_dispatch` hands the rest to the callback.

Failures are websockets' and the operating system's own exceptions, exactly as
``websockets.asyncio.client.connect`` raised them (``OSError``,
``TimeoutError``, :class:`~websockets.exceptions.InvalidStatus` with the refused
response and its body, :class:`~websockets.exceptions.ConnectionClosed`), so
:mod:`relaymq.client.errors` translates them as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import ssl
import struct
from collections.abc import Callable, Mapping
from typing import Any, cast

# websockets' proxy handshakes, which its asyncio client uses the same way; they are
# module functions of that client rather than names it exports.
from websockets.asyncio.client import connect_http_proxy, connect_socks_proxy
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import USER_AGENT, Response
from websockets.protocol import OPEN, Event
from websockets.proxy import get_proxy, parse_proxy
from websockets.uri import WebSocketURI, parse_uri

try:  # websockets' C helper, as its own framing uses it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - built for every platform websockets ships wheels for
    from websockets.utils import apply_mask

logger = logging.getLogger("relaymq.client")

Message = bytes | str
"""A whole WebSocket message: ``bytes`` from a binary one, ``str`` from a text one."""

CLOSE_TIMEOUT_SECONDS = 1.0
"""How long to wait for the server to close the TCP connection once both close
frames are exchanged (or ours went unanswered) before dropping it ourselves."""

WRITE_BUFFER_HIGH_BYTES = 32 * 1024
"""The write buffer above which :meth:`WebSocketTransport.send` waits (the
default of websockets' asyncio client, whose backpressure this keeps)."""

FIN_BINARY = 0x82
"""The first byte of a whole binary frame without extension bits: the only
frame the transport reads itself (see :meth:`WebSocketTransport._receive_frames`)."""
DATA_FRAME_HEADS = frozenset({FIN_BINARY, 0x81, 0x80, 0x02, 0x01, 0x00})
"""The first bytes of data frames without extension bits (the SDK negotiates none):
binary, text and continuation, whole or not."""
CONTROL_FRAME_HEADS = frozenset({0x88, 0x89, 0x8A})
"""The first bytes of whole close, ping and pong frames without extension bits."""
MAX_CONTROL_PAYLOAD_BYTES = 125  # RFC 6455, 5.5
MAX_PAYLOAD_BYTES = 2**63 - 1  # RFC 6455, 5.2: the 64-bit length's top bit is 0
MASK_BIT = 0x80
MASK_POOL_BYTES = 1024
"""Random bytes drawn from the OS at a time for the masks of sent frames (256
frames' worth: one ``getrandom`` call where websockets makes one per frame)."""
HEAD_END = b"\r\n\r\n"


def masked_binary_frame(data: bytes, mask: bytes) -> bytes:
    """``data`` as one whole binary frame from a client, masked with ``mask`` (4 bytes),
    byte for byte as websockets' ``Frame(BINARY, data).serialize(mask=True)``."""
    length = len(data)
    if length < 126:
        head = struct.pack("!BB", FIN_BINARY, MASK_BIT | length)
    elif length < 65536:
        head = struct.pack("!BBH", FIN_BINARY, MASK_BIT | 126, length)
    else:
        head = struct.pack("!BBQ", FIN_BINARY, MASK_BIT | 127, length)
    return b"".join((head, mask, apply_mask(data, mask)))


def extended_frame_bounds(data: bytes, start: int, length: int) -> tuple[int, int]:
    """Where the payload of the unmasked frame at ``start`` begins and where the
    frame ends, when its 7-bit ``length`` is 126 or 127 (an extended length
    follows). While the extended length is incomplete both are its end."""
    header_end = start + (4 if length == 126 else 10)
    if len(data) < header_end:
        return header_end, header_end
    return header_end, header_end + int.from_bytes(data[start + 2 : header_end], "big")


def plain_frame(first: int, payload_bytes: int) -> bool:
    """Whether an unmasked frame whose first byte is ``first`` and whose payload is
    ``payload_bytes`` long is one the protocol reads like any other: a data frame,
    or a close, ping or pong short enough. Any other fails the connection (websockets
    refuses a reserved opcode at once, the rest once their payload is read), or never
    ends if its length has the top bit set (websockets waits for it)."""
    if first in DATA_FRAME_HEADS:
        return payload_bytes <= MAX_PAYLOAD_BYTES
    return first in CONTROL_FRAME_HEADS and payload_bytes <= MAX_CONTROL_PAYLOAD_BYTES


class WebSocketTransport(asyncio.Protocol):
    """One client WebSocket connection: :meth:`open` it, :meth:`send` binary
    messages, receive messages through a callback, :meth:`close` it."""

    def __init__(self, protocol: ClientProtocol, on_message: Callable[[Message], None] | None):
        self.protocol = protocol
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._handshake_done: asyncio.Future[None] = self._loop.create_future()  # or the end
        self._closed: asyncio.Future[None] = self._loop.create_future()  # connection_lost ran
        self._connection_error: BaseException | None = None
        self._inbox: collections.deque[Message] = collections.deque()  # before dispatch
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes | bytearray] = []
        self._fragmented_opcode: Opcode | None = None
        self._response_tail = b""  # the end of the response read so far (for its blank line)
        self._response_head_read = False  # then what follows is frames (or a refusal's body)
        self._framing = False  # whether _receive_frames splits the stream into frames
        self._unparsed = bytearray()  # the start of a frame not yet whole
        self._unparsed_needed = 0  # how long it must grow before it is worth parsing again
        self._mask_pool = b""
        self._mask_at = 0
        self._write_paused = False
        self._write_waiters: list[asyncio.Future[None]] = []
        self._close_timer: asyncio.TimerHandle | None = None

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        headers: Mapping[str, str],
        open_timeout_seconds: float,
        on_message: Callable[[Message], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> WebSocketTransport:
        """Connect to ``url`` (``ws://`` or ``wss://``), through the environment's
        proxy if it names one, and complete the opening handshake within
        ``open_timeout_seconds``.

        ``on_message`` gets every message from the start; without it messages
        wait for :meth:`receive` or :meth:`start_dispatch`. ``ssl_context``
        defaults to :func:`ssl.create_default_context` for ``wss``.

        Raises ``OSError`` (refused, unreachable, no such host, TLS),
        ``TimeoutError``, :class:`~websockets.exceptions.InvalidURI` and
        :class:`~websockets.exceptions.InvalidHandshake` (``InvalidStatus``
        carrying the refused response)."""
        uri = parse_uri(url)
        if uri.secure and ssl_context is None:
            ssl_context = ssl.create_default_context()
        elif not uri.secure:
            ssl_context = None
        protocol = ClientProtocol(uri, max_size=None)  # no extensions: no compression
        try:
            async with asyncio.timeout(open_timeout_seconds):
                connection = await _connect(uri, ssl_context, lambda: cls(protocol, on_message))
                try:
                    await connection._handshake(headers)
                except BaseException:
                    connection._abort()
                    raise
        except TimeoutError as exception:
            raise TimeoutError("timed out during opening handshake") from exception
        return connection

    async def _handshake(self, headers: Mapping[str, str]) -> None:
        """Send the upgrade request and wait for the response; raise the
        protocol's reason if the server refused (or the connection ended)."""
        request = self.protocol.connect()
        request.headers.update(headers)
        request.headers.setdefault("User-Agent", USER_AGENT)
        self.protocol.send_request(request)
        self._flush()
        await asyncio.shield(self._handshake_done)
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next message not yet dispatched (for a reader before
        :meth:`start_dispatch`); raise ``ConnectionClosed`` at the end."""
        if self._on_message is not None:
            raise RuntimeError("messages go to the callback; nothing is kept to receive")
        while not self._inbox:
            if self._closed.done():
                raise self.close_exception()
            waiter = self._inbox_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._inbox_waiter = None
        return self._inbox.popleft()

    def start_dispatch(self, on_message: Callable[[Message], None]) -> None:
        """Hand every message to ``on_message`` from now on, first those kept."""
        self._on_message = on_message
        while self._inbox:
            self._message(self._inbox.popleft())

    def _message(self, message: Message) -> None:
        """A whole message arrived: to the callback, or kept until there is one.

        The callback's failure is logged, and the connection goes on. Each
        server frame stands alone (a delivery, a confirm, a reply) and each has
        its own recovery should its handling fail (redelivery after the ack
        timeout, the request's timeout), while ending the connection would fail
        every request in flight and redeliver every message held for one
        frame's bug, and loop reconnecting if the bug repeats. Letting the
        exception escape ``data_received`` would make asyncio drop the
        connection along with the other messages of the same read."""
        on_message = self._on_message
        if on_message is None:
            self._inbox.append(message)
            waiter = self._inbox_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        try:
            on_message(message)
        except Exception:
            logger.exception("relaymq: error handling a message from the server")

    def _frame(self, frame: Frame) -> None:
        """A data frame: a whole message, or a fragment of one. (The protocol
        answers pings, echoes a close frame and checks the order of fragments.)"""
        opcode = frame.opcode
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
            if frame.fin:
                self._complete(opcode, frame.data)
            else:
                self._fragmented_opcode = opcode
                self._fragments = [frame.data]
        elif opcode is Opcode.CONT:
            self._fragments.append(frame.data)
            if frame.fin:
                fragments, self._fragments = self._fragments, []
                assert self._fragmented_opcode is not None
                self._complete(self._fragmented_opcode, b"".join(fragments))
                self._fragmented_opcode = None

    def _complete(self, opcode: Opcode, data: bytes | bytearray) -> None:
        """A message's whole payload: decoded if it is text, then handed on."""
        if opcode is Opcode.BINARY:
            self._message(bytes(data))
            return
        try:
            text = data.decode()
        except UnicodeDecodeError as exception:
            reason = f"{exception.reason} at position {exception.start}"  # websockets' words
            self.protocol.fail(CloseCode.INVALID_DATA, reason)
            self._flush()
            return
        self._message(text)

    # -- sending ------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Send one binary message. Returns at once unless the write buffer is
        over its high-water mark, then when it has drained enough; raises
        ``ConnectionClosed`` once the connection is closing or closed."""
        if self.protocol.state is not OPEN:
            await self._raise_closed()
        self._write_message(data)
        if self._write_paused:
            await self._writable()

    def send_nowait(self, data: bytes) -> bool:
        """Send one binary message if that needs no wait: the connection is open
        and the write buffer under its high-water mark. Whether it was sent; if
        not, :meth:`send` it (which waits, or raises why it cannot)."""
        if self._write_paused or self.protocol.state is not OPEN:
            return False
        self._write_message(data)
        return True

    def _write_message(self, data: bytes) -> None:
        """Frame ``data`` and write it (the connection is open)."""
        transport = self._transport
        assert transport is not None
        protocol = self.protocol
        if protocol.debug:  # the protocol frames it, and logs the frame
            protocol.send_binary(data)
            transport.write(b"".join(protocol.data_to_send()))
            return
        at = self._mask_at
        if at == len(self._mask_pool):
            self._mask_pool, at = os.urandom(MASK_POOL_BYTES), 0
        self._mask_at = at + 4
        transport.write(masked_binary_frame(data, self._mask_pool[at : at + 4]))

    async def _writable(self) -> None:
        """Wait until the transport resumes writing; raise if it closed meanwhile."""
        waiter = self._loop.create_future()
        self._write_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._write_waiters.remove(waiter)
        if self._closed.done():
            raise self.close_exception()

    async def _raise_closed(self) -> None:
        """Wait for the end of a closing connection, then raise why it ended."""
        await asyncio.shield(self._closed)
        raise self.close_exception()

    def _flush(self) -> None:
        """Write what the protocol has to send; ``b""`` means end of stream."""
        transport = self._transport
        assert transport is not None
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                # uvloop raises RuntimeError on a transport closing already.
                with contextlib.suppress(OSError, RuntimeError):
                    transport.write_eof()
            else:  # TLS cannot half-close
                transport.close()
        if self._close_timer is None and self.protocol.close_expected():
            # The server closes TCP after the closing handshake; do not wait forever.
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT_SECONDS, self._abort)

    # -- closing ------------------------------------------------------------------------------

    @property
    def closed(self) -> asyncio.Future[None]:
        """Done once the TCP connection is gone (hand it to ``asyncio.wait``, or await
        it shielded; :meth:`close_exception` then says why)."""
        return self._closed

    def close_exception(self) -> ConnectionClosed:
        """Why the connection ended, as the ``ConnectionClosed`` websockets raises
        (``ConnectionClosedOK`` after a normal closing handshake, else
        ``ConnectionClosedError``; chained to a network error if there was one)."""
        exception = self.protocol.close_exc
        if self._connection_error is not None:
            exception.__cause__ = self._connection_error
        return exception

    async def close(
        self,
        code: int = CloseCode.NORMAL_CLOSURE,
        close_timeout_seconds: float = CLOSE_TIMEOUT_SECONDS,
    ) -> None:
        """Do the closing handshake and wait for the server to close the TCP
        connection; drop it after ``close_timeout_seconds``."""
        if self._transport is None or self._closed.done():
            return
        if self._close_timer is None:
            self._close_timer = self._loop.call_later(close_timeout_seconds, self._abort)
        if self.protocol.state is OPEN:
            self.protocol.send_close(code)
            self._flush()
        await asyncio.shield(self._closed)

    def _abort(self) -> None:
        """Drop the TCP connection at once."""
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is connected (and TLS done): keep the transport."""
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        stream = cast(asyncio.Transport, transport)
        stream.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        self._transport = stream

    def data_received(self, data: bytes) -> None:
        """Frames: read here while :meth:`_receive_frames` can; the response and
        whatever the protocol must see go to the protocol."""
        if self._framing:
            self._receive_frames(data)
        elif self._response_head_read:
            self._feed(data)
        else:
            self._receive_response(data)

    def _feed(self, data: bytes) -> None:
        """Feed the protocol, write its replies (pongs, the close echo) at once,
        then handle what it parsed."""
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._flush()
        for event in events:
            self._event(event)

    def _receive_response(self, data: bytes) -> None:
        """The handshake's response goes to the protocol up to its blank line only
        (an accepted upgrade has no body), so that the protocol's parser stops
        exactly before the first frame: from there :meth:`_receive_frames` reads
        the stream. A refusal's body, and all after it, goes to the protocol
        (whose state stays CONNECTING: ``_response_head_read`` says the head was read)."""
        seen = self._response_tail + data
        blank_line = seen.find(HEAD_END)
        if blank_line < 0:
            self._response_tail = seen[-(len(HEAD_END) - 1) :]
            self._feed(data)
            return
        self._response_head_read = True
        head_bytes = blank_line + len(HEAD_END) - len(self._response_tail)
        self._feed(data[:head_bytes])
        rest = data[head_bytes:]
        if self.protocol.state is OPEN and not self.protocol.debug:
            self._framing = True
            self._receive_frames(rest)
        elif rest:
            self._feed(rest)

    def _receive_frames(self, data: bytes) -> None:
        """Split the stream into frames: a whole unmasked binary frame is a message
        (no fragmented one may be pending: then the protocol must see it), every
        other :func:`plain_frame` goes to the protocol whole, so its parser always
        waits at a frame's start. Once the protocol is no longer open (it read a
        close frame or failed the connection), or as soon as a frame's header is not
        plain (masked, say, which the protocol refuses), it reads the rest of the
        stream: a frame that fails the connection is not buffered here first, and
        the protocol sees it arrive as it would have. A frame not yet whole waits
        for more data."""
        if self._unparsed:
            self._unparsed += data
            if len(self._unparsed) < self._unparsed_needed:
                return
            data, self._unparsed = bytes(self._unparsed), bytearray()
        start, size = 0, len(data)
        needed = 2
        while size - start >= 2:
            first, second = data[start], data[start + 1]
            if second < 126:  # unmasked, with a 7-bit length: two comparisons for a message
                payload = start + 2
                end = payload + second
                plain = first == FIN_BINARY or plain_frame(first, second)
            elif second & MASK_BIT:
                self._hand_over(data[start:])
                return
            else:  # while the extended length is incomplete this checks the first byte only
                payload, end = extended_frame_bounds(data, start, second)
                length = end - payload
                if first == FIN_BINARY:  # a message, then: only its length to check
                    plain = length <= MAX_PAYLOAD_BYTES
                else:
                    plain = plain_frame(first, length)
            if not plain:
                self._hand_over(data[start:])
                return
            if end > size:
                needed = end - start
                break
            if first == FIN_BINARY and self._fragmented_opcode is None:
                self._message(data[payload:end])
            else:
                self._feed(data[start:end])
                if self.protocol.state is not OPEN:
                    self._hand_over(data[end:])
                    return
            start = end
        if start < size:
            self._unparsed = bytearray(data[start:])
            self._unparsed_needed = needed

    def _hand_over(self, data: bytes) -> None:
        """The protocol reads the stream from here on: first the start of a frame
        not yet whole, if one waits, then ``data``."""
        self._framing = False
        unparsed, self._unparsed = bytes(self._unparsed), bytearray()
        if unparsed or data:
            self._feed(unparsed + data)

    def _event(self, event: Event) -> None:
        """One parsed event: a frame, or the handshake response."""
        if isinstance(event, Frame):
            self._frame(event)
        elif isinstance(event, Response) and not self._handshake_done.done():
            self._handshake_done.set_result(None)

    def eof_received(self) -> None:
        """The server closed its side: after a closing handshake that is the end;
        without one, the protocol records an abnormal closure (1006). Returning
        ``None`` lets asyncio close the socket."""
        self._hand_over(b"")  # the protocol sees a frame cut short, as it would have
        self.protocol.receive_eof()
        events = self.protocol.events_received()  # a response read to EOF, at most
        self._flush()
        for event in events:
            self._event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is closed: the protocol is CLOSED, and every waiter wakes."""
        self._framing = False
        if self._unparsed:  # no EOF came first: the protocol sees a frame cut short
            self.protocol.receive_data(bytes(self._unparsed))
            self._unparsed = bytearray()
        self.protocol.receive_eof()  # idempotent; makes the state CLOSED
        self.protocol.data_to_send()  # nowhere to write any more
        self._connection_error = exc
        if self._close_timer is not None:
            self._close_timer.cancel()
        for future in (self._handshake_done, self._closed, self._inbox_waiter):
            if future is not None and not future.done():
                future.set_result(None)
        for waiter in self._write_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        """The write buffer went over its high-water mark: sends wait."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The write buffer drained below its low-water mark: waiting sends go on."""
        self._write_paused = False
        for waiter in self._write_waiters:
            if not waiter.done():
                waiter.set_result(None)


async def _connect(
    uri: WebSocketURI,
    ssl_context: ssl.SSLContext | None,
    factory: Callable[[], WebSocketTransport],
) -> WebSocketTransport:
    """A TCP (or TLS) connection to the server, through the proxy the environment
    names for it, as websockets' own client chooses one (for ``ws://``: ``ws_proxy``,
    ``socks_proxy``, ``https_proxy``, ``http_proxy``; for ``wss://``: ``wss_proxy``,
    ``socks_proxy``, ``https_proxy``; none for a host ``no_proxy`` lists), or directly.

    The proxy handshakes are websockets' own: an HTTP ``CONNECT`` tunnel, or SOCKS
    when python-socks is installed. TLS to the server then runs inside the tunnel."""
    loop = asyncio.get_running_loop()
    server_hostname = uri.host if ssl_context is not None else None
    proxy = get_proxy(uri)
    if proxy is None:
        _, connection = await loop.create_connection(
            factory, uri.host, uri.port, ssl=ssl_context, server_hostname=server_hostname
        )
        return connection
    parsed = parse_proxy(proxy)
    if parsed.scheme.startswith("socks"):
        sock = await connect_socks_proxy(parsed, uri)
        _, connection = await loop.create_connection(
            factory, sock=sock, ssl=ssl_context, server_hostname=server_hostname
        )
        return connection
    to_proxy: dict[str, Any] = {"ssl": True} if parsed.scheme == "https" else {}
    tunnel = await connect_http_proxy(parsed, uri, user_agent_header=USER_AGENT, **to_proxy)
    connection = factory()
    tunnel.set_protocol(connection)
    if ssl_context is not None:
        secured = await loop.start_tls(
            tunnel, connection, ssl_context, server_hostname=server_hostname
        )
        assert secured is not None  # start_tls returns None only when cancelled
        tunnel = secured
    connection.connection_made(tunnel)
    return connection
