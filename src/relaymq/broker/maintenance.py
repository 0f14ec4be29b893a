"""The broker's timers: lease expiry, cursor checkpoints, retention and dedup expiry.

One background task runs them all on a short tick, so there is no task per
subscription or per message. Durability rules kept here:

* cursor checkpoints are saved in one metadata transaction per tick; an ack is
  durable once its checkpoint is saved (until then a crash redelivers it, which
  at-least-once delivery allows);
* ``work_queue`` and ``interest`` streams are trimmed only below ack floors that
  are already durable, so a crash never loses a message it still owed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from relaymq.broker.models import RetentionPolicy
from relaymq.broker.settings import BrokerSettings
from relaymq.broker.stream import StreamHandle
from relaymq.broker.subscription import SubscriptionHandle
from relaymq.errors import RelayError
from relaymq.store.base import MetadataStore

logger = logging.getLogger("relaymq.broker")

TICK_MS = 25
REPORT_INTERVAL_MS = 10_000


class Maintenance:
    """Runs the periodic work of a broker until stopped."""

    def __init__(
        self,
        settings: BrokerSettings,
        metadata: MetadataStore,
        streams: Callable[[], Iterable[StreamHandle]],
        clock_ms: Callable[[], int],
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._streams = streams
        self._clock_ms = clock_ms
        self._task: asyncio.Task[None] | None = None
        self._next_checkpoint_ms = 0
        self._next_retention_ms = 0
        self._last_reported_ms: dict[str, int] = {}

    def start(self) -> None:
        """Start the background task."""
        self._task = asyncio.create_task(self._run(), name="relaymq-maintenance")

    async def stop(self) -> None:
        """Stop the task and save the final checkpoints."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.save_checkpoints()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A timer must outlive any one failure (a full disk, a bad segment):
                # log it and try again on the next tick.
                logger.exception("maintenance tick failed")
            await asyncio.sleep(TICK_MS / 1000)

    def _report(self, what: str, error: RelayError, now_ms: int) -> None:
        """Log a failure, at most once per ``REPORT_INTERVAL_MS`` for the same thing: a
        condition like a full disk fails on every tick until it clears."""
        if now_ms - self._last_reported_ms.get(what, -REPORT_INTERVAL_MS) < REPORT_INTERVAL_MS:
            return
        self._last_reported_ms[what] = now_ms
        logger.warning("%s failed (retrying): %s", what, error)

    def _subscriptions(self) -> list[SubscriptionHandle]:
        return [sub for stream in self._streams() for sub in stream.subscriptions.values()]

    async def tick(self) -> None:
        """Run whatever is due now."""
        now_ms = self._clock_ms()
        for subscription in self._subscriptions():
            try:
                await subscription.expire(now_ms)
            except RelayError as error:
                # One subscription's failure (its dead-letter stream is full) must not
                # stop lease expiry, checkpoints and retention for every other one.
                self._report(f"expiry of subscription {subscription.name}", error, now_ms)
        if now_ms >= self._next_checkpoint_ms:
            self._next_checkpoint_ms = now_ms + self._settings.checkpoint_interval_ms
            await self.save_checkpoints()
        if now_ms >= self._next_retention_ms:
            self._next_retention_ms = now_ms + self._settings.retention_interval_ms
            await self.enforce_retention(now_ms)

    async def save_checkpoints(self) -> None:
        """Save the checkpoints of every subscription that changed, in one transaction."""
        pending: list[tuple[SubscriptionHandle, list[tuple[str, bytes]], dict[int, int]]] = []
        for subscription in self._subscriptions():
            entries, floors = subscription.take_checkpoints()
            if entries:
                pending.append((subscription, entries, floors))
        if not pending:
            return
        try:
            await self._metadata.save_checkpoints(
                [entry for _, entries, _ in pending for entry in entries]
            )
        except BaseException:
            for subscription, _, _ in pending:
                subscription.mark_dirty()
            raise
        for subscription, _, floors in pending:
            subscription.note_durable(floors)

    async def enforce_retention(self, now_ms: int) -> None:
        """Apply every stream's limits, trim acked messages of work-queue and interest
        streams, and expire dedup entries."""
        for stream in list(self._streams()):
            stream.expire_dedup(now_ms)
            try:
                await self._retain(stream, now_ms)
            except RelayError as error:
                self._report(f"retention of stream {stream.name}", error, now_ms)

    async def _retain(self, stream: StreamHandle, now_ms: int) -> None:
        limits = stream.retention_limits()
        policy = stream.config.retention
        for partition, log in enumerate(stream.logs):
            await log.enforce_retention(limits, now_ms)
            if policy is RetentionPolicy.LIMITS:
                continue
            subscriptions = list(stream.subscriptions.values())
            if subscriptions:
                floor = min(sub.durable_floor(partition) for sub in subscriptions)
            elif policy is RetentionPolicy.INTEREST:
                floor = log.next_offset  # nobody is interested: nothing to keep
            else:
                continue  # a work queue keeps its messages until a consumer comes
            if floor > log.first_offset:
                await log.trim(floor)
