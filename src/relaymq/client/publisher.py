"""The batching publisher: linger, batch, pipeline, confirm, with backpressure.

Owns the producer side of the WebSocket session, the way Kafka producers do
it: :meth:`Publisher.publish` adds a message to the open batch and returns a
future at once; the batch is sent as **one** ``publish`` frame when it holds
``max_batch_messages`` messages (or ``max_batch_bytes``), or ``linger_ms``
after its first message. Many batches are in flight at once (pipelining); the
``confirm`` of each resolves its futures with where the messages landed.

Memory is bounded: at ``max_unconfirmed_messages`` unconfirmed messages,
``publish`` waits until confirms come back (backpressure). Every message gets
an id if it has none, so a resend after a reconnect is deduplicated.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relaymq import errors
from relaymq.client.models import PublishResult
from relaymq.protocol import frames

if TYPE_CHECKING:
    from relaymq.client.connection import Session

PublishFuture = asyncio.Future[PublishResult]


class MessageIds:
    """Unique message ids, cheap to make: a random 64-bit prefix per publisher and a
    counter (unique across clients, ordered within one)."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        # A fresh id per call, formatted in C: no Python call per message.
        ids = map(f"{self.prefix}-{{:x}}".format, itertools.count())
        self.next: Callable[[], str] = ids.__next__


class Batch:
    """The messages of one ``publish`` frame and the futures waiting for them."""

    __slots__ = ("futures", "messages", "publisher", "size_bytes")

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.messages: list[frames.BinaryMessage] = []
        self.futures: list[PublishFuture] = []
        self.size_bytes = 0

    def confirmed(self, results: list[Any]) -> None:
        """Resolve every future with its message's result."""
        for future, result in zip(self.futures, results, strict=False):
            if not future.done():
                future.set_result(result)
        self.publisher.settled(len(self.futures))

    def failed(self, error: errors.RelayError) -> None:
        """Fail every future with ``error``."""
        for future in self.futures:
            if not future.done():
                future.set_exception(error)
        self.publisher.settled(len(self.futures), error)


class Publisher:
    """Publishes messages in batches over the session; see the module docstring.

    ``stream`` sends every message to that stream (it must capture the
    subjects); without it each message goes to the stream capturing its
    subject. Use as ``async with client.publisher(...) as publisher:`` so
    that leaving the block waits for every confirm.
    """

    def __init__(
        self,
        session: Session,
        *,
        linger_ms: float = 5,
        max_batch_messages: int = 1_000,
        max_batch_bytes: int = 1024 * 1024,
        max_unconfirmed_messages: int = 10_000,
        stream: str | None = None,
    ) -> None:
        if linger_ms < 0 or max_batch_messages < 1 or max_batch_bytes < 1:
            raise errors.InvalidArgument("need linger_ms >= 0 and positive batch limits")
        if max_unconfirmed_messages < max_batch_messages:
            max_unconfirmed_messages = max_batch_messages
        self.session = session
        self.linger_ms = linger_ms
        self.max_batch_messages = max_batch_messages
        self.max_batch_bytes = max_batch_bytes
        self.max_unconfirmed_messages = max_unconfirmed_messages
        self.stream = stream
        self.unconfirmed = 0
        self.published = 0
        self.failures = 0
        self._ids = MessageIds()
        self._batch = Batch(self)
        self._batch_limit = max_batch_messages  # capped by the server's limit at each batch
        self._timer: asyncio.TimerHandle | None = None  # the linger, when linger_ms > 0
        self._seal_requested = False  # linger_ms == 0: the session's writer seals the batch
        # Bound on the first publish: asyncio.get_running_loop() is a getpid() syscall
        # on Python 3.11, once per message otherwise.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Made by whoever waits, and set (then dropped) by the settle that ends the wait:
        # no event to set and clear per batch while nobody waits.
        self._room: asyncio.Event | None = None  # publish() waits for room
        self._idle: asyncio.Event | None = None  # flush() waits for every confirm
        self._last_error: errors.RelayError | None = None

    async def publish(
        self,
        subject: str,
        payload: bytes | str = b"",
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        id: str | None = None,
        deliver_at_ms: int | None = None,
        priority: int = 0,
        expires_at_ms: int | None = None,
    ) -> PublishFuture:
        """Queue a message; returns a future resolved with its
        :class:`~relaymq.client.models.PublishResult` once durable (or failed with the
        tree's error). Waits first while too many messages are unconfirmed."""
        while self.unconfirmed >= self.max_unconfirmed_messages:
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()
        if not self.session.ready:  # one attribute test per message instead of an await
            await self.session.start()
        if isinstance(payload, str):
            payload = payload.encode()
        message = frames.BinaryMessage(
            subject=subject,
            payload=payload,
            key=key,
            headers=headers or {},
            id=id or self._ids.next(),
            deliver_at_ms=deliver_at_ms,
            priority=priority,
            expires_at_ms=expires_at_ms,
        )
        return self._add(message)

    def _add(self, message: frames.BinaryMessage) -> PublishFuture:
        """Add to the open batch; send it when full, else make sure it lingers."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: PublishFuture = loop.create_future()
        batch = self._batch
        if not batch.messages:  # a new batch: the server's limit is known by now
            self._batch_limit = min(
                self.max_batch_messages, self.session.limits["max_batch_messages"]
            )
        batch.messages.append(message)
        batch.futures.append(future)
        batch.size_bytes += len(message.payload) + len(message.subject) + 64
        self.unconfirmed += 1
        if len(batch.messages) >= self._batch_limit or batch.size_bytes >= self.max_batch_bytes:
            self.send_batch()
        elif self.linger_ms == 0:
            if not self._seal_requested:
                # Sealed when the writer wakes, after the current callback: a burst of
                # publishes shares a frame, and a lone one costs no extra loop iteration.
                self._seal_requested = True
                self.session.before_write(self.send_batch)
        elif self._timer is None:
            self._timer = loop.call_later(self.linger_ms / 1000, self.send_batch)
        return future

    def send_batch(self) -> None:
        """Send the open batch now (no-op when empty)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._seal_requested = False
        batch = self._batch
        if not batch.messages:
            return
        self._batch = Batch(self)
        seq = self.session.next_seq()
        frame = frames.BinaryPublish(seq=seq, messages=batch.messages, stream=self.stream)
        try:
            self.session.send_publish(seq, frames.encode_binary(frame), batch)
        except errors.RelayError as error:
            batch.failed(error)

    def settled(self, messages: int, error: errors.RelayError | None = None) -> None:
        """A batch was confirmed or failed: make room, wake waiters."""
        self.unconfirmed -= messages
        if error is None:
            self.published += messages
        else:
            self.failures += messages
            self._last_error = error
        if self._room is not None and self.unconfirmed < self.max_unconfirmed_messages:
            self._room.set()
            self._room = None
        if self._idle is not None and self.unconfirmed == 0:
            self._idle.set()
            self._idle = None

    async def flush(self) -> None:
        """Send the open batch and wait until every message is confirmed or failed.
        Raises the last failure since the previous flush, if any."""
        self.send_batch()
        if self.unconfirmed:
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()
        error, self._last_error = self._last_error, None
        if error is not None:
            raise error

    async def close(self) -> None:
        """Flush (see :meth:`flush`)."""
        await self.flush()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            await self.flush()
        else:
            self.send_batch()
