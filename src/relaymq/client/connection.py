"""The SDK's WebSocket session: one connection to a namespace, kept alive.

Owns the connection's life and everything that must survive its loss:

* the connection itself, a :class:`~relaymq.client.transport.WebSocketTransport`:
  it hands each server frame to :meth:`Session._received` as it is read (no
  reader task), which decodes it and gives it to its owner; the session notices
  the end of a connection by awaiting the transport's end;
* one writer task (sends queued frames; coalesces the ack-family receipts of
  many messages into one frame per subscription and op), plus a
  :class:`Keepalive` timer that queues a ``ping`` when nothing was sent for a
  while, so the server does not close the connection as idle;
* publishes not yet confirmed, by ``seq``, with their encoded frames: after a
  reconnect they are sent again, byte for byte, so the message ids are the
  same and the server's dedup window makes the resend idempotent;
* the attached subscriptions: after a reconnect each is subscribed again;
* reconnecting with exponential backoff and jitter under a
  :class:`~relaymq.client.retry.RetryPolicy`; when the policy is spent every
  waiting caller gets :class:`~relaymq.errors.ConnectionLost`.

Each connection has a ``generation`` number. Messages remember theirs, so a
receipt from a lost connection is refused at once (the server released it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from websockets.exceptions import ConnectionClosed

from relaymq import errors
from relaymq.client.errors import TRANSPORT_ERRORS, error_from_body, translate
from relaymq.client.http import segment
from relaymq.client.retry import RetryPolicy
from relaymq.client.settles import SettleRuns
from relaymq.client.transport import Message, WebSocketTransport
from relaymq.protocol import frames

if TYPE_CHECKING:
    from relaymq.client.subscription import Subscription

logger = logging.getLogger("relaymq.client")

DEFAULT_LIMITS = {
    "max_batch_messages": 1_000,
    "max_frame_bytes": 4 * 1024 * 1024,
    "max_credit": 10_000,
    "idle_timeout_ms": 120_000,
    "max_fetch_messages": 1_000,
}
MAX_RECEIPTS_PER_FRAME = 1_000
SPARSE_SETTLES = 32
PING_FRAME = frames.encode_binary(frames.Ping())
PERMANENT_ERRORS = (
    errors.NotFound,
    errors.Unauthenticated,
    errors.PermissionDenied,
    errors.InvalidArgument,
)
"""Errors that no reconnect attempt can cure."""


class PublishWaiter(Protocol):
    """Whoever waits for a publish frame's outcome (a batch of the publisher)."""

    def confirmed(self, results: list[Any]) -> None:
        """The frame is durable; one result per message, in order."""

    def failed(self, error: errors.RelayError) -> None:
        """The frame was refused, or the session gave up."""


class PendingPublish:
    """A publish frame sent but not yet confirmed."""

    __slots__ = ("data", "waiter")

    def __init__(self, data: bytes, waiter: PublishWaiter) -> None:
        self.data = data
        self.waiter = waiter


class Keepalive:
    """Queues a ``ping`` once nothing was sent for ``seconds``, with one timer per
    connection instead of one per writer wake (an ``asyncio.timeout`` around each
    wait costs a timer heap push and cancel per frame on the latency path): the
    writer only stamps the time it last sent, and the timer re-arms itself for
    the rest of the interval."""

    __slots__ = ("last_sent", "loop", "ping", "seconds", "timer")

    def __init__(self, seconds: float, ping: Callable[[], None]) -> None:
        self.seconds = seconds
        self.ping = ping
        self.loop = asyncio.get_running_loop()
        self.last_sent = self.loop.time()
        self.timer = self.loop.call_later(seconds, self.check)

    def sent(self) -> None:
        """The writer sent frames just now."""
        self.last_sent = self.loop.time()

    def check(self) -> None:
        """The timer: ping if the connection was silent long enough, then re-arm."""
        now = self.loop.time()
        if now - self.last_sent >= self.seconds:
            self.ping()
            self.last_sent = now  # the ping counts as sent: the next one is due a whole interval on
        remaining = self.seconds - (now - self.last_sent)
        self.timer = self.loop.call_later(max(remaining, 0.001), self.check)

    def stop(self) -> None:
        """Cancel the timer."""
        self.timer.cancel()


