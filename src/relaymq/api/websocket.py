"""The WebSocket adapter: ``/v1/namespaces/{namespace}/ws``.

Owns the life of one WebSocket connection: reading and dispatching client
frames (decoded by :mod:`relaymq.protocol.frames`; a small binary publish or ack
is handled in the protocol's call that read it while the reader waits idle,
:meth:`Connection.receive_now`), pipelined publishes confirmed after
durability, one push loop per subscription limited by credit, and the bounded
send queue of the server frames that cannot be written at once.
``docs/protocol.md`` is the protocol's specification.

Everything is bounded, so a slow or hostile client never makes the server
buffer without limit:

* the send queue holds at most :data:`SEND_QUEUE_FRAMES` frames; whoever
  produces a frame waits when it is full (a confirm, sent from a callback, then
  waits in a task that holds its publish's window share);
* publishes in progress are limited per connection (messages and bytes); at
  the limit the reader stops reading, which is TCP backpressure on the client;
* a subscription never has more unacked messages out than its credit, which
  is at most ``settings.ws_max_credit``;
* frames are at most ``settings.ws_max_frame_bytes`` (close 1009); a
  connection silent for ``settings.ws_idle_timeout_seconds`` is closed (4408);
  one whose credential is revoked, regranted or expires is closed (4401,
  :mod:`relaymq.auth.sessions`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketState

from relaymq import errors
from relaymq.api.http.auth import authenticate_websocket, origin_allowed, security_of
from relaymq.api.http.errors import error_response
from relaymq.api.metrics import OpenConnections, open_connections
from relaymq.api.ordered_leases import OrderedLeases
from relaymq.api.websocket_protocol import RECEIVE_NOW_EXTENSION, WRITE_NOW_EXTENSION
from relaymq.auth.policy import Action, can_see, enforce
from relaymq.auth.principal import Principal, Resource, ResourceKind
from relaymq.core.cursor import DeliveryMode
from relaymq.protocol import frames

if TYPE_CHECKING:
    from relaymq.broker import Broker
    from relaymq.config import Settings

logger = logging.getLogger(__name__)

ROUTE = "/v1/namespaces/{namespace}/ws"
SEND_QUEUE_FRAMES = 256
# Enough for several full publish frames at once, so their appends share an fsync
# (group commit) instead of taking turns.
MAX_PUBLISHING_MESSAGES = 16_384
MAX_PUBLISHING_BYTES = 64 * 1024 * 1024
MAX_SUBSCRIPTIONS = 256
# Publish targets a connection remembers as allowed; past that many (a client
# publishing to ever new subjects) it starts over.
MAX_REMEMBERED_DECISIONS = 1024
DEFAULT_BATCH_MESSAGES = 100
FETCH_WAIT_MS = 5_000
RECHECK_SECONDS = 1.0
RECANCEL_SECONDS = 0.1

CLOSE_POLICY_VIOLATION = 1008
CLOSE_FRAME_TOO_LARGE = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_IDLE_TIMEOUT = 4408
CLOSE_CREDENTIAL_ENDED = 4401  # revoked, new grants or expired: reconnect to authenticate

Encoding = str  # "json" or "msgpack"


def now_ms() -> int:
    """Wall-clock time in ms since the epoch (lease deadlines use it)."""
    return int(time.time() * 1000)


def internal_error(seq: int | None = None, sub: str | None = None) -> frames.Error:
    """The ``error`` frame for a bug: logged server-side, never detailed to the client."""
    message = "internal error; the server log has the details"
    return frames.Error(code="internal", message=message, seq=seq, sub=sub)


class Outbox:
    """The connection's bounded queue of encoded server frames, sent in order.

    A frame is written at once, by whoever produced it, when nothing is queued or
    being sent ahead of it and the server's protocol can write synchronously
    (:data:`~relaymq.api.websocket_protocol.WRITE_NOW_EXTENSION`): no task wakes on
    the latency path of a confirm or a delivery, and a confirm can be sent from its
    future's callback. Otherwise (the socket paused for write flow control, another
    ASGI server) it waits in the queue for the writer task, which uses the ASGI
    ``send``. Producers wait while the queue is full; closing it wakes every one of
    them (their frames are dropped), so no producer task outlives the connection."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        extension = (websocket.scope.get("extensions") or {}).get(WRITE_NOW_EXTENSION)
        self.write_now: Callable[[bytes | str], bool] | None = (
            extension["write"] if extension is not None else None
        )
        self.frames: collections.deque[bytes | str] = collections.deque()
        self.queued = asyncio.Event()  # set while frames wait to be sent
        self.space = asyncio.Event()  # set while the queue has room
        self.space.set()
        self.sending = False  # the writer task is in an ASGI send
        self.failure: Exception | None = None
        self.closed = False

    async def put(self, frame: frames.ServerFrame, encoding: Encoding) -> None:
        """Send or queue a frame; waits while the queue is full; dropped once closed."""
        while not self.offer(frame, encoding):
            self.space.clear()
            await self.space.wait()

    def has_room(self) -> bool:
        """Whether :meth:`offer` would take a frame now."""
        return len(self.frames) < SEND_QUEUE_FRAMES

    def offer(self, frame: frames.ServerFrame, encoding: Encoding) -> bool:
        """Send or queue a frame without waiting; ``False``, having done nothing, when
        the queue is full. A closed outbox drops the frame."""
        if self.closed:
            return True
        if not self.has_room():
            return False
        encode = frames.encode_binary if encoding == "msgpack" else frames.encode_text
        data = encoded(encode, frame)
        idle = not self.frames and not self.sending and self.failure is None
        if not (idle and self.write_now is not None and self.write_now(data)):
            self.frames.append(data)
            self.queued.set()
        return True

    async def write_forever(self) -> None:
        """Send queued frames, in order, until the socket fails."""
        while True:
            await self.queued.wait()
            if not self.frames:
                self.queued.clear()
                continue
            data = self.frames.popleft()
            if not self.frames:
                self.queued.clear()
            self.space.set()
            if self.write_now is not None and self.write_now(data):
                continue
            self.sending = True
            try:
                await self.send(data)
            except Exception as error:
                self.failure = error
                raise
            finally:
                self.sending = False

    async def send(self, data: bytes | str) -> None:
        """Send one encoded frame through ASGI (waits while the socket is paused)."""
        if isinstance(data, str):
            await self.websocket.send_text(data)
        else:
            await self.websocket.send_bytes(data)

    def close(self) -> None:
        """Drop queued frames and refuse new ones, waking every waiting producer."""
        self.closed = True
        self.frames.clear()
        self.space.set()


