"""The worker helper: run a handler on every message of a subscription.

Owns :class:`Worker`: ``concurrency`` long-lived runner tasks pull from one
:class:`~relaymq.client.subscription.Subscription` (no task per message),
and one lease keeper extends the lease of every message whose handler is
still running once half its lease has passed. A handler that returns gets its
message acked (unless it settled it itself); one that raises gets it nacked
with the subscription's backoff, and the exception is logged. After enough
failures the server dead-letters the message (``max_deliveries``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from relaymq import errors
from relaymq.client.messages import Message, now_ms
from relaymq.client.subscription import Subscription

logger = logging.getLogger("relaymq.client")

Handler = Callable[[Message], Awaitable[None]]
MIN_LEASE_CHECK_SECONDS = 0.05
MAX_LEASE_CHECK_SECONDS = 5.0
MAX_ERROR_CHARS = 1_000


class Worker:
    """Runs ``handler`` on each message of ``subscription``, ``concurrency`` at a time.

    ``await worker.run()`` works until :meth:`stop`: then it stops taking
    messages, lets running handlers finish, and closes the subscription, which
    hands any prefetched message back to the server. Counters: ``processed``,
    ``failed``.
    """

    def __init__(
        self,
        subscription: Subscription,
        handler: Handler,
        *,
        concurrency: int = 8,
        extend_leases: bool = True,
    ) -> None:
        if concurrency < 1:
            raise errors.InvalidArgument("concurrency must be at least 1")
        self.subscription = subscription
        self.handler = handler
        self.concurrency = concurrency
        self.extend_leases = extend_leases
        self.processed = 0
        self.failed = 0
        self._running: dict[Message, float] = {}  # message -> monotonic time of next extend

    async def run(self) -> None:
        """Process messages until :meth:`stop`; raises if the subscription fails.
        Cancelling ``run`` cancels running handlers (their messages come again)."""
        runners = [
            asyncio.create_task(self._run_one(), name=f"relaymq-worker-{index}")
            for index in range(self.concurrency)
        ]
        keeper = asyncio.create_task(self._keep_leases()) if self.extend_leases else None
        try:
            await asyncio.gather(*runners)
        finally:
            self.subscription.interrupt()
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
            if keeper is not None:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            await self.subscription.close()

    def stop(self) -> None:
        """Stop gracefully: take no new message; :meth:`run` returns once the
        running handlers are done."""
        self.subscription.interrupt()

    async def _run_one(self) -> None:
        """One runner: take a message, handle it, settle it; until stopped."""
        while True:
            message = await self.subscription.receive()
            if message is None:
                return
            await self._handle(message)

    async def _handle(self, message: Message) -> None:
        """Run the handler; ack on success, nack (backoff) on an exception."""
        self._running[message] = time.monotonic() + lease_check_seconds(message)
        try:
            await self.handler(message)
        except Exception as exception:
            self.failed += 1
            logger.exception(
                "relaymq: handler failed on message %s of %s", message.id, message.subscription
            )
            await self._settle(message, message.nack, error=describe(exception))
        else:
            self.processed += 1
            await self._settle(message, message.ack)
        finally:
            self._running.pop(message, None)

    @staticmethod
    async def _settle(
        message: Message, settle: Callable[..., Awaitable[None]], **options: str
    ) -> None:
        """Settle unless the handler did; a stale message is left to redelivery."""
        if message.settled:
            return
        try:
            await settle(**options)
        except errors.StaleReceipt:
            logger.info("relaymq: message %s was redelivered after a reconnect", message.id)

    async def _keep_leases(self) -> None:
        """Extend the lease of each running message once half of it has passed."""
        while True:
            now_seconds = time.monotonic()
            for message, due_seconds in list(self._running.items()):
                if due_seconds <= now_seconds and not message.settled and not message.stale:
                    await message.extend()
                    self._running[message] = now_seconds + lease_check_seconds(message)
            pause = min(
                [due - now_seconds for due in self._running.values()] or [MAX_LEASE_CHECK_SECONDS]
            )
            await asyncio.sleep(min(max(pause, MIN_LEASE_CHECK_SECONDS), MAX_LEASE_CHECK_SECONDS))


def lease_check_seconds(message: Message) -> float:
    """How long until the message's lease should be extended: half of what is left."""
    remaining_ms = max(message.lease_deadline_ms - now_ms(), 0)
    return max(remaining_ms / 2000, MIN_LEASE_CHECK_SECONDS)


def describe(exception: BaseException) -> str:
    """The exception as the message's ``last error`` (bounded)."""
    return f"{type(exception).__name__}: {exception}"[:MAX_ERROR_CHARS]
