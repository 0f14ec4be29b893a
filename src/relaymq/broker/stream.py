"""A live stream: its partition logs, the choice of partition, idempotent publish,
per-message limits and schema, and the wake-up of its subscriptions.

The broker owns one :class:`StreamHandle` per stream. Appends go through
:meth:`StreamHandle.start_append`, which writes at once and whose future resolves
only once the store made the messages durable (as its fsync policy promises).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import fastjsonschema
import msgspec

from relaymq.broker.dedup import DedupWindow
from relaymq.broker.models import (
    DiscardPolicy,
    PartitionInfo,
    PublishResult,
    StreamConfig,
    StreamInfo,
)
from relaymq.broker.settings import BrokerSettings
from relaymq.broker.signals import ChangeSignal
from relaymq.broker.tasks import start_task
from relaymq.core.message import Message
from relaymq.core.partitioning import Partitioner
from relaymq.core.subjects import subject_matches
from relaymq.errors import (
    HeadersTooLarge,
    InvalidConfig,
    PayloadTooLarge,
    SchemaViolation,
    StorageFailed,
    StorageFull,
)
from relaymq.store.base import PartitionLog, RetentionLimits

if TYPE_CHECKING:
    from relaymq.broker.subscription import SubscriptionHandle

logger = logging.getLogger("relaymq.broker")

# How far back a restart re-reads a partition to rebuild the dedup window.
DEDUP_REBUILD_BATCH = 1_000

# One partition's share of an append call: the messages' indexes in the call, and the
# messages, in order.
_PartitionBatch = tuple[list[int], list[Message]]


def compile_schema(schema: dict[str, Any] | None) -> Callable[[Any], Any] | None:
    """A validator for a stream's JSON Schema, or ``None``; a bad schema: InvalidConfig."""
    if schema is None:
        return None
    try:
        return fastjsonschema.compile(schema)
    except (fastjsonschema.JsonSchemaDefinitionException, TypeError, ValueError) as error:
        raise InvalidConfig(f"invalid JSON Schema: {error}", field="json_schema") from None


class _AppendJoin:
    """The partitions of one append call still being made durable, and the first
    error among them; ``finished`` hears once the last one is done."""

    __slots__ = ("error", "finished", "remaining")

    def __init__(self, partitions: int, finished: Callable[[BaseException | None], None]) -> None:
        self.remaining = partitions
        self.error: BaseException | None = None
        self.finished = finished

    def done(self, error: BaseException | None) -> None:
        """One partition is done (``None``: durable)."""
        # A stopped partition's error wins: unlike a retryable one, it says not to retry.
        if error is not None and (self.error is None or isinstance(error, StorageFailed)):
            self.error = error
        self.remaining -= 1
        if self.remaining == 0:
            self.finished(self.error)


class _PartitionAppend:
    """One partition's share of an append call, from its write until the store
    tells its outcome: it is the ``done`` given to ``start_append`` (``self.done``
    is the call's). An object with slots, not a closure: after a long fsync stall
    thousands of them wait, and each young garbage collection walks one object
    instead of a function, its closure and a cell per variable
    (``docs/performance.md``, finding 48)."""

    __slots__ = (
        "appended",
        "done",
        "handed_early",
        "indexes",
        "now_ms",
        "partition",
        "results",
        "stream",
        "told",
    )

    def __init__(
        self,
        stream: StreamHandle,
        partition: int,
        batch: _PartitionBatch,
        results: list[PublishResult | None],
        now_ms: int,
        done: Callable[[BaseException | None], None],
    ) -> None:
        self.stream = stream
        self.partition = partition
        self.indexes, self.appended = batch
        self.results = results
        self.now_ms = now_ms
        self.done = done
        self.told = False
        self.handed_early = False  # whether a cursor may have taken the messages early

    def __call__(self, error: BaseException | None) -> None:
        if self.told:  # a failure after the store had told (a bug): it cannot be reported
            if error is not None:
                logger.error(
                    "appending to %r failed after it was done: %r", self.stream.name, error
                )
            return
        self.told = True
        stream = self.stream
        if error is None:
            try:
                stream._landed(
                    self.partition, self.indexes, self.appended, self.results, self.now_ms
                )
            except Exception as failure:  # a bug: the caller must still hear
                logger.exception("recording an append of %r failed", stream.name)
                error = failure
        elif self.handed_early:
            error = stream._fail_partition(self.partition, error)
        self.done(error)


