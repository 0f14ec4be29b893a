"""The broker: the one protocol-agnostic entry point every adapter calls.

It owns the namespaces, their streams and subscriptions, runs the core cursors
against the store, and keeps the timers (:mod:`relaymq.broker.maintenance`).
Every method validates its input and raises only :class:`relaymq.errors.RelayError`
subclasses for a caller's mistake. Administrative changes are serialized by one
lock (they are rare); publish and consume never take it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from functools import partial

from relaymq.broker.catalog import STREAM_KIND, SUBSCRIPTION_KIND, Catalog
from relaymq.broker.deadletters import ORIGIN_SUBSCRIPTION, dead_letter_message, redriven_message
from relaymq.broker.fsync_timings import FsyncTimings
from relaymq.broker.maintenance import Maintenance
from relaymq.broker.metrics import BrokerMetrics, collect
from relaymq.broker.models import (
    Backoff,
    PublishResult,
    Received,
    RetentionPolicy,
    StartKind,
    StorageKind,
    StreamConfig,
    StreamInfo,
    StreamUpdate,
    SubscriptionConfig,
    SubscriptionInfo,
    SubscriptionUpdate,
)
from relaymq.broker.names import validate_name
from relaymq.broker.namespace import Namespace
from relaymq.broker.settings import BrokerSettings
from relaymq.broker.stream import StreamHandle
from relaymq.broker.subscription import SubscriptionHandle, checkpoint_key
from relaymq.broker.validation import (
    normalized,
    validate_stream_config,
    validate_stream_limits,
    validate_subscription_config,
    validate_subscription_limits,
)
from relaymq.core.cursor import CursorCheckpoint, DeadLetter, DeliveryMode
from relaymq.core.message import Message
from relaymq.errors import (
    BatchTooLarge,
    Conflict,
    InvalidArgument,
    InvalidConfig,
    NamespaceExists,
    NamespaceNotEmpty,
    NamespaceNotFound,
    PartitionNotFound,
    RelayError,
    ShuttingDown,
    StoreClosed,
    StreamExists,
    SubscriptionExists,
    SubscriptionNotFound,
    TooManyResources,
    WrongDeliveryMode,
)
from relaymq.store.base import LogStore, MetadataStore
from relaymq.store.local.store import LocalStore
from relaymq.store.memory import MemoryLogStore

logger = logging.getLogger("relaymq.broker")

DEFAULT_NAMESPACE = "default"
READ_BATCH_BYTES = 4 * 1024 * 1024
REDRIVE_BATCH = 100


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def _shutting_down() -> ShuttingDown:
    """What a call to a closing broker raises."""
    return ShuttingDown("the broker is shutting down")


def _retrieve(future: asyncio.Future[object]) -> BaseException | None:
    """How a finished future failed (``None``: it succeeded), marking it retrieved."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


