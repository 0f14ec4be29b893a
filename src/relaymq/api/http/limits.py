"""The request body size limit, enforced before any handler parses a body.

An ASGI middleware: a declared ``Content-Length`` above ``max_request_bytes``
is answered ``413`` at once, without reading the body; a body that arrives
without a length (chunked) is counted as it streams in, and the read that
crosses the limit raises a 413 HTTP exception, which the error handlers turn
into the usual error body.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relaymq.api.http.errors import RequestTooLarge, error_response


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body crosses the limit."""

    def __init__(self, max_request_bytes: int) -> None:
        super().__init__(413, f"request body exceeds {max_request_bytes} bytes")
        self.details = {"limit": "max_request_bytes", "max_request_bytes": max_request_bytes}


class BodySizeLimit:
    """ASGI middleware rejecting HTTP request bodies over ``max_request_bytes``."""

    def __init__(self, app: ASGIApp, max_request_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reject by declared length, else pass on a ``receive`` that counts bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared_bytes = declared_length(scope)
        if declared_bytes is not None and declared_bytes > self.max_request_bytes:
            await self.reject(scope, receive, send, declared_bytes)
            return
        await self.app(scope, self.counting(receive), send)

    def counting(self, receive: Receive) -> Receive:
        """``receive`` that raises :class:`BodyTooLarge` once the body crosses the limit."""
        received_bytes = 0

        async def receive_within_limit() -> Message:
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > self.max_request_bytes:
                    raise BodyTooLarge(self.max_request_bytes)
            return message

        return receive_within_limit

    async def reject(self, scope: Scope, receive: Receive, send: Send, length: int) -> None:
        """Answer 413 without reading the body."""
        error = RequestTooLarge(
            f"request body of {length} bytes exceeds {self.max_request_bytes} bytes",
            limit="max_request_bytes",
            max_request_bytes=self.max_request_bytes,
        )
        response = error_response(error)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or ``None`` when absent or unreadable."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