def websocket_url(base_url: str, namespace: str) -> str:
    """The WebSocket URL of a namespace on the server at ``base_url`` (http/https)."""
    scheme, rest = base_url.split("://", 1)
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}://{rest}/v1/namespaces/{segment(namespace)}/ws"


class Session:
    """One WebSocket session to a namespace, reconnected transparently."""

    def __init__(
        self,
        base_url: str,
        namespace: str,
        *,
        headers: dict[str, str],
        retry: RetryPolicy,
        open_timeout_seconds: float,
    ) -> None:
        self.url = websocket_url(base_url, namespace)
        self.headers = headers
        self.retry = retry
        self.open_timeout_seconds = open_timeout_seconds
        self.generation = 0
        self.limits: dict[str, int] = dict(DEFAULT_LIMITS)
        self.connection_id = ""
        self.reconnects = 0
        self._sequence = itertools.count(1)
        self._transport: WebSocketTransport | None = None
        self._connected = asyncio.Event()
        self._writer_waiter: asyncio.Future[None] | None = None  # set while the writer idles
        self._outbox: collections.deque[bytes] = collections.deque()
        self._before_write: list[Callable[[], None]] = []
        self._settles: dict[str, SettleRuns] = {}  # by subscription handle
        self._settle_timer: asyncio.TimerHandle | None = None  # wakes the writer for them
        self._settle_timer_linger = 0.0  # the linger it was armed with
        # Whether the last settle frames were small: only then is waiting worth it (when
        # acks come in hundreds per loop turn, they share frames without any wait).
        self._settles_sparse = True
        self._settles_burst = False  # a subscription's burst filled since the last flush
        self._loop: asyncio.AbstractEventLoop | None = None  # bound in start()
        self._publishes: dict[int, PendingPublish] = {}
        self._requests: dict[int, asyncio.Future[Any]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._failure: errors.RelayError | None = None
        self._closed = False

    # -- life ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is up now."""
        return self._connected.is_set() and self._transport is not None

    async def start(self) -> None:
        """Connect once (failing fast) and start keeping the connection alive."""
        if self._supervisor is not None:
            self.check_usable()
            return
        async with self._start_lock:
            if self._supervisor is not None:
                return
            self.check_usable()
            self._loop = asyncio.get_running_loop()
            transport = await self._open()
            self._resume(transport)
            self._supervisor = asyncio.create_task(self._supervise(transport), name="relaymq-ws")

    @property
    def ready(self) -> bool:
        """Whether the session is started and usable (then :meth:`start` does nothing)."""
        return self._supervisor is not None and self._failure is None and not self._closed

    def check_usable(self) -> None:
        """Raise the reason the session can no longer be used, if any."""
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise errors.ConnectionLost("the client is closed")

    async def close(self) -> None:
        """Close the connection; whoever still waits gets :class:`ConnectionLost`."""
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        self._cancel_settle_timer()
        if transport is not None:
            self._flush_settles()
            with contextlib.suppress(*TRANSPORT_ERRORS, ConnectionClosed):
                while self._outbox:
                    await transport.send(self._outbox.popleft())
                await transport.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._fail_everything(errors.ConnectionLost("the client is closed"))

    async def _supervise(self, transport: WebSocketTransport) -> None:
        """Serve a connection until it drops, then reconnect; forever, or until the
        policy is spent."""
        while True:
            await self._serve(transport)
            self._lost()
            if self._closed:
                return
            try:
                transport = await self._reconnect()
            except errors.RelayError as error:
                logger.error("relaymq: giving up reconnecting: %s", error)
                self._failure = error
                self._fail_everything(error)
                return
            self.reconnects += 1
            self._resume(transport)

    async def _serve(self, transport: WebSocketTransport) -> None:
        """Run the writer until the connection ends (the transport dispatches what
        it reads by itself) or the writer fails."""
        writer = asyncio.create_task(self._write_forever(transport))
        try:
            await asyncio.wait({writer, transport.closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            writer.cancel()
            await asyncio.wait({writer})
            with contextlib.suppress(*TRANSPORT_ERRORS, ConnectionClosed):
                await transport.close()
        if transport.closed.done():
            logger.debug("relaymq: connection ended: %r", transport.close_exception())

    async def _open(self) -> WebSocketTransport:
        """Connect and exchange ``hello`` / ``welcome``; the tree's error on failure."""
        try:
            transport = await WebSocketTransport.open(
                self.url, headers=self.headers, open_timeout_seconds=self.open_timeout_seconds
            )
        except (*TRANSPORT_ERRORS, ConnectionClosed) as exception:
            raise translate(exception) from exception
        try:
            await self._hello(transport)
        except BaseException:
            with contextlib.suppress(*TRANSPORT_ERRORS, ConnectionClosed):
                await transport.close()
            raise
        return transport

    async def _hello(self, transport: WebSocketTransport) -> None:
        """Pin msgpack and read the server's limits (the transport keeps what it reads
        until :meth:`_resume` starts the dispatch)."""
        try:
            # A server refusing the connection (no such namespace, too many connections)
            # sends an error frame and closes; the frame is still there to be read.
            with contextlib.suppress(ConnectionClosed):
                await transport.send(frames.encode_binary(frames.Hello(encoding="msgpack", seq=0)))
            async with asyncio.timeout(self.open_timeout_seconds):
                frame = frames.decode_server_frame(await transport.receive())
        except (*TRANSPORT_ERRORS, ConnectionClosed) as exception:
            raise translate(exception) from exception
        except (msgspec.DecodeError, msgspec.ValidationError) as exception:
            raise errors.ConnectionLost(f"bad welcome from the server: {exception}") from None
        if isinstance(frame, frames.Error):
            raise error_from_body(msgspec.structs.asdict(frame))
        if not isinstance(frame, frames.Welcome):
            raise errors.ConnectionLost(f"expected a welcome, got {type(frame).__name__}")
        self.limits = {**DEFAULT_LIMITS, **frame.limits}
        self.connection_id = frame.connection_id

    async def _reconnect(self) -> WebSocketTransport:
        """Connect again, pausing by the policy between attempts."""
        backoff = self.retry.start()
        while True:
            delay = backoff.next_delay_seconds()
            if delay is None:
                raise errors.ConnectionLost(
                    f"could not reconnect to {self.url} after {backoff.attempts} attempts"
                )
            await asyncio.sleep(delay)
            try:
                return await self._open()
            except PERMANENT_ERRORS:
                raise
            except errors.RelayError as error:
                logger.info("relaymq: reconnect attempt %d failed: %s", backoff.attempts, error)

    def _lost(self) -> None:
        """The connection dropped: everything bound to it is stale now."""
        self._connected.clear()
        self._transport = None
        self.generation += 1
        self._outbox.clear()
        self._settles.clear()
        self._cancel_settle_timer()
        lost = errors.ConnectionLost("the connection to the server was lost")
        for future in self._requests.values():
            if not future.done():
                future.set_exception(lost)
                future.exception()  # retrieved: nobody may be waiting any more
        self._requests.clear()
        for subscription in list(self._subscriptions.values()):
            subscription.connection_lost()
        if not self._closed:
            logger.warning("relaymq: connection lost; reconnecting")

    def _resume(self, transport: WebSocketTransport) -> None:
        """A fresh connection: subscribe again and resend every unconfirmed publish,
        all queued before anything else can be (no await in between); then frames
        the server sent after the welcome, and all later ones, go to
        :meth:`_received`."""
        self._transport = transport
        self._outbox.clear()
        for subscription in self._subscriptions.values():
            self._queue_subscribe(subscription)
        for seq in sorted(self._publishes):
            self._outbox.append(self._publishes[seq].data)
        self._connected.set()
        self._wake_writer()
        transport.start_dispatch(self._received)

    def _fail_everything(self, error: errors.RelayError) -> None:
        """The session is over: fail every waiter with ``error``."""
        self._transport = None
        self._run_before_write()  # publishers seal their open batches: they fail at once
        pending, self._publishes = self._publishes, {}
        for publish in pending.values():
            publish.waiter.failed(error)
        for future in self._requests.values():
            if not future.done():
                future.set_exception(error)
                future.exception()
        self._requests.clear()
        for subscription in list(self._subscriptions.values()):
            subscription.failed(error)
        self._connected.set()  # wake whoever waits for a connection: they will see the error

    async def wait_connected(self) -> None:
        """Wait until a connection is up (raise if the session is over)."""
        await self._connected.wait()
        self.check_usable()

    # -- writing ------------------------------------------------------------------------------

    def next_seq(self) -> int:
        """A fresh sequence number for a frame."""
        return next(self._sequence)

    def _post(self, data: bytes) -> None:
        """Queue a frame for the writer (dropped while disconnected: the reconnect
        re-creates what must survive)."""
        if self._transport is not None:  # connected (the transport is kept only then)
            if self._settles:  # receipts buffered before this frame go before it
                self._flush_settles()
            self._outbox.append(data)
            self._wake_writer()

    def before_write(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, when the writer next wakes and before it sends (or
        when the session ends). A publisher without linger seals its batch there: a
        burst of publishes in one callback still shares a frame, and the batch needs
        no loop iteration of its own before the writer's."""
        self._before_write.append(callback)
        self._wake_writer()

    def _run_before_write(self) -> None:
        """Run the callbacks :meth:`before_write` collected."""
        if not self._before_write:
            return
        callbacks, self._before_write = self._before_write, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a caller's bug must not end the connection
                logger.exception("relaymq: error in a callback before a write")

    def _wake_writer(self) -> None:
        """Wake the writer if it idles (it looks at the outbox and the buffered
        receipts itself, so a wake while it is busy needs no record)."""
        waiter = self._writer_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _write_forever(self, transport: WebSocketTransport) -> None:
        """Send queued frames in order, all of them per wake; a :class:`Keepalive`
        pings when nothing was sent for a third of the server's idle timeout."""
        idle_seconds = max(self.limits["idle_timeout_ms"] / 3000, 0.5)
        keepalive = Keepalive(idle_seconds, self._queue_ping)
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._outbox and not self._settles and not self._before_write:
                    waiter = self._writer_waiter = loop.create_future()
                    try:
                        await waiter
                    finally:
                        self._writer_waiter = None
                if self._before_write:
                    self._run_before_write()
                if self._settles:
                    self._flush_settles()
                try:
                    while self._outbox:
                        data = self._outbox.popleft()
                        if not transport.send_nowait(data):  # no coroutine per frame
                            await transport.send(data)
                except (*TRANSPORT_ERRORS, ConnectionClosed) as exception:
                    logger.debug("relaymq: send failed: %r", exception)
                    return
                keepalive.sent()
        finally:
            keepalive.stop()

    def _queue_ping(self) -> None:
        """The connection was silent: queue a ``ping`` (unless frames are queued
        already, which the writer is about to send anyway)."""
        if not self._outbox:
            self._outbox.append(PING_FRAME)
            self._wake_writer()

    def _flush_settles(self) -> None:
        """Turn the buffered receipts into frames: one per run of one op, in the
        order they were settled."""
        if not self._settles:
            return
        settles, self._settles = self._settles, {}
        self._cancel_settle_timer()  # the next receipt may wait a whole linger again
        flushed = sum(runs.count for runs in settles.values())
        self._settles_sparse = flushed < SPARSE_SETTLES and not self._settles_burst
        self._settles_burst = False
        for handle, pending in settles.items():
            for op, option, receipts in pending.runs:
                for start in range(0, len(receipts), MAX_RECEIPTS_PER_FRAME):
                    chunk = receipts[start : start + MAX_RECEIPTS_PER_FRAME]
                    frame = settle_frame(op, handle, chunk, option)
                    self._outbox.append(frames.encode_binary(frame))

    # -- publishing ---------------------------------------------------------------------------

    def send_publish(self, seq: int, data: bytes, waiter: PublishWaiter) -> None:
        """Send an encoded ``publish`` frame; ``waiter`` hears of its outcome, however
        many reconnects that takes."""
        self.check_usable()
        self._publishes[seq] = PendingPublish(data, waiter)
        self._post(data)

    @property
    def unconfirmed_frames(self) -> int:
        """Publish frames sent and not yet confirmed."""
        return len(self._publishes)

    # -- subscriptions ------------------------------------------------------------------------

    async def attach(self, subscription: Subscription) -> None:
        """Subscribe, and keep the subscription across reconnects until :meth:`detach`."""
        await self.start()
        if subscription.handle in self._subscriptions:
            raise errors.Conflict(f"handle {subscription.handle!r} is in use")
        self._subscriptions[subscription.handle] = subscription
        try:
            while True:
                await self.wait_connected()
                if subscription.attached is None:
                    self._queue_subscribe(subscription)
                assert subscription.attached is not None
                try:
                    await asyncio.shield(subscription.attached)
                    return
                except errors.ConnectionLost:
                    self.check_usable()
        except BaseException:
            self._subscriptions.pop(subscription.handle, None)
            raise

    def _queue_subscribe(self, subscription: Subscription) -> None:
        """Queue the ``subscribe`` frame; its result resolves ``subscription.attached``."""
        seq = self.next_seq()
        future = self.request_future(seq)
        future.add_done_callback(subscription.subscribe_done)
        subscription.attached = future
        frame = subscription.subscribe_frame(seq, self.limits)
        self._outbox.append(frames.encode_binary(frame))
        self._wake_writer()

    async def detach(self, subscription: Subscription) -> None:
        """Unsubscribe: the server redelivers what this subscription held unacked."""
        if self._subscriptions.pop(subscription.handle, None) is None:
            return
        if not self.connected or self._failure is not None or self._closed:
            return
        with contextlib.suppress(errors.RelayError):
            await self.request(frames.Unsubscribe(sub=subscription.handle, seq=self.next_seq()))

    def settle_later(
        self,
        handle: str,
        op: str,
        receipt: str,
        option: Any,
        linger_seconds: float = 0.0,
        burst: int = 1,
    ) -> None:
        """Buffer a receipt; the writer sends the buffered receipts in the order
        they were settled, as few frames as that allows.

        It sends them once ``burst`` receipts of the subscription wait, or
        ``linger_seconds`` after this one at the latest (sooner if it writes
        anything else first). The linger applies only while settles are sparse
        (the last flush carried fewer than ``SPARSE_SETTLES`` and was not forced
        by a burst): at a high rate the receipts of one loop turn fill a frame by
        themselves, and a wait would only hold back the server's credit."""
        runs = self._settles.get(handle)
        if runs is None:
            runs = self._settles[handle] = SettleRuns()
        waiting = runs.add(op, option, receipt)
        if waiting >= burst and linger_seconds > 0:
            self._settles_burst = True  # a small prefetch fills before 32 receipts wait
        if linger_seconds <= 0 or waiting >= burst or not self._settles_sparse:
            self._wake_writer()
        elif self._settle_timer is None or linger_seconds < self._settle_timer_linger:
            # A timer armed earlier with a linger no longer than this one fires in time.
            self._wake_writer_by(linger_seconds)

    def _wake_writer_by(self, delay_seconds: float) -> None:
        """Make sure the writer wakes within ``delay_seconds`` (one timer serves every
        lingering receipt; it is moved only to wake the writer sooner)."""
        assert self._loop is not None
        timer = self._settle_timer
        if timer is not None:
            if timer.when() <= self._loop.time() + delay_seconds:
                return
            timer.cancel()
        self._settle_timer = self._loop.call_later(delay_seconds, self._settle_timer_fired)
        self._settle_timer_linger = delay_seconds

    def _settle_timer_fired(self) -> None:
        self._settle_timer = None
        self._wake_writer()

    def _cancel_settle_timer(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None

    async def settle_now(
        self, handle: str, op: str, receipts: list[str], option: Any
    ) -> list[frames.ReceiptOutcome]:
        """Send an ack-family frame and wait for the server's per-receipt outcomes."""
        self._flush_settles()
        seq = self.next_seq()
        result = await self.request(settle_frame(op, handle, receipts, option, seq))
        return list(result.results)

    # -- requests -----------------------------------------------------------------------------

    def request_future(self, seq: int) -> asyncio.Future[Any]:
        """A future resolved by the ``result`` / ``pong`` (or ``error``) with ``seq``."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[seq] = future
        return future

    async def request(self, frame: frames.ClientFrame, timeout_seconds: float = 30) -> Any:
        """Send a frame carrying a ``seq`` and wait for its reply."""
        self.check_usable()
        seq = frame.seq  # type: ignore[union-attr]
        future = self.request_future(seq)
        self._post(frames.encode_binary(frame))
        if not self.connected:
            self._requests.pop(seq, None)
            raise errors.ConnectionLost("not connected to the server")
        try:
            async with asyncio.timeout(timeout_seconds):
                return await future
        except TimeoutError:
            raise errors.RequestTimeout(f"no answer to {type(frame).__name__} in time") from None
        finally:
            self._requests.pop(seq, None)

    # -- reading ------------------------------------------------------------------------------

    def _received(self, data: Message) -> None:
        """A message from the server, straight from the transport: decode and
        dispatch it."""
        try:
            if isinstance(data, bytes):  # msgpack, as the hello asked
                frame = frames.decode_server_binary(data)
            else:
                frame = frames.decode_server_frame(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exception:
            logger.warning("relaymq: undecodable frame from the server: %s", exception)
            return
        self._dispatch(frame)

    def _dispatch(self, frame: frames.ServerFrame) -> None:
        """Hand a frame to whoever waits for it."""
        if isinstance(frame, frames.Deliver):
            subscription = self._subscriptions.get(frame.sub)
            if subscription is not None:
                subscription.delivered(frame.messages, self.generation)
        elif isinstance(frame, frames.Confirm):
            pending = self._publishes.pop(frame.seq, None)
            if pending is not None:
                pending.waiter.confirmed(frame.results)
        elif isinstance(frame, frames.Error):
            self._dispatch_error(frame)
        elif isinstance(frame, frames.Result | frames.Pong):
            self._dispatch_reply(frame)

    def _dispatch_reply(self, frame: frames.Result | frames.Pong) -> None:
        """A ``result`` or ``pong``: resolve its request, or report failed receipts."""
        future = self._requests.pop(frame.seq, None) if frame.seq is not None else None
        if future is not None:
            if not future.done():
                future.set_result(frame)
            return
        if isinstance(frame, frames.Result):
            subscription = self._subscriptions.get(frame.sub or "")
            failures = [outcome for outcome in frame.results if not outcome.ok]
            if subscription is not None and failures:
                subscription.receipts_failed(failures)

    def _dispatch_error(self, frame: frames.Error) -> None:
        """An ``error``: fail the publish or request it names, or end its subscription."""
        error = error_from_body(msgspec.structs.asdict(frame))
        if frame.seq is not None and frame.seq in self._publishes:
            self._publish_refused(frame.seq, error)
            return
        future = self._requests.pop(frame.seq, None) if frame.seq is not None else None
        if future is not None:
            if not future.done():
                future.set_exception(error)
            return
        subscription = self._subscriptions.get(frame.sub or "")
        if subscription is not None:
            subscription.failed(error)
            return
        logger.warning("relaymq: error from the server: %s: %s", error.code, error.message)

    def _publish_refused(self, seq: int, error: errors.RelayError) -> None:
        """A publish frame failed: retry it later if the failure is transient."""
        if isinstance(error, errors.Unavailable):
            data = self._publishes[seq].data
            loop = asyncio.get_running_loop()
            delay_seconds = self.retry.delay_seconds(1)
            loop.call_later(delay_seconds, self._resend, seq, data)
            return
        self._publishes.pop(seq).waiter.failed(error)

    def _resend(self, seq: int, data: bytes) -> None:
        """Send a publish again if it is still unconfirmed."""
        if seq in self._publishes and not self._closed:
            self._post(data)


SETTLE_FRAMES: dict[str, Callable[..., frames.ClientFrame]] = {
    "ack": lambda handle, receipts, option, seq: frames.Ack(sub=handle, receipts=receipts, seq=seq),
    "nack": lambda handle, receipts, option, seq: frames.Nack(
        sub=handle, receipts=receipts, delay_ms=option[0], error=option[1], seq=seq
    ),
    "extend": lambda handle, receipts, option, seq: frames.Extend(
        sub=handle, receipts=receipts, extend_ms=option, seq=seq
    ),
    "term": lambda handle, receipts, option, seq: frames.Term(
        sub=handle, receipts=receipts, reason=option, seq=seq
    ),
}


def settle_frame(
    op: str, handle: str, receipts: list[str], option: Any, seq: int | None = None
) -> frames.ClientFrame:
    """The ack-family frame of ``op`` (``option``: nack ``(delay_ms, error)``,
    extend ``extend_ms``, term ``reason``)."""
    return SETTLE_FRAMES[op](handle, receipts, option, seq)
