"""The HTTP/1.1 connection protocol the server runs: uvicorn's, plus slowloris limits.

Uvicorn times out idle keep-alive connections but not a client that sends a
request head or body one byte a minute, and its fast parser (httptools) has no
head size limit. :func:`guarded_protocol` builds uvicorn's protocol class with
all three:

* the head (request line and headers) must arrive within
  ``handshake_timeout_seconds`` of the connection opening or of its first
  byte after a keep-alive pause; otherwise the connection is closed;
* a head over ``max_header_bytes`` is answered ``431`` and the connection closed;
* the body must arrive within ``body_timeout_seconds`` of the head; otherwise
  the request is answered ``408 request_timeout`` (unless its response has
  begun) and the connection closed. Time the server itself holds the body
  back does not count: while it stopped reading (the app has not taken the
  buffered body yet, or the request waits behind a pipelined one) or has not
  sent ``100 Continue``, the deadline starts over.

Built on uvicorn's httptools protocol, whose parser callbacks these hooks are
(``uvicorn[standard]`` installs httptools; without it the import fails here
rather than the limits silently not applying).

WebSocket handshakes are HTTP requests too, so they get the same limits.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from relaymq.errors import RequestTimeout

HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 31\r\nconnection: close\r\n\r\n"
    b"request head exceeds the limit\n"
)


def body_too_slow(body_timeout_seconds: float) -> bytes:
    """The canned ``408`` of a body that did not arrive in time (an error body as
    every other error of the API has)."""
    error = RequestTimeout(
        f"request body not received within {body_timeout_seconds:g} s",
        limit="body_timeout_seconds",
        body_timeout_seconds=body_timeout_seconds,
    )
    body = msgspec.json.encode({"error": error.to_dict()})
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )


class HeadLimits:
    """Mixin over a uvicorn HTTP protocol: a deadline and a size cap on request
    heads, and a deadline on request bodies."""

    handshake_timeout_seconds: float = 10.0
    max_header_bytes: int = 64 * 1024
    body_timeout_seconds: float = 30.0
    body_timed_out_response: bytes = b""
    cycle: Any  # uvicorn's newest request-response cycle
    flow: Any  # uvicorn's read flow control
    pipeline: Any  # uvicorn's cycles waiting behind the one being answered

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start waiting for the first head at once (silent connections time out too)."""
        super().connection_made(transport)  # type: ignore[misc]
        self.head_bytes = 0
        self.awaiting_head = True
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.arm_head_timer()

    def arm_head_timer(self) -> None:
        """Start the head deadline unless it runs already."""
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(
                self.handshake_timeout_seconds, self.head_timed_out
            )

    def disarm_head_timer(self) -> None:
        """Stop the head deadline."""
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_timed_out(self) -> None:
        """The head did not arrive in time: drop the connection."""
        self.head_timer = None
        if self.awaiting_head and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        """Bytes of a new head start its deadline (after a keep-alive pause)."""
        if self.transport.is_closing():
            return
        if self.awaiting_head:
            self.arm_head_timer()
        super().data_received(data)  # type: ignore[misc]

    def on_url(self, url: bytes) -> None:
        """Count the request target against the head limit."""
        self.count_head(len(url))
        super().on_url(url)  # type: ignore[misc]

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count a header against the head limit."""
        self.count_head(len(name) + len(value) + 4)
        super().on_header(name, value)  # type: ignore[misc]

    def count_head(self, size_bytes: int) -> None:
        """Answer 431 and close once the head grows past ``max_header_bytes``."""
        self.head_bytes += size_bytes
        if self.head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self.transport.write(HEAD_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        """The head is in: its deadline no longer applies, the body's starts (a
        refused head stops here)."""
        self.awaiting_head = False
        self.disarm_head_timer()
        if self.head_bytes > self.max_header_bytes:
            return
        super().on_headers_complete()  # type: ignore[misc]
        self.arm_body_timer(self.cycle)

    def arm_body_timer(self, cycle: Any) -> None:
        """Give ``cycle``'s body ``body_timeout_seconds`` from now."""
        self.body_timer = self.loop.call_later(
            self.body_timeout_seconds, self.body_timed_out, cycle
        )

    def disarm_body_timer(self) -> None:
        """Stop the body deadline."""
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def body_timed_out(self, cycle: Any) -> None:
        """The body did not arrive in time: answer 408 (if nothing was answered yet)
        and drop the connection; the app's ``receive`` then sees a disconnect. If the
        server held the body back meanwhile, the deadline starts over instead."""
        self.body_timer = None
        if self.transport.is_closing():
            return
        queued = any(waiting is cycle for waiting, _ in self.pipeline)
        if queued or self.flow.read_paused or cycle.waiting_for_100_continue:
            self.arm_body_timer(cycle)
            return
        if not cycle.response_started:
            self.transport.write(self.body_timed_out_response)
        self.transport.close()

    def on_body(self, body: bytes) -> None:
        """A refused request's body is ignored."""
        if self.head_bytes <= self.max_header_bytes:
            super().on_body(body)  # type: ignore[misc]

    def on_message_complete(self) -> None:
        """The body is in (its deadline stops); a refused request never reaches the app."""
        self.disarm_body_timer()
        if self.head_bytes <= self.max_header_bytes:
            super().on_message_complete()  # type: ignore[misc]

    def on_response_complete(self) -> None:
        """The next head on this connection gets a fresh budget, unless it is in
        already (pipelined): the body bytes of that request start no head deadline."""
        self.awaiting_head = not self.pipeline
        self.head_bytes = 0
        super().on_response_complete()  # type: ignore[misc]

    def handle_websocket_upgrade(self) -> None:
        """The connection becomes a WebSocket (which has its own idle limit): no HTTP
        deadline may fire into it later."""
        self.disarm_head_timer()
        self.disarm_body_timer()
        super().handle_websocket_upgrade()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        """No deadline outlives its connection."""
        self.disarm_head_timer()
        self.disarm_body_timer()
        super().connection_lost(exc)  # type: ignore[misc]


def guarded_protocol(
    handshake_timeout_seconds: float, max_header_bytes: int, body_timeout_seconds: float
) -> type[Any]:
    """Uvicorn's HTTP protocol class with :class:`HeadLimits` set to these values."""
    return type(
        "GuardedHttpProtocol",
        (HeadLimits, HttpToolsProtocol),
        {
            "handshake_timeout_seconds": handshake_timeout_seconds,
            "max_header_bytes": max_header_bytes,
            "body_timeout_seconds": body_timeout_seconds,
            "body_timed_out_response": body_too_slow(body_timeout_seconds),
        },
    )
