"""The HTTP/1.1 connection protocol the server runs: uvicorn's, plus slowloris limits.

Uvicorn times out idle keep-alive connections but not a client that sends a
request head one byte a minute, and its fast parser (httptools) has no head
size limit. :func:`guarded_protocol` builds uvicorn's protocol class with
both:

* the head (request line and headers) must arrive within
  ``handshake_timeout_seconds`` of the connection opening or of its first
  byte after a keep-alive pause; otherwise the connection is closed;
* a head over ``max_header_bytes`` is answered ``431`` and the connection closed.

WebSocket handshakes are HTTP requests too, so they get the same limits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 31\r\nconnection: close\r\n\r\n"
    b"request head exceeds the limit\n"
)


class HeadLimits:
    """Mixin over a uvicorn HTTP protocol: a deadline and a size cap on request heads."""

    handshake_timeout_seconds: float = 10.0
    max_header_bytes: int = 64 * 1024

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start waiting for the first head at once (silent connections time out too)."""
        super().connection_made(transport)  # type: ignore[misc]
        self.head_bytes = 0
        self.awaiting_head = True
        self.head_timer: asyncio.TimerHandle | None = None
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
        """The head is in: its deadline no longer applies (a refused head stops here)."""
        self.awaiting_head = False
        self.disarm_head_timer()
        if self.head_bytes > self.max_header_bytes:
            return
        super().on_headers_complete()  # type: ignore[misc]

    def on_body(self, body: bytes) -> None:
        """A refused request's body is ignored."""
        if self.head_bytes <= self.max_header_bytes:
            super().on_body(body)  # type: ignore[misc]

    def on_message_complete(self) -> None:
        """A refused request never reaches the app."""
        if self.head_bytes <= self.max_header_bytes:
            super().on_message_complete()  # type: ignore[misc]

    def on_response_complete(self) -> None:
        """The next head on this connection gets a fresh budget."""
        self.awaiting_head = True
        self.head_bytes = 0
        super().on_response_complete()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        """No deadline outlives its connection."""
        self.disarm_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]


def guarded_protocol(handshake_timeout_seconds: float, max_header_bytes: int) -> type[Any]:
    """Uvicorn's HTTP protocol class with :class:`HeadLimits` set to these values."""
    return type(
        "GuardedHttpProtocol",
        (HeadLimits, AutoHTTPProtocol),
        {
            "handshake_timeout_seconds": handshake_timeout_seconds,
            "max_header_bytes": max_header_bytes,
        },
    )
