"""The Server-Sent Events adapter: ``GET /v1/namespaces/{namespace}/streams/{stream}/events``.

Owns tailing a stream for clients that only listen (browsers' ``EventSource``):
one reader task per partition long-polls ``broker.read_stream`` into a small
bounded queue, and the response merges them into ``message`` events. Each
event's ``id`` is a resume token holding the next offset of every partition
read (``0:15,1:22``): sent back as ``Last-Event-ID`` (or ``last_event_id``),
the stream resumes exactly after that event, with no gap and no duplicate.
A comment line goes out every :data:`HEARTBEAT_SECONDS` so proxies keep the
connection open and a gone client is noticed.

Bounded: at most ``settings.sse_max_clients`` streams at once, and per stream
at most two batches per partition in memory (one queued, one being read); a
slow client stops the readers instead of growing a buffer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from fastapi import FastAPI, Header, Query, Request
from starlette.responses import StreamingResponse

from relaymq import errors
from relaymq.api.http.auth import AUTHORIZED, counted_connection, principal_of, security_of
from relaymq.api.metrics import OpenConnections, open_connections
from relaymq.core.message import Message
from relaymq.core.subjects import SubjectFilter
from relaymq.protocol.frames import payload_text

if TYPE_CHECKING:
    from relaymq.auth.sessions import CredentialSession
    from relaymq.broker import Broker
    from relaymq.config import Settings

ROUTE = "/v1/namespaces/{namespace}/streams/{stream}/events"
HEARTBEAT_SECONDS = 15.0
READ_WAIT_MS = 10_000
BATCH_MESSAGES = 100
RETRY_MS = 2_000
TOKEN_PATTERN = re.compile(r"\d{1,5}:\d{1,19}(,\d{1,5}:\d{1,19})*")
MAX_TOKEN_CHARS = 64 * 1024

Positions = dict[int, int]  # partition -> next offset to read


class EventMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The ``data`` of a ``message`` event: the HTTP API's message shape plus
    ``stream``. ``payload`` is text when valid UTF-8, else base64 (``encoding``)."""

    stream: str
    id: str
    subject: str
    payload: str
    encoding: str
    key: str | None = None
    headers: dict[str, str] = {}
    timestamp_ms: int
    partition: int
    offset: int
    priority: int = 0
    deliver_at_ms: int | None = None
    expires_at_ms: int | None = None


_encoder = msgspec.json.Encoder()


def event_data(stream: str, message: Message) -> bytes:
    """The JSON ``data`` of one message event."""
    payload, encoding = payload_text(message.payload)
    return _encoder.encode(
        EventMessage(
            stream=stream,
            id=message.id or f"{message.partition}-{message.offset}",
            subject=message.subject,
            payload=payload,
            encoding=encoding,
            key=message.key,
            headers=message.headers,
            timestamp_ms=message.timestamp_ms,
            partition=message.partition,
            offset=message.offset,
            priority=message.priority,
            deliver_at_ms=message.deliver_at_ms,
            expires_at_ms=message.expires_at_ms,
        )
    )


def format_token(positions: Positions) -> str:
    """The resume token: ``partition:next_offset`` pairs, by partition."""
    return ",".join(f"{partition}:{offset}" for partition, offset in sorted(positions.items()))


def parse_token(token: str) -> Positions:
    """The positions in a resume token; :class:`InvalidArgument` when malformed."""
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS or not TOKEN_PATTERN.fullmatch(token):
        raise errors.InvalidArgument(
            "last event id must look like 0:15,1:22", field="last_event_id"
        )
    pairs = (pair.split(":") for pair in token.split(","))
    return {int(partition): int(offset) for partition, offset in pairs}


def format_event(token: str, data: bytes) -> bytes:
    """One SSE ``message`` event (JSON has no raw newlines, so one ``data:`` line)."""
    return b"id: " + token.encode() + b"\nevent: message\ndata: " + data + b"\n\n"


def error_event(error: errors.RelayError) -> bytes:
    """The ``error`` event that ends a stream which can no longer be read."""
    return b"event: error\ndata: " + _encoder.encode(error.to_dict()) + b"\n\n"


class Start(msgspec.Struct, kw_only=True, frozen=True):
    """Where a tail begins: offsets per partition, or a time for all of them."""

    positions: Positions
    timestamp_ms: int | None = None


def start_for(partitions: list[Any], start: str, resume_token: str | None) -> Start:
    """The start of a tail over ``partitions`` (``PartitionInfo`` values): the
    resume token wins; else ``earliest``, ``latest`` or a time in ms."""
    earliest = {info.partition: info.first_offset for info in partitions}
    if resume_token is not None:
        resumed = parse_token(resume_token)
        return Start(positions={p: max(resumed.get(p, o), o) for p, o in earliest.items()})
    if start == "earliest":
        return Start(positions=earliest)
    if start == "latest":
        return Start(positions={info.partition: info.last_offset + 1 for info in partitions})
    if start.isdigit() and len(start) <= 16:
        return Start(positions=earliest, timestamp_ms=int(start))
    raise errors.InvalidArgument(
        "from must be earliest, latest or a time in ms since the epoch", field="from"
    )


