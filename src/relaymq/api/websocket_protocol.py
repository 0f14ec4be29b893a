"""The WebSocket connection protocol the server runs: uvicorn's sans-I/O one, reading
ahead a few small messages instead of stopping the socket after each.

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
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

READ_AHEAD_MESSAGES = 16
READ_AHEAD_MESSAGE_BYTES = 4 * 1024


class ReadAheadWebSocketProtocol(WebSocketsSansIOProtocol):
    """Uvicorn's sans-I/O WebSocket protocol with a read-ahead of small messages."""

    def send_receive_event_to_app(self) -> None:
        """Queue a complete message for the app; pause reading only when the queue is
        full or the message is large."""
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