class StreamHandle:
    """The running state of one stream."""

    def __init__(
        self,
        namespace: str,
        config: StreamConfig,
        created_ms: int,
        logs: list[PartitionLog],
        settings: BrokerSettings,
    ) -> None:
        self.namespace = namespace
        self.config = config
        self.created_ms = created_ms
        self.logs = logs
        self.settings = settings
        self.subscriptions: dict[str, SubscriptionHandle] = {}
        self.signal = ChangeSignal()
        self.published_messages = 0
        self.published_bytes = 0
        self._partitioner = Partitioner(config.partitions)
        self._dedup = DedupWindow(config.dedup_window_ms)
        # id -> the future of the append call that owns it (one future per call, shared
        # by all its ids: a future per message cost more than the append itself)
        self._pending_ids: dict[str, asyncio.Future[None]] = {}
        self._validate_schema = compile_schema(config.json_schema)
        self._max_payload_bytes = min(
            settings.max_payload_bytes, config.max_message_bytes or settings.max_payload_bytes
        )
        # partition -> the failure that closed it to appends (see _fail_partition)
        self._failed_partitions: dict[int, BaseException] = {}
        self._unwatch = [
            log.watch_appends(partial(self._appended, partition))
            for partition, log in enumerate(logs)
        ]

    @property
    def name(self) -> str:
        return self.config.name

    def captures(self, subject: str) -> bool:
        """Whether one of the stream's subject filters matches ``subject``."""
        return any(subject_matches(pattern, subject) for pattern in self.config.subjects)

    def reconfigure(self, config: StreamConfig) -> None:
        """Apply an updated configuration (fields that may change after creation)."""
        validator = compile_schema(config.json_schema)
        self.config = config
        self._validate_schema = validator
        self._dedup.window_ms = config.dedup_window_ms
        self._max_payload_bytes = min(
            self.settings.max_payload_bytes,
            config.max_message_bytes or self.settings.max_payload_bytes,
        )

    def retention_limits(self) -> RetentionLimits:
        """The age / bytes / count limits of each partition (a stream's limits split evenly)."""
        partitions = self.config.partitions
        max_bytes = self.config.max_bytes
        max_messages = self.config.max_messages
        return RetentionLimits(
            max_age_ms=self.config.max_age_ms,
            max_bytes=None if max_bytes is None else max(1, max_bytes // partitions),
            max_messages=None if max_messages is None else max(1, max_messages // partitions),
        )

    # -- publish ------------------------------------------------------------------------

    def check_message(self, message: Message) -> None:
        """Raise if ``message`` breaks a size limit or the stream's schema."""
        if len(message.payload) > self._max_payload_bytes:
            raise PayloadTooLarge(
                f"payload of {len(message.payload)} bytes exceeds {self._max_payload_bytes}",
                limit=self._max_payload_bytes,
                size=len(message.payload),
            )
        if message.headers:
            headers_bytes = sum(len(name) + len(value) for name, value in message.headers.items())
            if headers_bytes > self.settings.max_headers_bytes:
                raise HeadersTooLarge(
                    f"headers of {headers_bytes} bytes exceed {self.settings.max_headers_bytes}",
                    limit=self.settings.max_headers_bytes,
                    size=headers_bytes,
                )
        if self._validate_schema is not None:
            self._check_schema(message)

    def _check_schema(self, message: Message) -> None:
        assert self._validate_schema is not None
        try:
            document = msgspec.json.decode(message.payload)
        except msgspec.DecodeError:
            raise SchemaViolation("payload is not JSON", stream=self.name) from None
        try:
            self._validate_schema(document)
        except fastjsonschema.JsonSchemaValueException as error:
            raise SchemaViolation(
                f"payload does not match the stream's schema: {error.message}",
                stream=self.name,
                path=error.name,
            ) from None

    def detach(self) -> None:
        """Stop hearing from the logs (the handle is being dropped)."""
        for unwatch in self._unwatch:
            unwatch()
        self._unwatch = []

    def _appended(self, partition: int) -> None:
        """New messages of ``partition`` are readable: wake the stream's readers and the
        subscriptions that have not read them now, from the fsync pass's completion,
        rather than one loop step later when the append resumes (a step that can wait
        behind every ready callback). A subscription with early delivery usually has
        them already, and waking its fetchers would only make them fetch nothing."""
        self.signal.notify()
        for subscription in self.subscriptions.values():
            if subscription.has_unread(partition):
                subscription.signal.notify()

    async def append(self, messages: Sequence[Message], now_ms: int) -> list[PublishResult]:
        """Append messages (already checked) and return where each landed, once durable
        (:meth:`start_append`, awaited)."""
        return await self.start_append(messages, now_ms)

    def start_append(
        self, messages: Sequence[Message], now_ms: int
    ) -> asyncio.Future[list[PublishResult]]:
        """Append messages (already checked): written before this returns; the future
        tells where each landed once durable.

        The write does not depend on the caller: once written, records may become
        durable even if the caller goes away (a closed connection, a shutdown), so
        their ids are remembered, their subscriptions told and the ids' waiters
        released from the store's completion, with no task in between; cancelling
        the future only stops the waiting.

        A message whose id was seen within the dedup window is not appended again:
        its result points at the original with ``duplicate=True``. When one
        partition's append fails the call fails; a retry with the same message ids
        is safe, because the ones that did land come back as duplicates.
        """
        loop = asyncio.get_running_loop()
        results: list[PublishResult | None] = [None] * len(messages)
        batches: dict[int, _PartitionBatch] = {}
        waits: list[tuple[int, str, asyncio.Future[None]]] = []
        owned: list[str] = []
        claim: asyncio.Future[None] = loop.create_future()
        choose = self._partitioner.choose
        for index, message in enumerate(messages):
            message.timestamp_ms = now_ms
            if message.id is not None:
                if not self._claim_id(message.id, index, now_ms, results, waits, claim):
                    continue
                owned.append(message.id)
            partition = choose(message.key)
            batch = batches.get(partition)
            if batch is None:
                batches[partition] = ([index], [message])
            else:
                batch[0].append(index)
                batch[1].append(message)
        outcome: asyncio.Future[list[PublishResult]] = loop.create_future()
        if batches:
            try:
                # Before anything is written, so that a refused call writes nothing.
                for partition, (_, batch_messages) in batches.items():
                    self._refuse_if_failed(partition)
                    if self.config.discard is DiscardPolicy.NEW:
                        self._check_capacity(partition, batch_messages)
            except BaseException as error:
                self._release_ids(owned, claim, error)
                raise
            finished = partial(self._finished, owned, claim, outcome, results)
            # One partition (the common case) tells the call directly; several, through
            # a join that hears from each.
            done = finished if len(batches) == 1 else _AppendJoin(len(batches), finished).done
            for partition, batch in batches.items():
                self._write_partition(partition, batch, results, now_ms, done)
        else:
            self._release_ids(owned, claim, None)
            outcome.set_result(results)  # type: ignore[arg-type]
        if waits:
            return start_task(self._with_duplicates(outcome, results, waits, now_ms))
        return outcome

    async def _with_duplicates(
        self,
        outcome: asyncio.Future[list[PublishResult]],
        results: list[PublishResult | None],
        waits: list[tuple[int, str, asyncio.Future[None]]],
        now_ms: int,
    ) -> list[PublishResult]:
        """The results once this call's own appends and the calls that held some of its
        ids (in flight when it came) are done."""
        await outcome
        for index, message_id, waiter in waits:
            failure: StorageFull | StorageFailed | None = None
            try:
                # Shielded: the claim is the other call's, shared by all its waiters, and
                # this caller's cancellation must not cancel it under them.
                await asyncio.shield(waiter)
            except (StorageFull, StorageFailed) as error:
                failure = error
            # Even when the original call failed, this id may have landed (another
            # partition of that call): the dedup window is the truth.
            location = self._dedup.lookup(message_id, now_ms)
            if location is None:
                if isinstance(failure, StorageFailed):  # so that it is not retried either
                    raise StorageFailed(failure.message, id=message_id, **failure.details)
                raise StorageFull("the original publish failed", id=message_id)
            results[index] = PublishResult(
                stream=self.name, partition=location[0], offset=location[1], duplicate=True
            )
        return results  # type: ignore[return-value]

    def _claim_id(
        self,
        message_id: str,
        index: int,
        now_ms: int,
        results: list[PublishResult | None],
        waits: list[tuple[int, str, asyncio.Future[None]]],
        claim: asyncio.Future[None],
    ) -> bool:
        """True if this call must append the message; else its result is filled or awaited."""
        seen = self._dedup.lookup(message_id, now_ms)
        if seen is not None:
            results[index] = PublishResult(
                stream=self.name, partition=seen[0], offset=seen[1], duplicate=True
            )
            return False
        pending = self._pending_ids.get(message_id)
        if pending is not None:
            waits.append((index, message_id, pending))
            return False
        self._pending_ids[message_id] = claim
        return True

    def _release_ids(
        self, message_ids: list[str], claim: asyncio.Future[None], error: BaseException | None
    ) -> None:
        """Forget the ids this call owned and tell whoever waits on them how it went."""
        pending_ids = self._pending_ids
        for message_id in message_ids:
            del pending_ids[message_id]
        if claim.done():
            return
        if error is not None:
            if not isinstance(error, StorageFailed):
                error = StorageFull("the original publish failed")
            claim.set_exception(error)
            claim.exception()  # nobody may be waiting; mark it retrieved
        else:
            claim.set_result(None)

    def _write_partition(
        self,
        partition: int,
        batch: _PartitionBatch,
        results: list[PublishResult | None],
        now_ms: int,
        done: Callable[[BaseException | None], None],
    ) -> None:
        """Write one partition's share of a call; ``done`` hears once when it is durable
        or failed. Subscriptions with ``early_delivery`` get the messages once written."""
        append = _PartitionAppend(self, partition, batch, results, now_ms, done)
        try:
            self.logs[partition].start_append(append.appended, append)
        except Exception as error:  # the append did not go through (or a bug after it)
            append(error)
            return
        if not append.told:
            append.handed_early = self._hand_early(partition, append.appended)

    def _hand_early(self, partition: int, appended: list[Message]) -> bool:
        """Offer written (not yet durable) messages to the subscriptions that asked for
        early delivery; whether a cursor may have taken them."""
        handed = False
        for subscription in self.subscriptions.values():
            if subscription.config.early_delivery:
                try:
                    handed = subscription.on_append(partition, appended) or handed
                except Exception:  # a bug: the write stands, and the cursor may hold them
                    logger.exception("handing an append of %r over early failed", self.name)
                    handed = True
        return handed

    def _refuse_if_failed(self, partition: int) -> None:
        """Raise if an earlier failure closed the partition to appends."""
        cause = self._failed_partitions.get(partition)
        if cause is not None:
            raise self._storage_failed(partition, cause)

    def _fail_partition(self, partition: int, error: BaseException) -> StorageFailed:
        """An append whose messages went out early failed after its write: its offsets
        were handed to consumers, and the store cut the records and would give the
        offsets to new messages, which those cursors have already passed. Appending
        there stops until a restart rebuilds the cursors from durable checkpoints.
        Returns the error the append fails with, as every later one will."""
        if partition not in self._failed_partitions:
            logger.error(
                "stream %r partition %d: an append delivered early failed (%r); the "
                "partition takes no more appends until the server restarts",
                self.name,
                partition,
                error,
            )
            self._failed_partitions[partition] = error
            self._partitioner.avoid(partition)
        return self._storage_failed(partition, self._failed_partitions[partition])

    def _storage_failed(self, partition: int, cause: BaseException) -> StorageFailed:
        """The error of an append to a partition stopped by ``cause``."""
        return StorageFailed(
            f"partition {partition} of stream {self.name!r} takes no appends after a failed "
            f"write of messages already delivered ({cause}); restart the server",
            stream=self.name,
            partition=partition,
        )

    @property
    def failed_partitions(self) -> int:
        """How many partitions stopped taking appends (see :meth:`_fail_partition`)."""
        return len(self._failed_partitions)

    def _landed(
        self,
        partition: int,
        indexes: list[int],
        appended: list[Message],
        results: list[PublishResult | None],
        now_ms: int,
    ) -> None:
        """Record a durable append: results, ids, counters, and the subscriptions."""
        name = self.config.name
        payload_bytes = 0
        for index, message in zip(indexes, appended, strict=True):
            results[index] = PublishResult(stream=name, partition=partition, offset=message.offset)
            payload_bytes += len(message.payload)
            if message.id is not None:
                self._dedup.remember(message.id, partition, message.offset, now_ms)
        self.published_messages += len(appended)
        self.published_bytes += payload_bytes
        self.signal.notify()
        for subscription in self.subscriptions.values():
            subscription.on_append(partition, appended)

    def _finished(
        self,
        owned: list[str],
        claim: asyncio.Future[None],
        outcome: asyncio.Future[list[PublishResult]],
        results: list[PublishResult | None],
        error: BaseException | None,
    ) -> None:
        """Every partition of a call is done: release its ids and tell its caller."""
        try:
            self._release_ids(owned, claim, error)
        finally:
            if not outcome.done():  # else the caller stopped waiting
                if error is not None:
                    outcome.set_exception(error)
                else:
                    outcome.set_result(results)  # type: ignore[arg-type]

    def _check_capacity(self, partition: int, messages: list[Message]) -> None:
        """Under ``discard=new`` (the caller checks it) a full stream rejects publishes
        instead of dropping old data."""
        limits = self.retention_limits()
        stats = self.logs[partition].stats()
        if limits.max_messages is not None and stats.messages + len(messages) > limits.max_messages:
            raise StorageFull(
                f"stream {self.name!r} is full (max_messages)",
                stream=self.name,
                limit="max_messages",
            )
        if limits.max_bytes is not None:
            incoming = sum(message.size_bytes() for message in messages)
            if stats.bytes + incoming > limits.max_bytes:
                raise StorageFull(
                    f"stream {self.name!r} is full (max_bytes)", stream=self.name, limit="max_bytes"
                )

    async def rebuild_dedup(self, now_ms: int) -> None:
        """Re-learn the ids published within the dedup window (after a restart)."""
        since_ms = now_ms - self.config.dedup_window_ms
        for partition, log in enumerate(self.logs):
            offset = await log.offset_for_timestamp(since_ms)
            while offset < log.next_offset:
                messages = await log.read(offset, DEDUP_REBUILD_BATCH, 4 * 1024 * 1024)
                if not messages:
                    break
                for message in messages:
                    if message.id is not None:
                        self._dedup.remember(
                            message.id, partition, message.offset, message.timestamp_ms
                        )
                offset = messages[-1].offset + 1

    def expire_dedup(self, now_ms: int) -> None:
        """Forget message ids older than the dedup window."""
        self._dedup.expire(now_ms)

    # -- information ---------------------------------------------------------------------

    def info(self) -> StreamInfo:
        """Configuration and per-partition offsets and sizes."""
        partitions = []
        for partition, log in enumerate(self.logs):
            stats = log.stats()
            partitions.append(
                PartitionInfo(
                    partition=partition,
                    first_offset=stats.first_offset,
                    last_offset=stats.next_offset - 1,
                    messages=stats.messages,
                    bytes=stats.bytes,
                    first_timestamp_ms=stats.first_timestamp_ms,
                    last_timestamp_ms=stats.last_timestamp_ms,
                )
            )
        return StreamInfo(
            namespace=self.namespace,
            config=self.config,
            created_ms=self.created_ms,
            messages=sum(partition.messages for partition in partitions),
            bytes=sum(partition.bytes for partition in partitions),
            partitions=partitions,
        )