def encoded(encode: Callable[[frames.ServerFrame], Any], frame: frames.ServerFrame) -> Any:
    """``encode(frame)``; a frame that cannot be encoded (a value msgpack cannot
    hold, say) is logged and replaced by an ``internal`` error."""
    try:
        return encode(frame)
    except (TypeError, ValueError, OverflowError):
        logger.exception("cannot encode a %s frame", type(frame).__name__)
        return encode(internal_error(getattr(frame, "seq", None), getattr(frame, "sub", None)))


class PublishWindow:
    """Messages and bytes of the publishes a connection has in progress."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.messages = 0
        self.bytes = 0
        self.freed = asyncio.Event()  # set when a share is given back

    def clamp(self, messages: int, size_bytes: int) -> tuple[int, int]:
        """The share a publish takes: a lone huge frame still fits an empty window."""
        return min(messages, self.max_messages), min(size_bytes, self.max_bytes)

    async def acquire(self, messages: int, size_bytes: int) -> None:
        """Wait until the publish fits, then take its share (only the connection's
        reader acquires, so there is never more than one waiter)."""
        while not self.fits(messages, size_bytes):
            self.freed.clear()
            await self.freed.wait()
        self.take(messages, size_bytes)

    def take(self, messages: int, size_bytes: int) -> None:
        """Take a share that :meth:`fits`."""
        self.messages += messages
        self.bytes += size_bytes

    def fits(self, messages: int, size_bytes: int) -> bool:
        """Whether a publish of that size may start now."""
        return (
            self.messages + messages <= self.max_messages
            and self.bytes + size_bytes <= self.max_bytes
        )

    def release(self, messages: int, size_bytes: int) -> None:
        """Give a finished publish's share back."""
        self.messages -= messages
        self.bytes -= size_bytes
        self.freed.set()


