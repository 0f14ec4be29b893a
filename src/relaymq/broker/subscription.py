"""A live subscription: the core dispatcher run against the stream's partition logs.

:class:`SubscriptionHandle` feeds each partition cursor from its log (read-ahead
on demand), long-polls for fetchers, applies acks, and tracks which cursor
checkpoints changed since the last save. Dead letters are handed to a sink the
broker provides, which appends them durably before the cursor forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from relaymq.broker.models import SubscriptionConfig, SubscriptionInfo
from relaymq.broker.settings import BrokerSettings
from relaymq.broker.signals import ChangeSignal
from relaymq.broker.stream import StreamHandle
from relaymq.core.cursor import (
    BackoffPolicy,
    CursorCheckpoint,
    CursorPolicy,
    DeadLetter,
    Delivery,
    PartitionCursor,
)
from relaymq.core.dispatch import SubscriptionDispatcher
from relaymq.core.message import Message
from relaymq.core.subjects import SubjectFilter
from relaymq.errors import RelayError

DeadLetterSink = Callable[["SubscriptionHandle", list[DeadLetter]], Awaitable[None]]
Result = TypeVar("Result")

# One read from a log never asks for more than this many bytes.
READ_BATCH_BYTES = 4 * 1024 * 1024
# Read-ahead: a fill reads at least this many messages when a partition has more.
READ_AHEAD_MESSAGES = 512
# A caught-up cursor takes new messages straight from an append while it holds fewer
# than this many ready ones; beyond that, fetches read them from the log on demand.
TAIL_OFFER_MESSAGES = 2_048


def cursor_policy(config: SubscriptionConfig, settings: BrokerSettings) -> CursorPolicy:
    """The core policy for a subscription's configuration."""
    backoff = config.backoff
    return CursorPolicy(
        mode=config.mode,
        ack_timeout_ms=config.ack_timeout_ms,
        max_deliveries=config.max_deliveries,
        backoff=BackoffPolicy(
            initial_ms=backoff.initial_ms,
            max_ms=backoff.max_ms,
            multiplier=backoff.multiplier,
            jitter=backoff.jitter,
        ),
        window_messages=settings.window_messages,
    )


def checkpoint_key(namespace: str, subscription: str, partition: int) -> str:
    """The metadata-store key of one partition cursor's checkpoint."""
    return f"{namespace}/{subscription}/{partition}"