class Broker:
    """Streams, subscriptions and their messages, for every namespace."""

    def __init__(
        self,
        settings: BrokerSettings,
        metadata: MetadataStore,
        file_logs: LogStore,
        memory_logs: LogStore,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self._metadata = metadata
        self._catalog = Catalog(metadata)
        self._logs = {StorageKind.FILE: file_logs, StorageKind.MEMORY: memory_logs}
        self._clock_ms = clock_ms
        self._namespaces: dict[str, Namespace] = {}
        self._admin_lock = asyncio.Lock()
        self._nonces = random.SystemRandom()
        self._closed = False
        self.fsync_timings = FsyncTimings()
        self._maintenance = Maintenance(settings, metadata, self._all_streams, clock_ms)

    @classmethod
    async def open(
        cls, settings: BrokerSettings, clock_ms: Callable[[], int] = wall_clock_ms
    ) -> Broker:
        """Open the embedded store in ``settings.data_dir``, recover, and start the timers."""
        fsync_timings = FsyncTimings()
        store = await LocalStore.open(
            settings.data_dir,
            fsync=settings.fsync,
            segment_bytes=settings.segment_bytes,
            reserve_chunk_bytes=settings.reserve_chunk_bytes,
            min_free_bytes=settings.min_free_disk_bytes,
            fsync_observer=fsync_timings.observe,
        )
        broker = cls(settings, store, store, MemoryLogStore(), clock_ms)
        broker.fsync_timings = fsync_timings
        try:
            await broker.start()
        except BaseException:
            await store.close()
            raise
        return broker

    async def start(self) -> None:
        """Load every definition, recover cursors, and start the timers."""
        now_ms = self._clock_ms()
        self._namespaces[DEFAULT_NAMESPACE] = Namespace(DEFAULT_NAMESPACE, 0)
        for name, created_ms in await self._catalog.namespaces():
            self._namespaces[name] = Namespace(name, created_ms)
        for definition in await self._catalog.load(STREAM_KIND, StreamConfig):
            namespace = self._namespace(definition.namespace)
            stream = await self._open_stream(
                namespace.name, definition.config, definition.created_ms
            )
            await stream.rebuild_dedup(now_ms)
            namespace.streams[stream.name] = stream
            namespace.add_routes(stream)
        for sub_definition in await self._catalog.load(SUBSCRIPTION_KIND, SubscriptionConfig):
            namespace = self._namespace(sub_definition.namespace)
            await self._restore_subscription(
                namespace, sub_definition.config, sub_definition.created_ms
            )
        self._maintenance.start()

    async def close(self) -> None:
        """Wake the fetchers, let the appends in flight finish, stop the timers, save
        every checkpoint, flush and close the store."""
        if self._closed:
            return
        self._closed = True
        for stream in self._all_streams():
            for subscription in stream.subscriptions.values():
                subscription.close(None)
            stream.signal.notify()
        await self._flush_logs()
        await self._maintenance.stop()
        for logs in self._logs.values():
            await logs.close()
        if self._metadata is not self._logs[StorageKind.FILE]:
            await self._metadata.close()

    async def _flush_logs(self) -> None:
        """Wait for every append in flight: a checkpoint leaves out acks of messages
        not durable yet (early delivery), so the last one is saved after them."""
        logs = [(stream.name, log) for stream in self._all_streams() for log in stream.logs]
        # Together, so that they share fsync passes; a failure was told to its appends.
        outcomes = await asyncio.gather(*(log.flush() for _, log in logs), return_exceptions=True)
        for (name, _), outcome in zip(logs, outcomes, strict=True):
            if isinstance(outcome, Exception) and not isinstance(outcome, StoreClosed):
                logger.warning("stream %r: appends in flight at close failed: %r", name, outcome)

    def ready(self) -> bool:
        """Whether the broker is open and accepting work."""
        return not self._closed

    # -- lookups -------------------------------------------------------------------------

    def _all_streams(self) -> list[StreamHandle]:
        return [
            stream
            for namespace in self._namespaces.values()
            for stream in namespace.streams.values()
        ]

    def _namespace(self, name: str) -> Namespace:
        namespace = self._namespaces.get(name)
        if namespace is None:
            validate_name("namespace", name)
            raise NamespaceNotFound(f"namespace {name!r} not found", namespace=name)
        return namespace

    def _check_open(self) -> None:
        if self._closed:
            raise _shutting_down()

    # -- namespaces ------------------------------------------------------------------------

    async def create_namespace(self, name: str) -> None:
        """Create an empty namespace."""
        validate_name("namespace", name)
        async with self._admin_lock:
            self._check_open()
            if name in self._namespaces:
                raise NamespaceExists(f"namespace {name!r} exists", namespace=name)
            if len(self._namespaces) >= self.settings.max_namespaces:
                raise TooManyResources("too many namespaces", limit=self.settings.max_namespaces)
            created_ms = self._clock_ms()
            await self._catalog.save_namespace(name, created_ms)
            self._namespaces[name] = Namespace(name, created_ms)

    async def delete_namespace(self, name: str) -> None:
        """Delete an empty namespace (``default`` cannot be deleted)."""
        async with self._admin_lock:
            namespace = self._namespace(name)
            if name == DEFAULT_NAMESPACE:
                raise Conflict("the default namespace cannot be deleted", namespace=name)
            if namespace.streams:
                raise NamespaceNotEmpty(
                    f"namespace {name!r} still has streams",
                    namespace=name,
                    streams=len(namespace.streams),
                )
            await self._catalog.delete_namespace(name)
            del self._namespaces[name]

    def has_namespace(self, name: str) -> bool:
        """Whether a namespace of that name exists."""
        return name in self._namespaces

    def list_namespaces(self) -> list[str]:
        """Every namespace name, sorted."""
        return sorted(self._namespaces)

    def namespace_created_ms(self, name: str) -> int:
        """When a namespace was created (0 for ``default``)."""
        return self._namespace(name).created_ms

    # -- streams ---------------------------------------------------------------------------

    async def _open_stream(
        self, namespace: str, config: StreamConfig, created_ms: int
    ) -> StreamHandle:
        logs_store = self._logs[config.storage]
        logs = [
            await logs_store.open_partition(namespace, config.name, partition)
            for partition in range(config.partitions)
        ]
        return StreamHandle(namespace, config, created_ms, logs, self.settings)

    async def create_stream(self, namespace: str, config: StreamConfig) -> StreamInfo:
        """Create a stream capturing ``config.subjects``."""
        config = validate_stream_config(config, self.settings)
        async with self._admin_lock:
            self._check_open()
            space = self._namespace(namespace)
            if config.name in space.streams:
                raise StreamExists(f"stream {config.name!r} exists", stream=config.name)
            if len(space.streams) >= self.settings.max_streams_per_namespace:
                raise TooManyResources(
                    "too many streams in the namespace",
                    limit=self.settings.max_streams_per_namespace,
                )
            space.check_no_overlap(config.subjects)
            stream = await self._open_stream(namespace, config, self._clock_ms())
            try:
                await self._catalog.save(STREAM_KIND, namespace, config, stream.created_ms)
            except BaseException:
                stream.detach()
                raise
            space.streams[config.name] = stream
            space.add_routes(stream)
            return stream.info()

    async def update_stream(self, namespace: str, name: str, update: StreamUpdate) -> StreamInfo:
        """Change a stream's subjects, limits, dedup window, schema or description."""
        async with self._admin_lock:
            space = self._namespace(namespace)
            stream = space.stream(name)
            changes = {
                field: value
                for field in update.__struct_fields__
                if (value := getattr(update, field)) is not None
            }
            config = normalized(StreamConfig(**{**_fields(stream.config), **changes}))
            validate_stream_limits(config, self.settings)
            space.check_no_overlap(config.subjects, ignore=stream)
            await self._catalog.save(STREAM_KIND, namespace, config, stream.created_ms)
            space.remove_routes(stream)
            stream.reconfigure(config)
            space.add_routes(stream)
            return stream.info()

    async def delete_stream(self, namespace: str, name: str) -> None:
        """Delete a stream, its messages and its subscriptions."""
        async with self._admin_lock:
            space = self._namespace(namespace)
            stream = space.stream(name)
            for subscription in list(stream.subscriptions.values()):
                await self._drop_subscription(space, subscription)
            await self._catalog.delete(STREAM_KIND, namespace, name)
            space.remove_routes(stream)
            del space.streams[name]
            stream.detach()
            for log in stream.logs:
                await log.close()
            await self._logs[stream.config.storage].delete_stream(namespace, name)

    async def purge_stream(self, namespace: str, name: str) -> None:
        """Drop every message of a stream; its subscriptions skip what was dropped."""
        async with self._admin_lock:
            stream = self._namespace(namespace).stream(name)
            for log in stream.logs:
                await log.trim(log.next_offset)
            for subscription in stream.subscriptions.values():
                subscription.skip_all()

    def list_streams(self, namespace: str) -> list[StreamInfo]:
        """Every stream of the namespace, sorted by name."""
        space = self._namespace(namespace)
        return [space.streams[name].info() for name in sorted(space.streams)]

    def stream_info(self, namespace: str, name: str) -> StreamInfo:
        """One stream's configuration, offsets and sizes."""
        return self._namespace(namespace).stream(name).info()

    # -- subscriptions -----------------------------------------------------------------------

    async def _start_offsets(
        self, stream: StreamHandle, config: SubscriptionConfig
    ) -> dict[int, int]:
        start = config.start
        offsets = {}
        for partition, log in enumerate(stream.logs):
            if start.kind is StartKind.EARLIEST:
                offsets[partition] = log.first_offset
            elif start.kind is StartKind.LATEST:
                offsets[partition] = log.next_offset
            elif start.kind is StartKind.OFFSET:
                offsets[partition] = min(max(start.value or 0, log.first_offset), log.next_offset)
            else:
                offsets[partition] = await log.offset_for_timestamp(start.value or 0)
        return offsets

    def _new_subscription(
        self,
        stream: StreamHandle,
        config: SubscriptionConfig,
        created_ms: int,
        start_offsets: dict[int, int],
        checkpoints: dict[int, CursorCheckpoint],
    ) -> SubscriptionHandle:
        return SubscriptionHandle(
            config,
            created_ms,
            stream,
            start_offsets,
            checkpoints,
            self.settings,
            # A fresh nonce per subscription instance: receipts carry no subscription
            # name, so a recreated queue or a sibling subscription on the same stream
            # must never issue a receipt another one already issued.
            self._nonces.getrandbits(63),
            self._dead_letter,
        )

    def _check_dead_letter_target(self, space: Namespace, config: SubscriptionConfig) -> None:
        if config.dead_letter_stream is not None:
            space.stream(config.dead_letter_stream)

    async def create_subscription(
        self, namespace: str, config: SubscriptionConfig
    ) -> SubscriptionInfo:
        """Create a durable subscription on ``config.stream``."""
        config = validate_subscription_config(config)
        async with self._admin_lock:
            self._check_open()
            space = self._namespace(namespace)
            stream = space.stream(config.stream)
            if config.name in space.subscriptions:
                raise SubscriptionExists(
                    f"subscription {config.name!r} exists", subscription=config.name
                )
            if len(stream.subscriptions) >= self.settings.max_subscriptions_per_stream:
                raise TooManyResources(
                    "too many subscriptions on the stream",
                    limit=self.settings.max_subscriptions_per_stream,
                )
            if stream.config.retention is RetentionPolicy.WORK_QUEUE and stream.subscriptions:
                raise Conflict(
                    f"work-queue stream {stream.name!r} already has a subscription",
                    stream=stream.name,
                )
            self._check_dead_letter_target(space, config)
            start_offsets = await self._start_offsets(stream, config)
            subscription = self._new_subscription(
                stream, config, self._clock_ms(), start_offsets, {}
            )
            await self._catalog.save(SUBSCRIPTION_KIND, namespace, config, subscription.created_ms)
            entries, floors = subscription.take_checkpoints()
            await self._metadata.save_checkpoints(entries)
            subscription.note_durable(floors)
            space.subscriptions[config.name] = subscription
            stream.subscriptions[config.name] = subscription
            return subscription.info(self._clock_ms())

    async def _restore_subscription(
        self, space: Namespace, config: SubscriptionConfig, created_ms: int
    ) -> None:
        stream = space.stream(config.stream)
        checkpoints: dict[int, CursorCheckpoint] = {}
        if stream.config.storage is StorageKind.FILE:
            # Memory streams restart empty at offset 0: their old floors would skip new messages.
            for partition in range(stream.config.partitions):
                data = await self._metadata.load_checkpoint(
                    checkpoint_key(space.name, config.name, partition)
                )
                if data is not None:
                    checkpoints[partition] = CursorCheckpoint.decode(data)
        start_offsets = {partition: log.first_offset for partition, log in enumerate(stream.logs)}
        subscription = self._new_subscription(
            stream, config, created_ms, start_offsets, checkpoints
        )
        space.subscriptions[config.name] = subscription
        stream.subscriptions[config.name] = subscription

    async def update_subscription(
        self, namespace: str, name: str, update: SubscriptionUpdate
    ) -> SubscriptionInfo:
        """Change a subscription's timeouts, retries, backoff, dead-letter stream, description."""
        async with self._admin_lock:
            space = self._namespace(namespace)
            subscription = space.subscription(name)
            changes = {
                field: value
                for field in update.__struct_fields__
                if (value := getattr(update, field)) is not None
            }
            config = normalized(SubscriptionConfig(**{**_fields(subscription.config), **changes}))
            validate_subscription_limits(config)
            self._check_dead_letter_target(space, config)
            await self._catalog.save(SUBSCRIPTION_KIND, namespace, config, subscription.created_ms)
            subscription.reconfigure(config)
            return subscription.info(self._clock_ms())

    async def _drop_subscription(self, space: Namespace, subscription: SubscriptionHandle) -> None:
        await self._catalog.delete(SUBSCRIPTION_KIND, space.name, subscription.name)
        await self._metadata.delete_checkpoints(f"{space.name}/{subscription.name}/")
        del space.subscriptions[subscription.name]
        del subscription.stream.subscriptions[subscription.name]
        subscription.close(
            SubscriptionNotFound(
                f"subscription {subscription.name!r} was deleted",
                namespace=space.name,
                subscription=subscription.name,
            )
        )

    async def delete_subscription(self, namespace: str, name: str) -> None:
        """Delete a subscription and its cursor state."""
        async with self._admin_lock:
            space = self._namespace(namespace)
            await self._drop_subscription(space, space.subscription(name))

    def list_subscriptions(
        self, namespace: str, stream: str | None = None
    ) -> list[SubscriptionInfo]:
        """Every subscription of the namespace (or of one stream), sorted by name."""
        space = self._namespace(namespace)
        if stream is not None:
            space.stream(stream)
        now_ms = self._clock_ms()
        return [
            space.subscriptions[name].info(now_ms)
            for name in sorted(space.subscriptions)
            if stream is None or space.subscriptions[name].stream.name == stream
        ]

    def subscription_info(self, namespace: str, name: str) -> SubscriptionInfo:
        """One subscription's configuration and counters."""
        return self._namespace(namespace).subscription(name).info(self._clock_ms())

    async def purge_subscription(self, namespace: str, name: str) -> None:
        """Mark every message now in the stream as done for this subscription."""
        self._namespace(namespace).subscription(name).skip_all()

    # -- queue and topic sugar -----------------------------------------------------------------

    async def create_queue(
        self,
        namespace: str,
        name: str,
        *,
        partitions: int = 1,
        ack_timeout_ms: int = 30_000,
        max_deliveries: int = 5,
        backoff: Backoff = Backoff(),
        dead_letter: bool = True,
        mode: DeliveryMode = DeliveryMode.SHARED,
        max_age_ms: int | None = None,
        max_bytes: int | None = None,
        max_messages: int | None = None,
        early_delivery: bool = False,
    ) -> SubscriptionInfo:
        """A queue: a work-queue stream ``name`` (subject ``name``) with one subscription
        ``name``; with ``dead_letter``, a queue ``name-dlq`` receives what fails.
        ``early_delivery``: see :class:`SubscriptionConfig`."""
        validate_name("queue", name)
        dead_letter_name = f"{name}-dlq" if dead_letter else None
        if dead_letter_name is not None:
            validate_name("dead-letter queue", dead_letter_name)
            await self.create_queue(
                namespace, dead_letter_name, dead_letter=False, max_age_ms=max_age_ms
            )
        await self.create_stream(
            namespace,
            StreamConfig(
                name=name,
                subjects=[name],
                partitions=partitions,
                retention=RetentionPolicy.WORK_QUEUE,
                max_age_ms=max_age_ms,
                max_bytes=max_bytes,
                max_messages=max_messages,
            ),
        )
        return await self.create_subscription(
            namespace,
            SubscriptionConfig(
                name=name,
                stream=name,
                mode=mode,
                ack_timeout_ms=ack_timeout_ms,
                max_deliveries=max_deliveries,
                backoff=backoff,
                dead_letter_stream=dead_letter_name,
                early_delivery=early_delivery,
            ),
        )

    async def delete_queue(self, namespace: str, name: str) -> None:
        """Delete a queue and its dead-letter queue."""
        space = self._namespace(namespace)
        stream = space.stream(name)
        subscription = stream.subscriptions.get(name)
        dead_letter_name = subscription.config.dead_letter_stream if subscription else None
        await self.delete_stream(namespace, name)
        if dead_letter_name is not None and dead_letter_name in space.streams:
            await self.delete_stream(namespace, dead_letter_name)

    async def create_topic(
        self,
        namespace: str,
        name: str,
        *,
        partitions: int = 1,
        max_age_ms: int | None = None,
        max_bytes: int | None = None,
        max_messages: int | None = None,
    ) -> StreamInfo:
        """A topic: a stream ``name`` capturing ``name`` and ``name.>``; each subscriber
        creates its own subscription on it (fan-out)."""
        validate_name("topic", name)
        return await self.create_stream(
            namespace,
            StreamConfig(
                name=name,
                subjects=[name, f"{name}.>"],
                partitions=partitions,
                max_age_ms=max_age_ms,
                max_bytes=max_bytes,
                max_messages=max_messages,
            ),
        )

    # -- publish ----------------------------------------------------------------------------

    async def publish(
        self, namespace: str, messages: Sequence[Message], stream: str | None = None
    ) -> list[PublishResult]:
        """Append messages to the streams capturing their subjects; return once durable.

        The whole batch is checked before anything is appended: one bad message
        rejects the batch.
        """
        return await self.start_publish(namespace, messages, stream)

    def start_publish(
        self, namespace: str, messages: Sequence[Message], stream: str | None = None
    ) -> asyncio.Future[list[PublishResult]]:
        """:meth:`publish` without the wait: checks the batch (raising what is wrong
        with it) and writes it before returning; the future resolves once durable.

        An adapter that must go on reading while a publish becomes durable calls
        this from its reader, so the write happens in the step that read the frame,
        not a loop trip later in a task of its own, and in the order of the frames
        (a publish spread over several streams too). Cancelling the future only
        stops the waiting.
        """
        if self._closed:  # _check_open(), tested inline on the path of every message
            raise _shutting_down()
        if len(messages) > self.settings.max_batch_messages:
            raise BatchTooLarge(
                f"batch of {len(messages)} messages exceeds {self.settings.max_batch_messages}",
                limit=self.settings.max_batch_messages,
                size=len(messages),
            )
        if not messages:
            loop = asyncio.get_running_loop()
            nothing: asyncio.Future[list[PublishResult]] = loop.create_future()
            nothing.set_result([])
            return nothing
        routed = self._route(self._namespace(namespace), messages, stream)
        now_ms = self._clock_ms()
        if isinstance(routed, StreamHandle):
            return routed.start_append(messages, now_ms)
        return self._start_groups(routed, messages, now_ms)

    def _route(
        self, space: Namespace, messages: Sequence[Message], stream_name: str | None
    ) -> StreamHandle | dict[StreamHandle, list[int]]:
        """The stream taking every message of a publish, or, when they go to several,
        each one's message indexes; raises what is wrong with the first bad message.

        The groups are built only once a second stream turns up: most publishes go to
        one stream, and need neither a dict nor index lists."""
        if stream_name is not None:
            target = space.stream(stream_name)
            for message in messages:
                if not target.captures(message.subject):
                    space.route(message.subject)  # raises InvalidSubject for a malformed one
                    raise InvalidArgument(
                        f"stream {stream_name!r} does not capture subject {message.subject!r}",
                        stream=stream_name,
                        subject=message.subject,
                    )
                target.check_message(message)
            return target
        first: StreamHandle | None = None
        groups: dict[StreamHandle, list[int]] | None = None
        for index, message in enumerate(messages):
            target = space.route(message.subject)
            target.check_message(message)
            if groups is not None:
                groups.setdefault(target, []).append(index)
            elif first is None:
                first = target
            elif target is not first:
                groups = {first: list(range(index)), target: [index]}
        assert first is not None  # a publish has messages
        return first if groups is None else groups

    def _start_groups(
        self,
        groups: dict[StreamHandle, list[int]],
        messages: Sequence[Message],
        now_ms: int,
    ) -> asyncio.Future[list[PublishResult]]:
        """A publish spread over several streams: every stream's share is written now,
        in order with the connection's other publishes; the future resolves once all
        are durable, or with the first failure (the other shares go on).

        A share refused when it comes to be written (a full stream under
        ``discard=new``) fails the call after earlier shares were written: as with a
        partition that fails, a retry with the same message ids is safe, because
        those come back as duplicates."""
        started: list[tuple[list[int], asyncio.Future[list[PublishResult]]]] = []
        try:
            for target, indexes in groups.items():
                share = [messages[index] for index in indexes]
                started.append((indexes, target.start_append(share, now_ms)))
        except BaseException:
            for _, appending in started:  # they go on; nobody waits for them now
                appending.add_done_callback(_retrieve)
            raise
        outcome: asyncio.Future[list[PublishResult]] = asyncio.get_running_loop().create_future()
        results: list[PublishResult | None] = [None] * len(messages)
        remaining = len(started)

        def share_done(indexes: list[int], appending: asyncio.Future[list[PublishResult]]) -> None:
            nonlocal remaining
            remaining -= 1
            error = _retrieve(appending)
            if error is not None:
                if isinstance(error, asyncio.CancelledError):
                    outcome.cancel()  # a no-op once the outcome is done
                elif not outcome.done():
                    outcome.set_exception(error)
                return
            for index, result in zip(indexes, appending.result(), strict=True):
                results[index] = result
            if remaining == 0 and not outcome.done():
                outcome.set_result(results)  # type: ignore[arg-type]

        for indexes, appending in started:
            appending.add_done_callback(partial(share_done, indexes))
        return outcome

    # -- consume ----------------------------------------------------------------------------

    def _subscription(self, namespace: str, name: str) -> SubscriptionHandle:
        return self._namespace(namespace).subscription(name)

    async def fetch(
        self,
        namespace: str,
        subscription: str,
        *,
        consumer_id: str,
        max_messages: int,
        wait_ms: int = 0,
        max_in_flight: int | None = None,
    ) -> list[Received]:
        """Lease up to ``max_messages`` to ``consumer_id``, long-polling up to ``wait_ms``."""
        if self._closed:  # _check_open(), tested inline on the path of every fetch
            raise _shutting_down()
        if not 1 <= max_messages <= self.settings.max_fetch_messages:
            raise InvalidArgument(
                f"max_messages must be between 1 and {self.settings.max_fetch_messages}",
                field="max_messages",
            )
        if max_in_flight is not None and max_in_flight < 1:
            raise InvalidArgument("max_in_flight must be positive", field="max_in_flight")
        wait_ms = min(max(wait_ms, 0), self.settings.max_wait_ms)
        handle = self._subscription(namespace, subscription)
        return await handle.fetch(consumer_id, max_messages, wait_ms, max_in_flight, self._clock_ms)

    async def ack(
        self, namespace: str, subscription: str, receipts: Sequence[str]
    ) -> list[RelayError | None]:
        """Acknowledge deliveries; per receipt, ``None`` or the error that applied."""
        return self.ack_now(namespace, subscription, receipts)

    def ack_now(
        self, namespace: str, subscription: str, receipts: Sequence[str]
    ) -> list[RelayError | None]:
        """:meth:`ack`, which never waits, as a plain call."""
        handle = self._subscription(namespace, subscription)
        # ``dispatcher.ack`` returns None when applied, so the outcomes are already the answer.
        return handle.settle_frees(receipts, handle.dispatcher.ack, self._clock_ms)

    async def nack(
        self,
        namespace: str,
        subscription: str,
        receipts: Sequence[str],
        delay_ms: int | None = None,
        error: str | None = None,
    ) -> list[RelayError | None]:
        """Give deliveries back for redelivery (after ``delay_ms`` or the backoff)."""
        if delay_ms is not None and not 0 <= delay_ms <= 24 * 60 * 60 * 1000:
            raise InvalidArgument("delay_ms must be between 0 and one day", field="delay_ms")
        handle = self._subscription(namespace, subscription)

        def apply(receipt: str, now_ms: int) -> DeadLetter | None:
            return handle.dispatcher.nack(receipt, now_ms, delay_ms=delay_ms, error=error)

        outcomes = await handle.settle(receipts, apply, self._clock_ms)
        handle.nacked += sum(1 for outcome in outcomes if not isinstance(outcome, RelayError))
        return [outcome if isinstance(outcome, RelayError) else None for outcome in outcomes]

    async def extend(
        self,
        namespace: str,
        subscription: str,
        receipts: Sequence[str],
        extend_ms: int | None = None,
    ) -> list[int | RelayError]:
        """Extend leases by ``extend_ms`` (default: ack timeout); per receipt the new deadline."""
        if extend_ms is not None and not 1 <= extend_ms <= 12 * 60 * 60 * 1000:
            raise InvalidArgument("extend_ms must be between 1 ms and 12 hours", field="extend_ms")
        handle = self._subscription(namespace, subscription)

        def apply(receipt: str, now_ms: int) -> int:
            return handle.dispatcher.extend(receipt, now_ms, extend_ms)

        return await handle.settle(receipts, apply, self._clock_ms)

    async def term(
        self,
        namespace: str,
        subscription: str,
        receipts: Sequence[str],
        reason: str | None = None,
    ) -> list[RelayError | None]:
        """Dead-letter deliveries now, without further retries."""
        handle = self._subscription(namespace, subscription)

        def apply(receipt: str, now_ms: int) -> DeadLetter:
            return handle.dispatcher.term(receipt, now_ms, reason)

        outcomes = await handle.settle(receipts, apply, self._clock_ms)
        return [outcome if isinstance(outcome, RelayError) else None for outcome in outcomes]

    async def release_consumer(self, namespace: str, subscription: str, consumer_id: str) -> None:
        """A push consumer went away: what it held is redelivered now."""
        space = self._namespaces.get(namespace)
        handle = space.subscriptions.get(subscription) if space else None
        if handle is not None:
            handle.release_consumer(consumer_id, self._clock_ms())

    async def _dead_letter(
        self, subscription: SubscriptionHandle, dead_letters: list[DeadLetter]
    ) -> None:
        """Append dead letters to the dead-letter stream, then let the cursor forget them."""
        target_name = subscription.config.dead_letter_stream
        space = self._namespaces.get(subscription.namespace)
        target = space.streams.get(target_name) if space and target_name else None
        if target is not None:
            messages = [
                dead_letter_message(dead_letter, subscription.stream.name, subscription.name)
                for dead_letter in dead_letters
            ]
            try:
                await target.append(messages, self._clock_ms())
            except BaseException:
                # Not durable in the dead-letter stream (disk full, cancelled): the cursor
                # must not forget them; they are handed out again by the next expiry.
                subscription.dispatcher.retry_dead_letters(dead_letters)
                raise
        elif target_name is not None:
            logger.warning(
                "dead-letter stream %s of subscription %s is gone; dropping %d messages",
                target_name,
                subscription.name,
                len(dead_letters),
            )
        for dead_letter in dead_letters:
            subscription.dispatcher.confirm_dead_letter(dead_letter)

    # -- streams as logs ----------------------------------------------------------------------

    async def read_stream(
        self,
        namespace: str,
        stream: str,
        *,
        partition: int = 0,
        from_offset: int | None = None,
        from_timestamp_ms: int | None = None,
        max_messages: int = 100,
        wait_ms: int = 0,
    ) -> list[Message]:
        """Read a partition by offset or time, long-polling up to ``wait_ms`` at its end."""
        handle = self._namespace(namespace).stream(stream)
        log = self._partition_log(handle, partition)
        if not 1 <= max_messages <= self.settings.max_fetch_messages:
            raise InvalidArgument(
                f"max_messages must be between 1 and {self.settings.max_fetch_messages}",
                field="max_messages",
            )
        if from_offset is not None and from_offset < 0:
            raise InvalidArgument("from_offset must not be negative", field="from_offset")
        if from_offset is None:
            from_offset = (
                log.first_offset
                if from_timestamp_ms is None
                else await log.offset_for_timestamp(from_timestamp_ms)
            )
        deadline_ms = self._clock_ms() + min(max(wait_ms, 0), self.settings.max_wait_ms)
        while True:
            messages = await log.read(from_offset, max_messages, READ_BATCH_BYTES)
            now_ms = self._clock_ms()
            if messages or now_ms >= deadline_ms or self._closed:
                return messages
            await handle.signal.wait((deadline_ms - now_ms) / 1000)

    def _partition_log(self, stream: StreamHandle, partition: int):
        if not 0 <= partition < len(stream.logs):
            raise PartitionNotFound(
                f"stream {stream.name!r} has no partition {partition}",
                stream=stream.name,
                partition=partition,
            )
        return stream.logs[partition]

    async def seek(
        self,
        namespace: str,
        subscription: str,
        *,
        offset: int | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Move an ``ordered`` subscription to an offset or a time (replay or skip)."""
        handle = self._subscription(namespace, subscription)
        if handle.config.mode is not DeliveryMode.ORDERED:
            raise WrongDeliveryMode(
                "seek needs an ordered subscription", mode=str(handle.config.mode)
            )
        if (offset is None) == (timestamp_ms is None):
            raise InvalidArgument("give exactly one of offset and timestamp_ms")
        partitions = range(len(handle.stream.logs)) if partition is None else [partition]
        offsets = {}
        for number in partitions:
            log = self._partition_log(handle.stream, number)
            if offset is not None:
                offsets[number] = min(max(offset, log.first_offset), log.next_offset)
            else:
                offsets[number] = await log.offset_for_timestamp(timestamp_ms or 0)
        handle.seek(offsets)

    # -- dead letters ----------------------------------------------------------------------------

    async def redrive(
        self, namespace: str, subscription: str, max_messages: int | None = None
    ) -> int:
        """Move this subscription's dead letters back to its stream; return how many moved."""
        space = self._namespace(namespace)
        handle = space.subscription(subscription)
        dead_letter_name = handle.config.dead_letter_stream
        if dead_letter_name is None:
            raise InvalidConfig(
                f"subscription {subscription!r} has no dead-letter stream",
                subscription=subscription,
            )
        source = self._redrive_source(space.stream(dead_letter_name))
        consumer_id = f"relaymq-redrive-{random.getrandbits(32):x}"
        moved = 0
        try:
            while max_messages is None or moved < max_messages:
                batch_size = (
                    REDRIVE_BATCH
                    if max_messages is None
                    else min(REDRIVE_BATCH, max_messages - moved)
                )
                deliveries = await source.fetch(consumer_id, batch_size, 0, None, self._clock_ms)
                if not deliveries:
                    break
                mine = [
                    d
                    for d in deliveries
                    if d.message.headers.get(ORIGIN_SUBSCRIPTION) == subscription
                ]
                if mine:
                    await handle.stream.append(
                        [redriven_message(d.message) for d in mine], self._clock_ms()
                    )
                    await source.settle(
                        [d.receipt for d in mine], source.dispatcher.ack, self._clock_ms
                    )
                moved += len(mine)
        finally:
            source.release_consumer(consumer_id, self._clock_ms())
        return moved

    @staticmethod
    def _redrive_source(dead_letter_stream: StreamHandle) -> SubscriptionHandle:
        for candidate in dead_letter_stream.subscriptions.values():
            if candidate.config.mode is DeliveryMode.SHARED:
                return candidate
        raise InvalidConfig(
            f"dead-letter stream {dead_letter_stream.name!r} has no shared subscription"
            " to redrive from",
            stream=dead_letter_stream.name,
        )

    # -- monitoring -------------------------------------------------------------------------------

    def metrics(self) -> BrokerMetrics:
        """A snapshot of every stream and subscription counter."""
        return collect(self._all_streams(), self._clock_ms())


def _fields(config: StreamConfig | SubscriptionConfig) -> dict[str, object]:
    return {field: getattr(config, field) for field in config.__struct_fields__}


__all__ = ["Broker", "BrokerSettings", "wall_clock_ms"]
