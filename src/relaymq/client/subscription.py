"""A subscription attached over the WebSocket, consumed as an async iterator.

Owns the client side of one ``subscribe``: the credit it asks for (the most
unacked messages the server may push, i.e. the prefetch), the buffer of
delivered messages not yet handed to the caller, and the waiting caller. No
task per message: the session's reader appends to the buffer and wakes the
one waiting ``__anext__``. It also decides how long its receipts may wait to
share a frame (``ack_linger_ms``), once the server has named its mode.

After a reconnect the buffer is dropped (the server released those messages
and delivers them again) and the session subscribes again by itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from relaymq import errors
from relaymq.client.errors import error_from_body
from relaymq.client.messages import Message, now_ms
from relaymq.protocol import frames

if TYPE_CHECKING:
    from relaymq.client.connection import Session

logger = logging.getLogger("relaymq.client")

DEFAULT_ACK_LINGER_MS = 1.0
# Modes in which a withheld ack holds back no other message (within the credit).
LINGERING_MODES = frozenset({"shared", "ordered"})


class Subscription(AsyncIterator[Message]):
    """Messages of one subscription: ``async for message in subscription``.

    Created by :meth:`relaymq.AsyncClient.subscribe`; attached to the server on
    first use (or by :meth:`open` / ``async with``). Iteration
    ends after :meth:`close`; it raises the tree's error if the subscription
    is deleted on the server or the client gives up reconnecting.
    """

    def __init__(
        self,
        session: Session,
        name: str,
        handle: str,
        *,
        prefetch: int,
        batch_messages: int,
        ack_linger_ms: float = DEFAULT_ACK_LINGER_MS,
    ) -> None:
        if prefetch < 1 or batch_messages < 1:
            raise errors.InvalidArgument("prefetch and batch_messages must be at least 1")
        if not 0 <= ack_linger_ms < math.inf:
            raise errors.InvalidArgument("ack_linger_ms must be a finite number, at least 0")
        self.session = session
        self.name = name
        self.handle = handle
        self.prefetch = prefetch
        self.batch_messages = batch_messages
        self.ack_linger_ms = ack_linger_ms
        # How long a receipt may wait for others, and how many may wait: set when the
        # server names the mode (until then, and for key_ordered, receipts go at once).
        self.settle_linger_seconds = 0.0
        self.settle_burst = 1
        self.credit = prefetch
        self.attached: asyncio.Future[Any] | None = None
        self.failed_receipts = 0
        self._buffer: collections.deque[Message] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Bound on the first wait: asyncio.get_running_loop() is a getpid() syscall on
        # Python 3.11, once per message otherwise.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._interrupted = False
        self._opened = False
        self._error: errors.RelayError | None = None
        self._closed = False

    @property
    def generation(self) -> int:
        """The generation of the session's current connection."""
        return self.session.generation

    @property
    def buffered(self) -> int:
        """Messages delivered and not yet handed to the caller."""
        return len(self._buffer)

    # -- the caller's side ----------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        """The next message; waits for one."""
        message = await self.receive()
        if message is None:
            raise StopAsyncIteration
        return message

    async def receive(self, timeout_seconds: float | None = None) -> Message | None:
        """The next message, or ``None`` once closed or interrupted, or after
        ``timeout_seconds`` without one. Many tasks may wait at once."""
        if not self._opened:
            await self.open()
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._closed or self._interrupted:
                return None
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                if timeout_seconds is None:  # no timer to arm and cancel per message
                    await waiter
                else:
                    async with asyncio.timeout(timeout_seconds):
                        await waiter
            except TimeoutError:
                return self._buffer.popleft() if self._buffer else None
            finally:
                if not waiter.done():
                    self._waiters.remove(waiter)
        return self._buffer.popleft()

    async def open(self) -> Subscription:
        """Attach to the server now (iteration does it by itself on first use)."""
        if not self._opened:
            self._opened = True
            try:
                await self.session.attach(self)
            except BaseException:
                self._opened = False
                raise
        return self

    def interrupt(self) -> None:
        """Make every waiting and later :meth:`receive` return ``None`` (the
        subscription stays attached; messages in hand can still be settled)."""
        self._interrupted = True
        self._wake(len(self._waiters))

    async def close(self) -> None:
        """Detach: messages delivered but not acked go back to the server for
        redelivery; a waiting iteration ends."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._wake(len(self._waiters))
        await self.session.detach(self)

    async def __aenter__(self) -> Subscription:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- settling (called by Message) -----------------------------------------------------------

    def settle_later(self, op: str, message: Message, option: Any) -> None:
        """Queue ``op`` on the message's receipt; sent batched with others."""
        self.session.settle_later(
            self.handle,
            op,
            message.receipt,
            option,
            self.settle_linger_seconds,
            self.settle_burst,
        )

    async def settle_confirmed(self, op: str, message: Message, option: Any) -> int | None:
        """Apply ``op`` now and wait for the outcome; the new deadline for ``extend``."""
        try:
            outcomes = await self.session.settle_now(self.handle, op, [message.receipt], option)
        except errors.ConnectionLost:
            raise errors.StaleReceipt(
                f"the connection was lost before {op} of {message.id!r} was confirmed; "
                "the server delivers the message again",
                receipt=message.receipt,
            ) from None
        outcome = outcomes[0]
        if not outcome.ok:
            body = {"code": outcome.code, "message": outcome.message, "details": {}}
            raise error_from_body(body)
        return outcome.deadline_ms

    # -- the session's side ---------------------------------------------------------------------

    def subscribe_frame(self, seq: int, limits: dict[str, int]) -> frames.Subscribe:
        """The ``subscribe`` frame, within the server's announced limits."""
        self.credit = min(self.prefetch, limits["max_credit"])
        return frames.Subscribe(
            sub=self.handle,
            subscription=self.name,
            credit=self.credit,
            batch=min(self.batch_messages, limits["max_fetch_messages"]),
            seq=seq,
        )

    def subscribe_done(self, future: asyncio.Future[Any]) -> None:
        """A ``subscribe`` was answered: a refusal ends the subscription."""
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self._linger_in(future.result().mode)
        elif not isinstance(error, errors.ConnectionLost):
            assert isinstance(error, errors.RelayError)
            self.failed(error)

    def _linger_in(self, mode: str | None) -> None:
        """Let receipts wait up to ``ack_linger_ms`` for others, holding back at most
        half the credit, unless the subscription is ``key_ordered``: there a key's
        next message waits for the ack, so receipts go at once."""
        if mode in LINGERING_MODES and self.ack_linger_ms > 0:
            self.settle_linger_seconds = self.ack_linger_ms / 1000
            self.settle_burst = max(1, self.credit // 2)
        else:
            self.settle_linger_seconds = 0.0
            self.settle_burst = 1

    def delivered(self, items: list[frames.DeliveredMessage], generation: int) -> None:
        """A ``deliver`` frame arrived."""
        if self._closed:
            return
        received_ms = now_ms()
        buffer = self._buffer
        for item in items:
            buffer.append(Message(item, self, generation, received_ms))
        self._wake(len(items))

    def connection_lost(self) -> None:
        """The connection dropped: buffered messages are stale (they come again)."""
        self._buffer.clear()
        self.attached = None

    def failed(self, error: errors.RelayError) -> None:
        """The subscription ended on the server, or the session gave up."""
        self._error = error
        self._wake(len(self._waiters))

    def receipts_failed(self, outcomes: list[frames.ReceiptOutcome]) -> None:
        """Receipts settled without ``confirm`` failed on the server (reported here)."""
        self.failed_receipts += len(outcomes)
        first = outcomes[0]
        logger.warning(
            "relaymq: %d receipt(s) of %s failed, e.g. %s: %s",
            len(outcomes),
            self.name,
            first.code,
            first.message,
        )

    def _wake(self, count: int) -> None:
        """Wake up to ``count`` waiting receivers."""
        while count > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1
