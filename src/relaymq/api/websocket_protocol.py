"""The WebSocket connection protocol the server runs: uvicorn's sans-I/O one, reading
ahead a few small messages instead of stopping the socket after each, and offering
the app a synchronous write and a synchronous receive.

Uvicorn pauses reading after every message it hands to the app and resumes once the
app took it. Under libuv each pause and resume is a change of the socket's epoll
interest, flushed through ``io_uring_enter`` on the next loop iteration: at one
message per frame that was about four system calls per published message (publish
and ack frames), for no backpressure a small queue does not give as well.

:class:`ReadAheadWebSocketProtocol` keeps reading while fewer than
:data:`READ_AHEAD_MESSAGES` messages wait for the app and each is at most
:data:`READ_AHEAD_MESSAGE_BYTES`; beyond that it pauses exactly as uvicorn does (and
uvicorn resumes once the app emptied the queue). So a client that publishes faster
than the server reads still stops being read, and the read-ahead adds at most
15 x 4 KiB = 60 KiB to what a connection holds: no more than uvicorn itself queues
when one 64 KiB read of the socket holds many small frames.

An ASGI ``send`` of a frame goes through Starlette's and uvicorn's state checks and
message dicts, and needs a coroutine step, so a reply cannot be sent from a plain
callback (a future's, say). The protocol therefore puts :data:`WRITE_NOW_EXTENSION`
in the connection's scope: ``scope["extensions"][WRITE_NOW_EXTENSION]["write"](data)``
frames ``data`` (``bytes`` binary, ``str`` text) and writes it to the socket at once,
and returns ``True``; it returns ``False``, having done nothing, whenever uvicorn's
own ``send`` would wait or refuse (the socket paused for write flow control, the
connection not open, a close sent), so the app then uses the ASGI ``send``, which
waits or raises as usual.

Receiving has the same two layers: every message goes through uvicorn's queue,
Starlette's ``receive`` and a wake-up of the app's reader task. The protocol
therefore also puts :data:`RECEIVE_NOW_EXTENSION` in the scope:
``scope["extensions"][RECEIVE_NOW_EXTENSION]["register"](receiver)`` makes the
protocol offer each complete binary message to ``receiver(data)`` in the call that
read it, whenever nothing waits in the queue ahead of it; a receiver that returns
``True`` took the message, one that returns ``False`` leaves it to the queue and the
ASGI ``receive``. ``register(None)`` stops it. Only small messages (at most
:data:`READ_AHEAD_MESSAGE_BYTES`) are offered: a larger one is queued and pauses
reading, as uvicorn does, so that its work waits its turn behind the fsync answers
and confirms already due. Taken at once, large publishes kept the loop reading and
writing them ahead of those: fsync passes grew three times longer and publishing
from a backlog fell from about 170k to 130k msg/s. An empty queue alone does not keep the
order: a message the app took from the queue may still be in hand. So a receiver
must decline (return ``False``) unless the app is waiting in ``receive`` with nothing
in hand. A receiver that raises has done who knows what with the message: the
connection is failed (close 1011), so the client reconnects and resends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode
from websockets.http11 import Request
from websockets.protocol import State

READ_AHEAD_MESSAGES = 16
READ_AHEAD_MESSAGE_BYTES = 4 * 1024
WRITE_NOW_EXTENSION = "relaymq.websocket.write_now"
RECEIVE_NOW_EXTENSION = "relaymq.websocket.receive_now"

Receiver = Callable[[bytes], bool]

logger = logging.getLogger(__name__)


class ReadAheadWebSocketProtocol(WebSocketsSansIOProtocol):
    """Uvicorn's sans-I/O WebSocket protocol with a read-ahead of small messages, and
    a synchronous write and receive for the app."""

    receiver: Receiver | None = None  # the app's, once registered

    def handle_connect(self, event: Request) -> None:
        """Build the scope as uvicorn does, then offer the synchronous write and
        receive in it."""
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            extensions = scope["extensions"]
            extensions[WRITE_NOW_EXTENSION] = {"write": self.write_now}
            extensions[RECEIVE_NOW_EXTENSION] = {"register": self.register_receiver}

    def register_receiver(self, receiver: Receiver | None) -> None:
        """Offer complete binary messages to ``receiver`` (``None``: stop offering)."""
        self.receiver = receiver

    def write_now(self, data: bytes | str) -> bool:
        """Send one data frame now; ``False`` (nothing sent) when the ASGI ``send``
        would have waited or refused."""
        if (
            not self.handshake_complete
            or self.disconnected
            or self.close_sent
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return False
        if isinstance(data, str):
            self.conn.send_text(data.encode())
        else:
            self.conn.send_binary(data)
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def offer_to_receiver(self, receiver: Receiver, data: bytes) -> bool:
        """``receiver(data)``; a receiver that raises fails the connection."""
        try:
            return receiver(data)
        except Exception:
            logger.exception("the app's receiver failed; closing the WebSocket")
            self.receiver = None
            self.conn.fail(CloseCode.INTERNAL_ERROR, "internal error")
            self.frames = []
            self.handle_parser_exception()
            return True

    def send_receive_event_to_app(self) -> None:
        """Hand a complete message to the app's receiver, or queue it; pause reading
        only when the queue is full or the message is large."""
        if (
            self.receiver is not None
            and self.curr_msg_data_type == "bytes"
            and len(self.frames) == 1
            and len(self.frames[0]) <= READ_AHEAD_MESSAGE_BYTES
            and not self.close_sent
            and self.queue.empty()
            and self.offer_to_receiver(self.receiver, self.frames[0])
        ):
            self.frames = []
            return
        if (
            self.read_paused
            or self.queue.qsize() + 1 >= READ_AHEAD_MESSAGES
            or sum(len(fragment) for fragment in self.frames) > READ_AHEAD_MESSAGE_BYTES
        ):
            super().send_receive_event_to_app()
            return
        # Uvicorn pauses the socket after queueing unless it believes it is paused
        # already; for the time of its call, it is told so.
        self.read_paused = True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = False