class SubscriptionHandle:
    """The running state of one subscription."""

    def __init__(
        self,
        config: SubscriptionConfig,
        created_ms: int,
        stream: StreamHandle,
        start_offsets: dict[int, int],
        checkpoints: dict[int, CursorCheckpoint],
        settings: BrokerSettings,
        lease_nonce: int,
        dead_letter_sink: DeadLetterSink,
    ) -> None:
        self.config = config
        self.created_ms = created_ms
        self.stream = stream
        self.settings = settings
        self.signal = ChangeSignal()
        self.delivered_messages = 0
        self.delivered_bytes = 0
        self.nacked = 0
        self._dead_letter_sink = dead_letter_sink
        self._fill_lock = asyncio.Lock()
        self._dirty = True
        self._durable_floors: dict[int, int] = {}
        self._lease_nonce = lease_nonce
        self._closed_reason: RelayError | None = None
        self._closed = False
        self.dispatcher = self._build_dispatcher(start_offsets, checkpoints)

    def _build_dispatcher(
        self, start_offsets: dict[int, int], checkpoints: dict[int, CursorCheckpoint]
    ) -> SubscriptionDispatcher:
        policy = cursor_policy(self.config, self.settings)
        subject_filter = (
            None if self.config.filter_subject == ">" else SubjectFilter(self.config.filter_subject)
        )
        rng = random.Random(self._lease_nonce)
        cursors = {}
        for partition in range(self.stream.config.partitions):
            checkpoint = checkpoints.get(partition)
            cursors[partition] = PartitionCursor(
                partition,
                policy,
                start_offsets.get(partition, 0),
                self._lease_nonce,
                rng,
                subject_filter=subject_filter,
                checkpoint=checkpoint,
            )
            if checkpoint is not None:
                self._durable_floors[partition] = checkpoint.ack_floor
        consumer_timeout_ms = max(self.settings.consumer_timeout_ms, 2 * self.config.ack_timeout_ms)
        return SubscriptionDispatcher(policy, cursors, consumer_timeout_ms)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def namespace(self) -> str:
        return self.stream.namespace

    def reconfigure(self, config: SubscriptionConfig) -> None:
        """Apply new timeouts, retry and dead-letter settings; leases in flight keep theirs."""
        self.config = config
        self.dispatcher.update_policy(cursor_policy(config, self.settings))

    def close(self, reason: RelayError | None) -> None:
        """Stop serving: waiting fetchers wake up and get ``reason`` raised (or, with
        ``None``, an empty result, as at shutdown)."""
        self._closed_reason = reason
        self._closed = True
        self.signal.notify()

    def on_append(self, partition: int, messages: list[Message]) -> bool:
        """Messages were appended (durable, or with ``early_delivery`` just written):
        hand them straight to a caught-up cursor (no store read, no decode), and wake
        fetchers waiting for messages, unless a fetcher already read them (waking the
        others again would only make them fetch nothing). Whether the cursor took them."""
        cursor = self.dispatcher.cursors[partition]
        read_offset = cursor.read_offset
        if read_offset > messages[-1].offset:
            return False
        offered = (
            read_offset == messages[0].offset
            and cursor.available() < TAIL_OFFER_MESSAGES
            and cursor.room() >= len(messages)
            and not self._fill_lock.locked()
        )
        if offered:
            cursor.offer(messages)
        self.signal.notify()
        return offered

    # -- consuming ---------------------------------------------------------------------

    async def fetch(
        self,
        consumer_id: str,
        max_messages: int,
        wait_ms: int,
        max_in_flight: int | None,
        clock_ms: Callable[[], int],
    ) -> list[Delivery]:
        """Lease up to ``max_messages`` to ``consumer_id``, waiting up to ``wait_ms`` for one."""
        now_ms = clock_ms()
        deadline_ms = now_ms + wait_ms
        dispatcher = self.dispatcher
        dispatcher.register(consumer_id, now_ms, max_in_flight)
        while True:
            if self._closed:
                if self._closed_reason is not None:
                    raise self._closed_reason
                return []
            version = self.signal.version  # a notification during the fill is kept
            if self._wants_fill(max_messages):
                await self.fill(max_messages)
                now_ms = clock_ms()  # the read may have waited; without one now_ms is current
            next_wakeup_ms = dispatcher.next_wakeup_ms()
            if next_wakeup_ms is not None and next_wakeup_ms <= now_ms:
                # A dead letter that could not be stored is retried and reported by maintenance.
                with contextlib.suppress(RelayError):
                    await self.expire(now_ms)
            deliveries = dispatcher.take(consumer_id, max_messages, now_ms)
            if deliveries:
                self._count_deliveries(deliveries)
                return deliveries
            if now_ms >= deadline_ms:
                return deliveries
            wake_ms = deadline_ms
            next_wakeup_ms = dispatcher.next_wakeup_ms()
            if next_wakeup_ms is not None:
                wake_ms = min(wake_ms, max(next_wakeup_ms, now_ms + 1))
            await self.signal.wait((wake_ms - now_ms) / 1000, since=version)
            now_ms = clock_ms()
            dispatcher.register(consumer_id, now_ms, max_in_flight)

    def _count_deliveries(self, deliveries: list[Delivery]) -> None:
        self._dirty = True
        self.delivered_messages += len(deliveries)
        payload_bytes = 0
        for delivery in deliveries:  # a plain loop: no list built, no comprehension call
            payload_bytes += len(delivery.message.payload)
        self.delivered_bytes += payload_bytes

    def _unread(self, partition: int, cursor: PartitionCursor) -> bool:
        """Whether the partition's log has readable messages the cursor has not read."""
        return cursor.read_offset < self.stream.logs[partition].next_offset

    def has_unread(self, partition: int) -> bool:
        """Whether ``partition``'s log has readable messages this subscription has not read."""
        return self._unread(partition, self.dispatcher.cursors[partition])

    def _wants_fill(self, wanted: int) -> bool:
        """Whether :meth:`fill` would read anything: checked without its lock and a
        coroutine per partition, on the path of every caught-up fetch (a plain loop:
        ``any()`` over a generator costs more at a few partitions; a caught-up cursor,
        the common case, is told by its offsets alone)."""
        logs = self.stream.logs
        for partition, cursor in self.dispatcher.cursors.items():
            if cursor.read_offset < logs[partition].next_offset and cursor.available() < wanted:
                return True
        return False

    def _has_deliverable(self) -> bool:
        """Whether a waiting fetcher could get something now: a held message ready for
        delivery, or readable ones no cursor has read yet."""
        logs = self.stream.logs
        for partition, cursor in self.dispatcher.cursors.items():
            if cursor.available() > 0 or cursor.read_offset < logs[partition].next_offset:
                return True
        return False

    async def fill(self, wanted: int) -> None:
        """Read ahead from each partition log into its cursor, as far as demand and room allow."""
        async with self._fill_lock:
            for partition, cursor in self.dispatcher.cursors.items():
                await self._fill_partition(partition, cursor, wanted)

    async def _fill_partition(self, partition: int, cursor: PartitionCursor, wanted: int) -> None:
        if cursor.available() >= wanted or not self._unread(partition, cursor):
            return
        log = self.stream.logs[partition]
        start = cursor.read_offset
        room = cursor.room()
        if room <= 0:
            return
        messages = await log.read(
            start, min(room, max(wanted, READ_AHEAD_MESSAGES)), READ_BATCH_BYTES
        )
        if cursor.read_offset != start:
            return  # a seek or purge moved the cursor while we read
        if not messages:
            if log.first_offset > start:
                cursor.skip_to(log.first_offset)
            return
        if messages[0].offset > start:
            cursor.skip_to(messages[0].offset)  # retention removed what the cursor had not read
        cursor.offer(messages)

    async def settle(
        self,
        receipts: Sequence[str],
        apply: Callable[[str, int], Result],
        clock_ms: Callable[[], int],
        *,
        only_frees: bool = False,
    ) -> list[Result | RelayError]:
        """Apply ``apply(receipt, now_ms)`` to each receipt, collecting errors per receipt.

        Dead letters returned by ``apply`` are appended to the dead-letter stream
        before this returns. ``only_frees``: ``apply`` can only end leases (an ack),
        which matters to waiting fetchers only when something is deliverable; they
        are then left asleep otherwise, where a caught-up consumer's every ack would
        wake its fetch for nothing.
        """
        outcomes, dead_letters = self._apply(receipts, apply, clock_ms)
        if dead_letters:
            await self._dead_letter_sink(self, dead_letters)
        if not only_frees or dead_letters or self._has_deliverable():
            self.signal.notify()
        return outcomes

    def settle_frees(
        self,
        receipts: Sequence[str],
        apply: Callable[[str, int], None],
        clock_ms: Callable[[], int],
    ) -> list[RelayError | None]:
        """:meth:`settle` with ``only_frees`` as a plain call: an ``apply`` that only
        ends leases (an ack) never dead-letters, so nothing has to wait."""
        outcomes, _ = self._apply(receipts, apply, clock_ms)
        if self._has_deliverable():
            self.signal.notify()
        return outcomes

    def _apply(
        self,
        receipts: Sequence[str],
        apply: Callable[[str, int], Result],
        clock_ms: Callable[[], int],
    ) -> tuple[list[Result | RelayError], list[DeadLetter]]:
        """Apply ``apply(receipt, now_ms)`` to each receipt: the outcomes, and the
        dead letters among them."""
        now_ms = clock_ms()
        outcomes: list[Result | RelayError] = []
        dead_letters: list[DeadLetter] = []
        for receipt in receipts:
            try:
                outcome = apply(receipt, now_ms)
            except RelayError as error:
                outcomes.append(error)
                continue
            if isinstance(outcome, DeadLetter):
                dead_letters.append(outcome)
            outcomes.append(outcome)
        self._dirty = True
        return outcomes, dead_letters

    async def expire(self, now_ms: int) -> None:
        """Release expired leases and dead-letter what must be, if anything is due."""
        next_wakeup_ms = self.dispatcher.next_wakeup_ms()
        if next_wakeup_ms is None or next_wakeup_ms > now_ms:
            return
        dead_letters = self.dispatcher.expire(now_ms)
        self._dirty = True
        if dead_letters:
            await self._dead_letter_sink(self, dead_letters)
        self.signal.notify()

    def release_consumer(self, consumer_id: str, now_ms: int) -> None:
        """A consumer went away: what it held is redelivered now."""
        self.dispatcher.unregister(consumer_id, now_ms)
        self._dirty = True
        self.signal.notify()

    def seek(self, offsets: dict[int, int]) -> None:
        """Move partition cursors (ordered mode) so delivery restarts at the given offsets."""
        for partition, offset in offsets.items():
            self.dispatcher.cursors[partition].seek(offset)
        self._dirty = True
        self.signal.notify()

    def skip_all(self) -> None:
        """Mark everything currently in the stream as done (purge)."""
        for partition, cursor in self.dispatcher.cursors.items():
            cursor.skip_to(self.stream.logs[partition].next_offset)
        self._dirty = True
        self.signal.notify()

    # -- durability --------------------------------------------------------------------

    def take_checkpoints(self) -> tuple[list[tuple[str, bytes]], dict[int, int]]:
        """Encoded checkpoints of every partition, and their ack floors, if anything
        changed since the last call, or the last call had to leave out offsets that
        were not durable yet (early delivery); else two empty values."""
        if not self._dirty:
            return [], {}
        self._dirty = False
        checkpoints = {}
        for partition, checkpoint in self.dispatcher.checkpoints().items():
            # Early deliveries can be acked before they are durable; what is said of
            # them waits (the next call saves again) until the log has them on disk,
            # which after a failed append (a stopped partition) is never: saved at
            # every interval until the restart then.
            durable = checkpoint.below(self.stream.logs[partition].next_offset)
            self._dirty = self._dirty or durable is not checkpoint
            checkpoints[partition] = durable
        entries = [
            (checkpoint_key(self.namespace, self.name, partition), checkpoint.encode())
            for partition, checkpoint in checkpoints.items()
        ]
        floors = {partition: checkpoint.ack_floor for partition, checkpoint in checkpoints.items()}
        return entries, floors

    def mark_dirty(self) -> None:
        """Force the next :meth:`take_checkpoints` to save (after a failed save)."""
        self._dirty = True

    def note_durable(self, checkpoints: dict[int, int]) -> None:
        """Record the ack floors that are now durable (they bound work-queue trimming)."""
        self._durable_floors.update(checkpoints)

    def durable_floor(self, partition: int) -> int:
        """Every offset below this is acked, and that fact is durable."""
        return self._durable_floors.get(partition, 0)

    # -- information ---------------------------------------------------------------------

    def info(self, now_ms: int) -> SubscriptionInfo:
        """Counters, lag and consumers of the subscription."""
        stats = self.dispatcher.stats()
        unread = 0
        for partition, cursor in self.dispatcher.cursors.items():
            unread += max(0, self.stream.logs[partition].next_offset - cursor.read_offset)
        oldest_ms = stats.oldest_unacked_timestamp_ms
        return SubscriptionInfo(
            namespace=self.namespace,
            config=self.config,
            created_ms=self.created_ms,
            pending=stats.pending + unread,
            in_flight=stats.in_flight,
            acked=stats.acked_total,
            redelivered=stats.redelivered_total,
            dead_lettered=stats.dead_lettered_total,
            lag_messages=stats.pending + stats.in_flight + unread,
            lag_seconds=0.0 if oldest_ms is None else max(0.0, (now_ms - oldest_ms) / 1000),
            consumers=len(self.dispatcher.consumers()),
        )