class Subscriber:
    """One ``subscribe`` of a connection: a loop fetching from the broker within
    the credit and sending one ``deliver`` frame per batch.

    Credit is the most unacked messages out at once (prefetch): every delivered
    message takes one unit until it is acked, nacked or termed, or its lease
    runs out; the ``credit`` op raises the limit."""

    def __init__(
        self,
        connection: Connection,
        frame: frames.Subscribe,
        encoding: Encoding,
        ordered: bool = False,
    ) -> None:
        self.connection = connection
        # Ordered mode: acks are cumulative and failures rewind, which end more leases.
        self.ordered_leases = OrderedLeases() if ordered else None
        self.handle = frame.sub
        self.subscription = frame.subscription
        self.consumer_id = f"ws-{connection.connection_id}-{frame.sub}"
        self.credit = frame.credit
        self.batch_messages = frame.batch or DEFAULT_BATCH_MESSAGES
        self.encoding = encoding
        self.in_flight: dict[str, int] = {}  # receipt -> lease deadline (ms since epoch)
        # No lease in flight runs out before this (ms since epoch): until then the scan
        # of every lease (thousands with a large credit) is skipped on each push.
        self.first_deadline_ms: int | None = None
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.stopped = False

    def start(self) -> None:
        """Start pushing."""
        self.task = asyncio.create_task(self.push_forever(), name=self.consumer_id)

    async def stop(self) -> None:
        """Stop pushing and hand the unacked messages back for redelivery."""
        self.stopped = True
        if self.task is not None:
            await cancel_until_done(self.task)
        broker = self.connection.broker
        with contextlib.suppress(errors.RelayError):
            await broker.release_consumer(
                self.connection.namespace, self.subscription, self.consumer_id
            )

    def room(self) -> int:
        """How many more messages may be delivered now."""
        first_deadline_ms = self.first_deadline_ms
        if first_deadline_ms is not None and first_deadline_ms < now_ms():
            self.expire_leases()
        return self.credit - len(self.in_flight)

    def expire_leases(self) -> None:
        """Forget the leases that ran out (the broker redelivers them)."""
        current_ms = now_ms()
        in_flight = self.in_flight
        expired = [receipt for receipt, deadline in in_flight.items() if deadline < current_ms]
        for receipt in expired:
            del in_flight[receipt]
        leases = self.ordered_leases
        if leases is not None:  # an expired lease rewinds its partition
            for partition in {leases.partition(receipt) for receipt in expired}:
                for receipt in leases.rewound(partition) if partition is not None else ():
                    in_flight.pop(receipt, None)
        self.first_deadline_ms = min(in_flight.values(), default=None)

    def note_deadline(self, deadline_ms: int) -> None:
        """A lease in flight now runs out at ``deadline_ms``."""
        if self.first_deadline_ms is None or deadline_ms < self.first_deadline_ms:
            self.first_deadline_ms = deadline_ms

    def add_credit(self, credit: int) -> None:
        """Raise the credit by ``credit`` and wake the push loop."""
        self.credit += credit
        self.changed.set()

    def settled(self, frame: frames.ReceiptFrame, outcomes: list[frames.ReceiptOutcome]) -> None:
        """Account for an ack-family op: settled receipts free their credit."""
        if isinstance(frame, frames.Extend):
            for outcome in outcomes:
                if outcome.deadline_ms is not None and outcome.receipt in self.in_flight:
                    self.in_flight[outcome.receipt] = outcome.deadline_ms
                    self.note_deadline(outcome.deadline_ms)  # an extension may shorten it
            return
        for receipt in frame.receipts:
            self.in_flight.pop(receipt, None)
        if self.ordered_leases is not None:
            self.forget_ended_in_order(frame, outcomes)
        self.changed.set()

    def forget_ended_in_order(
        self, frame: frames.ReceiptFrame, outcomes: list[frames.ReceiptOutcome]
    ) -> None:
        """Ordered mode: an ack ends every earlier lease of its partition (it is
        cumulative) and a nack every lease of it (the partition rewinds). Forget
        those leases too, or their credit would come back only as they run out."""
        leases = self.ordered_leases
        assert leases is not None
        in_flight = self.in_flight
        rewound = isinstance(frame, frames.Nack)
        for outcome in outcomes:
            if not outcome.ok:
                continue
            if isinstance(frame, frames.Term):
                leases.trim(outcome.receipt, in_flight)
                continue
            if rewound:
                partition = leases.partition(outcome.receipt)
                ended = [] if partition is None else leases.rewound(partition)
            else:
                ended = leases.acked_through(outcome.receipt)
            for receipt in ended:
                in_flight.pop(receipt, None)

    async def push_forever(self) -> None:
        """Fetch and deliver until stopped; a broker error ends the subscription."""
        try:
            while not self.stopped:
                await self.push_once()
        except errors.RelayError as error:
            await self.connection.outbox.put(
                frames.error_frame(error, sub=self.handle), self.encoding
            )
        except Exception:
            logger.exception("push loop of %s failed", self.consumer_id)
            await self.connection.outbox.put(internal_error(sub=self.handle), self.encoding)
        self.connection.forget(self)

    async def push_once(self) -> None:
        """One fetch within the credit, and its ``deliver`` frame."""
        self.changed.clear()
        room = self.room()
        if room <= 0:
            await self.wait_for_change()
            return
        started_seconds = time.monotonic()
        deliveries = await self.fetch(min(room, self.batch_messages))
        if deliveries:
            for delivery in deliveries:
                self.in_flight[delivery.receipt] = delivery.deadline_ms
            if self.ordered_leases is not None:
                self.ordered_leases.delivered(deliveries)
            self.note_deadline(min(delivery.deadline_ms for delivery in deliveries))
            frame = frames.deliver_frame(self.handle, deliveries, self.encoding)
            await self.connection.outbox.put(frame, self.encoding)
        elif time.monotonic() - started_seconds < self.connection.fetch_wait_ms / 2000:
            await self.wait_for_change()  # the broker answered early: do not spin

    async def fetch(self, max_messages: int) -> list[Any]:
        """Long-poll the broker for up to ``max_messages``."""
        connection = self.connection
        return await connection.broker.fetch(
            connection.namespace,
            self.subscription,
            consumer_id=self.consumer_id,
            max_messages=min(max_messages, connection.settings.max_fetch_messages),
            wait_ms=connection.fetch_wait_ms,
            max_in_flight=self.credit,
        )

    async def wait_for_change(self) -> None:
        """Wait for an ack or more credit, at most :data:`RECHECK_SECONDS`
        (leases also run out on their own)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RECHECK_SECONDS):
                await self.changed.wait()


class IdleTimeout(Exception):
    """The client sent nothing for the idle timeout."""


class IdleWatchdog:
    """Ends a receive that waited the idle timeout, with one timer per connection
    instead of one per frame (an ``asyncio.timeout`` per received frame costs a
    timer heap push and cancel on the hot path): frames only stamp the time, and
    the timer re-arms itself for the rest of the timeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.loop = asyncio.get_running_loop()
        self.last_frame = self.loop.time()
        self.waiting: asyncio.Task[Any] | None = None  # the task in receive, if any
        self.expired = False
        self.timer = self.loop.call_later(seconds, self.check)

    async def receive(self, websocket: WebSocket) -> dict[str, Any]:
        """``websocket.receive()``, or :class:`IdleTimeout` once the timeout passed."""
        task = asyncio.current_task(self.loop)  # with the loop: no lookup (getpid on 3.11)
        self.waiting = task
        self.last_frame = self.loop.time()  # time spent busy elsewhere was not idle
        try:
            message = await websocket.receive()
        except asyncio.CancelledError:
            if self.expired and task is not None and task.uncancel() == 0:
                raise IdleTimeout from None
            raise
        finally:
            self.waiting = None
        self.last_frame = self.loop.time()
        return message

    @property
    def idle(self) -> bool:
        """Whether the reader waits in :meth:`receive` for a frame (and was not told
        to stop waiting)."""
        return self.waiting is not None and not self.expired

    def heard(self) -> None:
        """A frame arrived that the reader did not receive (it was handled at once)."""
        self.last_frame = self.loop.time()

    def check(self) -> None:
        """The timer: expire a receive that waited long enough, or re-arm."""
        now = self.loop.time()
        if self.waiting is None:
            # A reader busy elsewhere (a full publish window) is not idle: its next
            # receive gets a whole timeout.
            self.last_frame = now
        elif now - self.last_frame >= self.seconds:
            self.expired = True
            self.waiting.cancel()
            return
        remaining = self.seconds - (now - self.last_frame)
        self.timer = self.loop.call_later(max(remaining, 0.001), self.check)

    def stop(self) -> None:
        """Cancel the timer."""
        self.timer.cancel()