class StreamTail:
    """Reads partitions of one stream into a bounded queue, one task each."""

    def __init__(self, broker: Broker, namespace: str, stream: str, start: Start) -> None:
        self.broker = broker
        self.namespace = namespace
        self.stream = stream
        self.start = start
        self.queue: asyncio.Queue[tuple[int, list[Message]] | errors.RelayError] = asyncio.Queue(
            maxsize=len(start.positions)
        )
        self.tasks: list[asyncio.Task[None]] = []
        self.stopped = False

    def begin(self) -> None:
        """Start one reader per partition."""
        for partition, offset in self.start.positions.items():
            task = asyncio.create_task(self.read_forever(partition, offset))
            self.tasks.append(task)

    def end(self, error: errors.RelayError) -> None:
        """Stop reading and make ``error`` the next (and last) item of the queue."""
        self.stop()
        self.queue.put_nowait(error)  # stop() emptied it

    def stop(self) -> None:
        """Cancel every reader. A reader whose cancellation is swallowed (Python
        3.11's ``asyncio.wait_for`` can do that) still ends: it sees ``stopped``
        after its current read, and the queue is emptied so it never blocks."""
        self.stopped = True
        for task in self.tasks:
            task.cancel()
        while not self.queue.empty():
            self.queue.get_nowait()

    async def read_forever(self, partition: int, offset: int) -> None:
        """Long-poll one partition and queue its batches; queue the error that stops it."""
        timestamp_ms = self.start.timestamp_ms
        try:
            while not self.stopped:
                messages = await self.broker.read_stream(
                    self.namespace,
                    self.stream,
                    partition=partition,
                    from_offset=offset if timestamp_ms is None else None,
                    from_timestamp_ms=timestamp_ms,
                    max_messages=BATCH_MESSAGES,
                    wait_ms=READ_WAIT_MS,
                )
                if messages and not self.stopped:
                    timestamp_ms = None
                    offset = messages[-1].offset + 1
                    await self.queue.put((partition, messages))
        except errors.RelayError as error:
            await self.queue.put(error)


async def events(
    tail: StreamTail,
    matches: Callable[[str], bool],
    connections: OpenConnections,
    credential: Callable[[Callable[[str], None]], CredentialSession],
) -> AsyncIterator[bytes]:
    """The event stream: ``message`` events, heartbeat comments, and an
    ``error`` event when the stream can no longer be read or the credential
    that opened it no longer holds (``credential(end)`` opens its session)."""
    session = credential(lambda reason: tail.end(errors.Unauthenticated(reason)))
    connections.open("sse")
    tail.begin()
    positions = dict(tail.start.positions)
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    item = await tail.queue.get()
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if isinstance(item, errors.RelayError):
                yield error_event(item)
                return
            chunk = batch_events(tail.stream, item, positions, matches)
            if chunk:
                yield chunk
    finally:
        session.close()
        tail.stop()
        connections.close("sse")


def batch_events(
    stream: str,
    batch: tuple[int, list[Message]],
    positions: Positions,
    matches: Callable[[str], bool],
) -> bytes:
    """The events of one partition's batch; advances ``positions`` past it
    (filtered-out messages advance them too, so a resume never rereads them
    into events)."""
    partition, messages = batch
    chunks: list[bytes] = []
    for message in messages:
        positions[partition] = message.offset + 1
        if matches(message.subject):
            chunks.append(format_event(format_token(positions), event_data(stream, message)))
    return b"".join(chunks)


def selected_partitions(info: Any, partition: int | None) -> list[Any]:
    """The ``PartitionInfo`` of the partitions to tail."""
    if partition is None:
        return list(info.partitions)
    if not 0 <= partition < len(info.partitions):
        raise errors.PartitionNotFound(
            f"stream {info.config.name!r} has no partition {partition}",
            stream=info.config.name,
            partition=partition,
        )
    return [info.partitions[partition]]


def subject_matcher(subject: str | None) -> Callable[[str], bool]:
    """The subject filter (``*`` and ``>`` wildcards), or match-all."""
    if subject is None or subject == ">":
        return lambda _subject: True
    return SubjectFilter(subject)


def check_capacity(connections: OpenConnections, settings: Settings) -> None:
    """Refuse a new stream beyond ``sse_max_clients``."""
    if connections.count("sse") >= settings.sse_max_clients:
        raise errors.TooManyConnections(
            f"at most {settings.sse_max_clients} event streams",
            limit="sse_max_clients",
            sse_max_clients=settings.sse_max_clients,
        )


def install(app: FastAPI, broker: Broker, settings: Settings) -> None:
    """Register the SSE route on ``app``."""
    connections = open_connections(app)

    async def stream_events(
        request: Request,
        namespace: str,
        stream: str,
        partition: Annotated[int | None, Query(ge=0, description="Only this partition.")] = None,
        subject: Annotated[
            str | None, Query(max_length=1024, description="Subject filter (* and >).")
        ] = None,
        start: Annotated[
            str, Query(alias="from", max_length=32, description="earliest, latest or a ms time.")
        ] = "earliest",
        last_event_id: Annotated[
            str | None, Query(max_length=MAX_TOKEN_CHARS, description="Resume token.")
        ] = None,
        last_event_id_header: Annotated[
            str | None, Header(alias="Last-Event-ID", include_in_schema=False)
        ] = None,
    ) -> StreamingResponse:
        """Tail a stream as Server-Sent Events (see ``docs/protocol.md``)."""
        check_capacity(connections, settings)
        info = broker.stream_info(namespace, stream)
        matches = subject_matcher(subject)
        chosen = selected_partitions(info, partition)
        resume_token = last_event_id_header or last_event_id
        tail = StreamTail(broker, namespace, stream, start_for(chosen, start, resume_token))
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        principal, security = principal_of(request), security_of(request)
        body = counted_connection(
            events(tail, matches, connections, lambda end: security.open_session(principal, end)),
            request,
            namespace,
        )
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    app.add_api_route(
        ROUTE,
        stream_events,
        methods=["GET"],
        include_in_schema=False,
        summary="Tail a stream as Server-Sent Events",
        dependencies=AUTHORIZED,
    )