async def cancel_until_done(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it finished, cancelling again should a
    cancellation be swallowed (Python 3.11's ``asyncio.wait_for`` swallows one
    that arrives just as the awaited future completes)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)


class Connection:
    """One WebSocket client of one namespace."""

    def __init__(
        self,
        websocket: WebSocket,
        namespace: str,
        broker: Broker,
        settings: Settings,
        principal: Principal,
    ) -> None:
        self.websocket = websocket
        self.namespace = namespace
        self.principal = principal  # authenticated at the handshake
        self.broker = broker
        self.settings = settings
        self.connection_id = uuid.uuid4().hex[:16]
        self.outbox = Outbox(websocket)
        self.window = PublishWindow(MAX_PUBLISHING_MESSAGES, MAX_PUBLISHING_BYTES)
        self.subscribers: dict[str, Subscriber] = {}
        self.background: set[asyncio.Task[None]] = set()  # confirms, releases
        self.pinned_encoding: Encoding | None = None
        self.fetch_wait_ms = min(FETCH_WAIT_MS, settings.max_wait_ms)
        self.watchdog: IdleWatchdog | None = None  # while the reader runs
        self.allowed_publishes: set[tuple[ResourceKind, str]] = set()  # see authorize
        # The frames a binary message can be handled as at once, in the protocol's call
        # (receive_now): the hot ones, and only while they need not wait.
        self.immediate_handlers: dict[type, Callable[[Any, int], bool]] = {
            frames.BinaryPublish: self.publish_now,
            frames.Publish: self.publish_now,
            frames.Ack: self.ack_now,
        }
        self.handlers: dict[type, Callable[[Any, Encoding, int], Awaitable[None]]] = {
            frames.Hello: self.hello,
            frames.Publish: self.publish,
            frames.BinaryPublish: self.publish,
            frames.Subscribe: self.subscribe,
            frames.Credit: self.credit,
            frames.Unsubscribe: self.unsubscribe,
            frames.Ack: self.settle,
            frames.Nack: self.settle,
            frames.Extend: self.settle,
            frames.Term: self.settle,
            frames.Ping: self.ping,
        }

    # -- the connection's life ------------------------------------------------------------

    async def serve(self) -> None:
        """Run the reader and the writer until either ends, or the credential that
        opened the connection no longer holds; then clean up."""
        ended: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        register = self.receiver_registration()

        def end(reason: str) -> None:
            if register is not None:
                register(None)  # not one more frame of an ended credential at once
            if not ended.done():
                ended.set_result((CLOSE_CREDENTIAL_ENDED, reason))

        session = security_of(self.websocket).open_session(self.principal, end)
        reader = asyncio.create_task(self.read_forever())
        writer = asyncio.create_task(self.outbox.write_forever())
        if register is not None and not ended.done():
            register(self.receive_now)
        try:
            await asyncio.wait({reader, writer, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if register is not None:
                register(None)
            session.close()
            writer.cancel()
            reader.cancel()
            close = await self.outcome(reader)
            if ended.done():
                close = ended.result()
            await asyncio.wait({writer})
            if not writer.cancelled() and writer.exception() is not None:
                logger.debug(
                    "websocket %s: send failed: %r", self.connection_id, writer.exception()
                )
            await self.close(close)

    async def outcome(self, reader: asyncio.Task[tuple[int, str] | None]) -> tuple[int, str] | None:
        """The close code and reason the reader asked for, if any."""
        try:
            return await reader
        except asyncio.CancelledError:
            return None
        except Exception:
            logger.exception("websocket reader of %s failed", self.connection_id)
            return CLOSE_INTERNAL_ERROR, "internal error"

    async def close(self, close: tuple[int, str] | None) -> None:
        """Close the socket (when still open) and release every subscription."""
        self.outbox.close()
        if close is not None and self.websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(*close)
        for subscriber in list(self.subscribers.values()):
            await subscriber.stop()
        self.subscribers.clear()

    def forget(self, subscriber: Subscriber) -> None:
        """Drop a subscriber whose push loop ended on its own, releasing its messages."""
        if self.subscribers.get(subscriber.handle) is subscriber:
            del self.subscribers[subscriber.handle]
            subscriber.task = None
            release = asyncio.create_task(subscriber.stop())
            self.background.add(release)
            release.add_done_callback(self.background.discard)

    # -- reading ----------------------------------------------------------------------------

    async def read_forever(self) -> tuple[int, str] | None:
        """Read and dispatch frames; returns the close to send, or ``None`` when
        the client went away."""
        watchdog = self.watchdog = IdleWatchdog(self.settings.ws_idle_timeout_seconds)
        try:
            while True:
                try:
                    message = await watchdog.receive(self.websocket)
                except IdleTimeout:
                    return CLOSE_IDLE_TIMEOUT, "idle timeout"
                if message["type"] == "websocket.disconnect":
                    return None
                data, encoding = frame_data(message)
                size_bytes = frames.frame_size_bytes(data, self.settings.ws_max_frame_bytes)
                if size_bytes > self.settings.ws_max_frame_bytes:
                    return (
                        CLOSE_FRAME_TOO_LARGE,
                        f"frame exceeds {self.settings.ws_max_frame_bytes} bytes",
                    )
                await self.receive_frame(data, encoding, size_bytes)
        finally:
            self.watchdog = None
            watchdog.stop()

    def receiver_registration(self) -> Callable[[Any], None] | None:
        """The protocol's ``register`` of :data:`RECEIVE_NOW_EXTENSION`, if it has one."""
        extension = (self.websocket.scope.get("extensions") or {}).get(RECEIVE_NOW_EXTENSION)
        return extension["register"] if extension is not None else None

    def receive_now(self, data: bytes) -> bool:
        """Handle a binary frame in the protocol's call, without waking the reader:
        only while the reader waits idle (so frames keep their order), only for a
        publish or an ack, and only when nothing has to wait (the publish window has
        room, so has the send queue for an error reply). ``False``: nothing was done,
        and the reader receives the frame as usual."""
        watchdog = self.watchdog
        if (
            watchdog is None
            or not watchdog.idle
            or len(data) > self.settings.ws_max_frame_bytes
            or not self.outbox.has_room()
        ):
            return False
        try:
            frame = frames.decode_binary(data)
        except errors.InvalidArgument:
            return False  # the reader answers it
        handler = self.immediate_handlers.get(type(frame))
        if handler is None:
            return False
        try:
            if not handler(frame, len(data)):
                return False
        except errors.RelayError as error:
            seq, sub = getattr(frame, "seq", None), getattr(frame, "sub", None)
            self.outbox.offer(frames.error_frame(error, seq=seq, sub=sub), self.reply_encoding())
        except Exception:
            logger.exception("websocket frame %s failed", type(frame).__name__)
            seq, sub = getattr(frame, "seq", None), getattr(frame, "sub", None)
            self.outbox.offer(internal_error(seq, sub), self.reply_encoding())
        watchdog.heard()
        return True

    def reply_encoding(self) -> Encoding:
        """The encoding of a reply to a binary frame."""
        return self.pinned_encoding or "msgpack"

    async def receive_frame(self, data: str | bytes, encoding: Encoding, size_bytes: int) -> None:
        """Decode one frame and run its handler; every failure becomes an ``error`` frame."""
        try:
            frame = (
                frames.decode_binary(data) if encoding == "msgpack" else frames.decode_text(data)
            )
        except errors.InvalidArgument as error:
            await self.send(frames.error_frame(error), encoding)
            return
        seq, sub = getattr(frame, "seq", None), getattr(frame, "sub", None)
        try:
            await self.handlers[type(frame)](frame, encoding, size_bytes)
        except errors.RelayError as error:
            await self.send(frames.error_frame(error, seq=seq, sub=sub), encoding)
        except Exception:
            logger.exception("websocket frame %s failed", type(frame).__name__)
            await self.send(internal_error(seq, sub), encoding)

    async def send(self, frame: frames.ServerFrame, encoding: Encoding) -> None:
        """Queue a reply, in the pinned encoding or else the request's."""
        await self.outbox.put(frame, self.pinned_encoding or encoding)

    # -- handlers ---------------------------------------------------------------------------

    async def hello(self, frame: frames.Hello, encoding: Encoding, size_bytes: int) -> None:
        """Pin the encoding (if asked) and describe the connection and its limits."""
        if frame.encoding is not None:
            self.pinned_encoding = frame.encoding
        welcome = frames.Welcome(
            version=frames.PROTOCOL_VERSION,
            connection_id=self.connection_id,
            encoding=self.pinned_encoding,
            limits=self.limits(),
            seq=frame.seq,
        )
        await self.send(welcome, encoding)

    def limits(self) -> dict[str, int]:
        """The limits a client should know, as announced in ``welcome``."""
        settings = self.settings
        return {
            "max_frame_bytes": settings.ws_max_frame_bytes,
            "max_credit": settings.ws_max_credit,
            "idle_timeout_ms": int(settings.ws_idle_timeout_seconds * 1000),
            "max_batch_messages": settings.max_batch_messages,
            "max_payload_bytes": settings.max_payload_bytes,
            "max_fetch_messages": settings.max_fetch_messages,
            "max_publishing_messages": MAX_PUBLISHING_MESSAGES,
            "max_subscriptions": MAX_SUBSCRIPTIONS,
        }

    async def publish(self, frame: frames.AnyPublish, encoding: Encoding, size_bytes: int) -> None:
        """Write a publish now, in the reader's step, and confirm it from its future's
        callback once durable; waits (and so stops reading) while the window is full."""
        self.authorize_publish(frame)
        share = self.window.clamp(len(frame.messages), size_bytes)
        await self.window.acquire(*share)
        self.start_publish(frame, encoding, share)

    def publish_now(self, frame: frames.AnyPublish, size_bytes: int) -> bool:
        """:meth:`publish` of a binary frame, unless the window is full (``False``)."""
        share = self.window.clamp(len(frame.messages), size_bytes)
        if not self.window.fits(*share):
            return False
        self.authorize_publish(frame)
        self.window.take(*share)
        self.start_publish(frame, "msgpack", share)
        return True

    def start_publish(
        self, frame: frames.AnyPublish, encoding: Encoding, share: tuple[int, int]
    ) -> None:
        """Write a publish whose window share is taken; confirm it once durable."""
        try:
            durable = self.broker.start_publish(
                self.namespace, frame.broker_messages(), stream=frame.stream
            )
        except BaseException:
            self.window.release(*share)
            raise
        durable.add_done_callback(functools.partial(self.confirm, frame.seq, encoding, share))

    def authorize_publish(self, frame: frames.AnyPublish) -> None:
        """Enforce ``publish`` on the target stream, or on every subject."""
        if frame.stream is not None:
            self.authorize(ResourceKind.STREAM, frame.stream)
            return
        for subject in {published.subject for published in frame.messages}:
            self.authorize(ResourceKind.SUBJECT, subject)

    def authorize(self, kind: ResourceKind, name: str) -> None:
        """Enforce ``publish`` on a stream or subject, remembering what was allowed:
        the connection's principal cannot change (a credential that is revoked,
        regranted or expires ends the connection), so neither can the decision."""
        target = (kind, name)
        if target in self.allowed_publishes:
            return
        enforce(self.principal, Action.PUBLISH, self.namespace, Resource(kind, name))
        if len(self.allowed_publishes) >= MAX_REMEMBERED_DECISIONS:
            self.allowed_publishes.clear()
        self.allowed_publishes.add(target)

    def confirm(
        self,
        seq: int,
        encoding: Encoding,
        share: tuple[int, int],
        durable: asyncio.Future[list[Any]],
    ) -> None:
        """Queue a publish's ``confirm`` (or ``error``) once it is durable, without a
        task unless the send queue is full; the window share is given back only once
        the reply is queued, so replies cannot pile up, and on every other way out. A
        cancelled publish (a share of a publish over several streams was cancelled,
        or the loop is shutting down) is not answered."""
        handed_over = False
        try:
            if durable.cancelled():
                return
            reply = confirmation(seq, durable)
            if self.outbox.offer(reply, self.pinned_encoding or encoding):
                return
            task = asyncio.create_task(self.confirm_later(reply, encoding, share))
            handed_over = True
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        finally:
            if not handed_over:
                self.window.release(*share)

    async def confirm_later(
        self, reply: frames.ServerFrame, encoding: Encoding, share: tuple[int, int]
    ) -> None:
        """Queue a reply once the send queue has room, then give the share back."""
        try:
            await self.send(reply, encoding)
        finally:
            self.window.release(*share)

    async def subscribe(self, frame: frames.Subscribe, encoding: Encoding, size_bytes: int) -> None:
        """Attach a subscriber under the client's handle and start pushing."""
        if frame.sub in self.subscribers:
            raise errors.Conflict(f"sub {frame.sub!r} is already in use", sub=frame.sub)
        if len(self.subscribers) >= MAX_SUBSCRIPTIONS:
            raise errors.TooManyResources(
                f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection",
                limit="max_subscriptions",
                max_subscriptions=MAX_SUBSCRIPTIONS,
            )
        self.check_credit(frame.credit)
        resource = Resource(ResourceKind.SUBSCRIPTION, frame.subscription)
        enforce(self.principal, Action.CONSUME, self.namespace, resource)
        info = self.broker.subscription_info(self.namespace, frame.subscription)  # exists?
        ordered = info.config.mode == DeliveryMode.ORDERED
        subscriber = Subscriber(self, frame, self.pinned_encoding or encoding, ordered)
        self.subscribers[frame.sub] = subscriber
        if frame.seq is not None:  # queued before the first deliver can be
            result = frames.Result(seq=frame.seq, sub=frame.sub, mode=info.config.mode)
            await self.send(result, encoding)
        subscriber.start()

    def check_credit(self, credit: int) -> None:
        """Refuse a credit above ``ws_max_credit``."""
        if credit > self.settings.ws_max_credit:
            raise errors.LimitExceeded(
                f"credit {credit} exceeds {self.settings.ws_max_credit}",
                limit="ws_max_credit",
                ws_max_credit=self.settings.ws_max_credit,
            )

    def subscriber(self, handle: str) -> Subscriber:
        """The subscriber of a handle, or :class:`NotFound`."""
        subscriber = self.subscribers.get(handle)
        if subscriber is None:
            raise errors.NotFound(f"no subscription with sub {handle!r} on this connection")
        return subscriber

    async def credit(self, frame: frames.Credit, encoding: Encoding, size_bytes: int) -> None:
        """Raise a subscriber's credit."""
        subscriber = self.subscriber(frame.sub)
        self.check_credit(subscriber.credit + frame.credit)
        subscriber.add_credit(frame.credit)
        if frame.seq is not None:
            await self.send(frames.Result(seq=frame.seq, sub=frame.sub), encoding)

    async def unsubscribe(
        self, frame: frames.Unsubscribe, encoding: Encoding, size_bytes: int
    ) -> None:
        """Detach a subscriber; its unacked messages go back for redelivery."""
        subscriber = self.subscriber(frame.sub)
        del self.subscribers[frame.sub]
        await subscriber.stop()
        if frame.seq is not None:
            await self.send(frames.Result(seq=frame.seq, sub=frame.sub), encoding)

    async def settle(self, frame: frames.ReceiptFrame, encoding: Encoding, size_bytes: int) -> None:
        """Ack, nack, extend or term receipts; answer with ``result`` when the
        frame has a ``seq`` or when any receipt failed."""
        subscriber = self.subscriber(frame.sub)
        values = await self.apply(subscriber.subscription, frame)
        result = settle_result(subscriber, frame, values)
        if result is not None:
            await self.send(result, encoding)

    def ack_now(self, frame: frames.Ack, size_bytes: int) -> bool:
        """:meth:`settle` of an ``ack``, which never waits."""
        subscriber = self.subscriber(frame.sub)
        values = self.broker.ack_now(self.namespace, subscriber.subscription, frame.receipts)
        result = settle_result(subscriber, frame, values)
        if result is not None:
            self.outbox.offer(result, self.reply_encoding())
        return True

    async def apply(self, subscription: str, frame: frames.ReceiptFrame) -> list[Any]:
        """The broker call of an ack-family frame."""
        broker, namespace, receipts = self.broker, self.namespace, frame.receipts
        if isinstance(frame, frames.Ack):
            return await broker.ack(namespace, subscription, receipts)
        if isinstance(frame, frames.Nack):
            return await broker.nack(
                namespace, subscription, receipts, delay_ms=frame.delay_ms, error=frame.error
            )
        if isinstance(frame, frames.Extend):
            return await broker.extend(namespace, subscription, receipts, extend_ms=frame.extend_ms)
        return await broker.term(namespace, subscription, receipts, reason=frame.reason)

    async def ping(self, frame: frames.Ping, encoding: Encoding, size_bytes: int) -> None:
        """Answer ``pong``."""
        await self.send(frames.Pong(seq=frame.seq), encoding)


def confirmation(seq: int, durable: asyncio.Future[list[Any]]) -> frames.ServerFrame:
    """The ``confirm`` of a durable publish, or the ``error`` that stopped it."""
    error = durable.exception()
    if error is None:
        return frames.confirm_frame(seq, durable.result())
    if isinstance(error, errors.RelayError):
        return frames.error_frame(error, seq=seq)
    logger.error("publish failed", exc_info=error)
    return internal_error(seq)


def settle_result(
    subscriber: Subscriber, frame: frames.ReceiptFrame, values: list[Any]
) -> frames.Result | None:
    """Account for an ack-family op's outcomes; the ``result`` to answer with, if
    the frame has a ``seq`` or any receipt failed."""
    outcomes = [receipt_outcome(r, v) for r, v in zip(frame.receipts, values, strict=True)]
    subscriber.settled(frame, outcomes)
    if frame.seq is not None or not all(outcome.ok for outcome in outcomes):
        return frames.Result(seq=frame.seq, sub=frame.sub, results=outcomes)
    return None


def receipt_outcome(receipt: str, value: Any) -> frames.ReceiptOutcome:
    """One receipt's outcome from the broker's per-receipt value (``None``, a
    new deadline in ms, or a :class:`RelayError`)."""
    if isinstance(value, errors.RelayError):
        return frames.ReceiptOutcome(
            receipt=receipt, ok=False, code=value.code, message=value.message
        )
    deadline_ms = value if isinstance(value, int) else None
    return frames.ReceiptOutcome(receipt=receipt, ok=True, deadline_ms=deadline_ms)


def frame_data(message: dict[str, Any]) -> tuple[str | bytes, Encoding]:
    """A received ASGI message's data and encoding (text is JSON, binary msgpack)."""
    text = message.get("text")
    if text is not None:
        return text, "json"
    return message.get("bytes") or b"", "msgpack"


async def refuse(websocket: WebSocket, error: errors.RelayError, code: int) -> None:
    """Accept, explain in an ``error`` frame, and close with ``code``."""
    await websocket.accept()
    await websocket.send_text(frames.encode_text(frames.error_frame(error)))
    await websocket.close(code, error.code)


async def deny(websocket: WebSocket, error: errors.RelayError) -> None:
    """Refuse the handshake with the error's HTTP response (or a bare 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:
        await websocket.close(CLOSE_POLICY_VIOLATION)


async def handshake_principal(websocket: WebSocket, settings: Settings) -> Principal | None:
    """The caller, or ``None`` after refusing a bad credential or a foreign Origin."""
    try:
        principal = await authenticate_websocket(websocket)
        if not origin_allowed(websocket, settings.allowed_origins):
            raise errors.PermissionDenied("this Origin may not open WebSockets")
    except errors.RelayError as error:
        await deny(websocket, error)
        return None
    return principal


def admission_error(
    namespace: str,
    broker: Broker,
    settings: Settings,
    connections: OpenConnections,
    principal: Principal,
) -> tuple[errors.RelayError, int] | None:
    """Why a new connection may not be served (and its close code), if it may not."""
    if connections.persistent() >= settings.max_connections:
        error = errors.TooManyConnections(
            f"at most {settings.max_connections} connections",
            limit="max_connections",
            max_connections=settings.max_connections,
        )
        return error, CLOSE_TRY_AGAIN_LATER
    if not broker.has_namespace(namespace) or not can_see(principal, namespace):
        return errors.NamespaceNotFound(f"no namespace {namespace!r}"), CLOSE_POLICY_VIOLATION
    return None


def quota_refusal(websocket: WebSocket, namespace: str) -> tuple[errors.RelayError, int] | None:
    """The refusal of a connection over the namespace's ``max_connections``, if it is."""
    try:
        security_of(websocket).quotas.check_connection(namespace)
    except errors.QuotaExceeded as error:
        return error, CLOSE_TRY_AGAIN_LATER
    return None


def install(app: FastAPI, broker: Broker, settings: Settings) -> None:
    """Register the WebSocket route on ``app``."""
    connections = open_connections(app)

    async def websocket_endpoint(websocket: WebSocket, namespace: str) -> None:
        """One WebSocket connection (see ``docs/protocol.md``)."""
        principal = await handshake_principal(websocket, settings)
        if principal is None:
            return
        refusal = admission_error(namespace, broker, settings, connections, principal)
        if refusal is None:
            refusal = quota_refusal(websocket, namespace)
        if refusal is not None:
            await refuse(websocket, *refusal)
            return
        quotas = security_of(websocket).quotas
        connections.open("websocket")
        quotas.open_connection(namespace)
        try:
            await websocket.accept()
            await Connection(websocket, namespace, broker, settings, principal).serve()
        finally:
            quotas.close_connection(namespace)
            connections.close("websocket")

    app.add_api_websocket_route(ROUTE, websocket_endpoint)
