"""The four bench workloads and the measured phases they are made of.

Owns what each workload creates on the server, runs, and measures:

* ``queue``: producers -> one queue (a shared subscription) -> consumers that
  ack every message. Producers and consumers run together (``end_to_end``),
  or with ``backlog`` the producers fill the queue first (``publish``) and the
  consumers then drain it (``consume``).
* ``fanout``: producers -> a topic with N subscriptions, each drained by its
  own consumers: every message is delivered N times.
* ``stream``: producers append to a stream (``append``); then an ``ordered``
  subscription from the earliest offset replays it (``replay``).
* ``latency``: a ``queue`` run at a fixed rate, for the end-to-end latency
  (from the send call) and the producers' lag behind their schedule.

A phase's clock starts once every connection is open and subscribed, and
stops when its last message was confirmed (publish) or received (consume);
consumer acks are then confirmed by a round trip before anything is checked.
The server's fsync histogram is read just before each phase's clock starts and
just after it stops, never during a phase: see :mod:`relaymq.bench.fsync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from relaymq import errors
from relaymq.bench.fsync import FsyncProbe, FsyncWindow
from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.host import steal_seconds
from relaymq.bench.pacing import default_pacing
from relaymq.bench.server_stats import ServerStats
from relaymq.bench.transports import (
    Consumer,
    Endpoint,
    HttpConsumer,
    HttpProducer,
    Producer,
    ProducerPlan,
    Tuning,
    WebSocketConsumer,
    WebSocketProducer,
)
from relaymq.bench.verify import Deliveries, Publications
from relaymq.client import AsyncClient

WORKLOAD_NAMES = ("queue", "fanout", "stream", "latency")
PROTOCOLS = ("websocket", "http")
COMPLETION_POLL_SECONDS = 0.002


@dataclass(frozen=True)
class BenchPlan:
    """Everything a run is asked to do."""

    workload: str
    protocol: str = "websocket"
    producers: int = 1
    consumers: int = 1
    subscriptions: int = 4  # fanout only
    partitions: int = 1
    messages: int | None = 100_000  # in all producers together; None: run for duration
    duration_seconds: float | None = None
    rate_per_second: float | None = None  # in all producers together; None: flat out
    backlog: bool = False  # queue only: publish everything first, then consume
    early_delivery: bool = False  # queue and latency: deliver before the fsync
    drain_timeout_seconds: float = 10.0
    event_loop: str = "asyncio"  # what the CLI runs the clients on (relaymq.bench.loops)
    pacing: str | None = field(default_factory=default_pacing)  # None: not paced
    tuning: Tuning = field(
        default_factory=lambda: Tuning(
            message_bytes=256,
            batch_messages=1_000,
            linger_ms=1,
            max_in_flight_messages=20_000,
            prefetch_messages=5_000,
            deliver_batch_messages=500,
        )
    )


@dataclass(frozen=True)
class Mark:
    """A moment of a run: wall clock and CPU seconds of the bench and the server, and
    the CPU seconds the hypervisor took from the machine (``None``: unknown)."""

    wall_seconds: float
    client_cpu_seconds: float
    server_cpu_seconds: float | None
    steal_seconds: float | None = None


@dataclass(frozen=True)
class Phase:
    """One measured phase: ``messages`` of ``message_bytes`` between two marks."""

    name: str
    messages: int
    message_bytes: int
    start: Mark
    end: Mark

    @property
    def seconds(self) -> float:
        """Wall seconds."""
        return max(self.end.wall_seconds - self.start.wall_seconds, 1e-9)

    @property
    def server_cpu_seconds(self) -> float | None:
        """CPU seconds the server spent in the phase (``None``: unknown)."""
        if self.start.server_cpu_seconds is None or self.end.server_cpu_seconds is None:
            return None
        return self.end.server_cpu_seconds - self.start.server_cpu_seconds

    @property
    def steal_seconds(self) -> float | None:
        """CPU seconds the hypervisor took from the machine in the phase (``None``: unknown)."""
        if self.start.steal_seconds is None or self.end.steal_seconds is None:
            return None
        return self.end.steal_seconds - self.start.steal_seconds

    @property
    def client_cpu_seconds(self) -> float:
        """CPU seconds the bench process (producers and consumers) spent in the phase."""
        return self.end.client_cpu_seconds - self.start.client_cpu_seconds


@dataclass
class RunState:
    """What a run has done so far: read by the progress display and the report."""

    plan: BenchPlan
    run_id: str
    publications: Publications
    deliveries: list[Deliveries] = field(default_factory=list)
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    # How late each paced message was handed to the client (empty when unpaced).
    schedule_lag: LatencyRecorder = field(default_factory=LatencyRecorder)
    stage: str = "starting"
    phases: list[Phase] = field(default_factory=list)
    server_unacked: int | None = None
    fsync: FsyncWindow = field(default_factory=FsyncWindow)

    @property
    def received(self) -> int:
        """Distinct deliveries so far, over every subscription."""
        return sum(delivery.received for delivery in self.deliveries)

    @property
    def expected_deliveries(self) -> int | None:
        """Deliveries a complete count run makes (``None`` in a duration run)."""
        if self.plan.messages is None:
            return None
        return self.plan.messages * max(len(self.deliveries), 1)


class Workload:
    """One run of a workload against an endpoint; :meth:`run` fills the state."""

    def __init__(
        self, plan: BenchPlan, endpoint: Endpoint, stats: ServerStats, state: RunState
    ) -> None:
        self.plan = plan
        self.endpoint = endpoint
        self.stats = stats
        self.state = state
        self.name = f"bench-{state.run_id}"
        self.fsync_probe = FsyncProbe(endpoint.url, endpoint.token)

    async def run(self, admin: AsyncClient) -> None:
        """Create the resources, run the phases, check the server, clean up."""
        runners: dict[str, Callable[[AsyncClient], Awaitable[None]]] = {
            "queue": self.queue,
            "fanout": self.fanout,
            "stream": self.stream,
            "latency": self.queue,
        }
        try:
            await runners[self.plan.workload](admin)
        finally:
            self.state.stage = "cleaning up"
            await self.clean_up(admin)

    # -- the workloads --------------------------------------------------------------------

    async def queue(self, admin: AsyncClient) -> None:
        """Producers -> queue -> consumers: together, or backlog first."""
        await admin.queues.create(
            self.name,
            partitions=self.plan.partitions,
            dead_letter=False,
            early_delivery=self.plan.early_delivery,
        )
        deliveries = self.track([self.name])
        if self.plan.backlog:
            await self.publish_phase("publish", self.name)
            await self.consume_phase("consume", [self.name], deliveries, consumer_count=None)
        else:
            await self.together("publish", "end_to_end", self.name, [self.name], deliveries)
        info = await admin.queues.get(self.name)
        self.state.server_unacked = info.pending + info.in_flight

    async def fanout(self, admin: AsyncClient) -> None:
        """Producers -> topic -> N subscriptions, each with its own consumers."""
        await admin.topics.create(self.name, partitions=self.plan.partitions)
        names = [f"{self.name}-{number}" for number in range(self.plan.subscriptions)]
        for name in names:
            await admin.topics.subscribe(self.name, name)
        deliveries = self.track(names)
        await self.together("publish", "deliver", self.name, names, deliveries)
        await self.count_unacked(admin, names)

    async def stream(self, admin: AsyncClient) -> None:
        """Append to a stream, then replay it through an ordered subscription."""
        await admin.streams.create(self.name, partitions=self.plan.partitions)
        await self.publish_phase("append", self.name)
        replay = f"{self.name}-replay"
        await admin.subscriptions.create(replay, stream=self.name, mode="ordered")
        deliveries = self.track([replay])
        await self.consume_phase("replay", [replay], deliveries, consumer_count=None)
        await self.count_unacked(admin, [replay])

    # -- phases ---------------------------------------------------------------------------

    def track(self, subscriptions: list[str]) -> list[Deliveries]:
        """Deliveries of each subscription, visible to the progress display."""
        deliveries = [Deliveries(self.state.publications) for _ in subscriptions]
        self.state.deliveries = deliveries
        return deliveries

    async def publish_phase(self, name: str, subject: str) -> None:
        """Publish everything with confirms, nobody consuming."""
        producers = await self.open_producers()
        self.state.stage = name
        await self.open_fsync_window()
        start = await self.mark()
        try:
            await self.produce(producers, subject, start.wall_seconds)
            end = await self.mark()
            await self.close_fsync_window()
        finally:
            await close_all(producers)
        self.record(name, self.state.publications.confirmed, start, end)

    async def consume_phase(
        self,
        name: str,
        subscriptions: list[str],
        deliveries: list[Deliveries],
        consumer_count: int | None,
    ) -> None:
        """Drain what the producers left, acking every message."""
        consumers = await self.open_consumers(subscriptions, consumer_count)
        self.state.stage = name
        await self.open_fsync_window()
        start = await self.mark()
        tasks = start_consumers(consumers, deliveries, self.state.latency)
        try:
            await self.wait_delivered(deliveries, producing=None, tasks=tasks)
            end = await self.mark()
            await self.close_fsync_window()
        finally:
            await stop_consumers(consumers, tasks)
        self.record(name, sum(delivery.received for delivery in deliveries), start, end)

    async def together(
        self,
        publish_name: str,
        consume_name: str,
        subject: str,
        subscriptions: list[str],
        deliveries: list[Deliveries],
    ) -> None:
        """Producers and consumers at once: publish throughput, and end to end."""
        consumers = await self.open_consumers(subscriptions, None)
        producers = await self.open_producers()
        self.state.stage = f"{publish_name} + {consume_name}"
        await self.open_fsync_window()
        start = await self.mark()
        tasks = start_consumers(consumers, deliveries, self.state.latency)
        producing = asyncio.create_task(self.produce(producers, subject, start.wall_seconds))
        try:
            await asyncio.wait({producing, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            published = await self.mark() if producing.done() else None
            await self.wait_delivered(deliveries, producing=producing, tasks=tasks)
            if published is None:
                published = await self.mark()
            end = await self.mark()
            await self.close_fsync_window()
        finally:
            await stop_consumers(consumers, tasks)
            if not producing.done():
                producing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producing
            await close_all(producers)
        self.record(publish_name, self.state.publications.confirmed, start, published)
        self.record(consume_name, sum(delivery.received for delivery in deliveries), start, end)

    async def produce(self, producers: Sequence[Producer], subject: str, started: float) -> None:
        """Run every producer on its share of the plan."""
        plan = self.plan
        count = len(producers)
        deadline = started + plan.duration_seconds if plan.duration_seconds else None
        rate = plan.rate_per_second / count if plan.rate_per_second else None
        shares = split(plan.messages, count) if plan.messages is not None else [None] * count
        publications, schedule_lag = self.state.publications, self.state.schedule_lag
        await asyncio.gather(
            *(
                producer.run(
                    ProducerPlan(
                        number, subject, share, deadline, rate, self.state.run_id, self.plan.pacing
                    ),
                    publications,
                    schedule_lag,
                )
                for number, (producer, share) in enumerate(zip(producers, shares, strict=True))
            )
        )
        publications.producers_done = count

    async def wait_delivered(
        self,
        deliveries: list[Deliveries],
        producing: asyncio.Task[None] | None,
        tasks: list[asyncio.Task[None]],
    ) -> None:
        """Until every confirmed message reached every subscription, or nothing new
        arrived for ``drain_timeout_seconds`` after the producers finished."""
        last_received, last_progress = -1, time.perf_counter()
        while True:
            failed = [task for task in tasks if task.done()]
            if failed:
                failed[0].result()  # a consumer died: raise its error
                raise errors.ConnectionLost("a consumer stopped before the end")
            if producing is None or producing.done():
                if producing is not None:
                    producing.result()
                if all(delivery.complete() for delivery in deliveries):
                    return
            received = sum(delivery.received for delivery in deliveries)
            now = time.perf_counter()
            if received != last_received:
                last_received, last_progress = received, now
            elif now - last_progress > self.plan.drain_timeout_seconds and (
                producing is None or producing.done()
            ):
                return  # whatever is missing is lost; the verdict will say so
            await asyncio.sleep(COMPLETION_POLL_SECONDS)

    # -- connections, marks, clean-up -----------------------------------------------------

    async def open_producers(self) -> list[Producer]:
        """One connected producer per ``producers``."""
        tuning, endpoint = self.plan.tuning, self.endpoint
        opener = WebSocketProducer.open if self.plan.protocol == "websocket" else HttpProducer.open
        openings = [opener(endpoint, tuning) for _ in range(self.plan.producers)]
        return list(await asyncio.gather(*openings))

    async def open_consumers(
        self, subscriptions: list[str], consumer_count: int | None
    ) -> list[tuple[int, Consumer]]:
        """``consumers`` connected consumers per subscription, with its index."""
        count = consumer_count or self.plan.consumers
        tuning, endpoint = self.plan.tuning, self.endpoint
        openings = []
        for index, name in enumerate(subscriptions):
            for number in range(count):
                if self.plan.protocol == "websocket":
                    openings.append((index, WebSocketConsumer.open(endpoint, tuning, name)))
                else:
                    openings.append((index, HttpConsumer.open(endpoint, tuning, name, number)))
        opened = await asyncio.gather(*(opening for _, opening in openings))
        return [(index, consumer) for (index, _), consumer in zip(openings, opened, strict=True)]

    async def mark(self) -> Mark:
        """Now, with the CPU seconds of both sides."""
        sample = await self.stats.sample()
        return Mark(time.perf_counter(), time.process_time(), sample.cpu_seconds, steal_seconds())

    async def open_fsync_window(self) -> None:
        """Read the server's fsync histogram as a phase is about to start."""
        window = self.state.fsync
        if not window.unknown:
            window.start(await self.fsync_probe.read())

    async def close_fsync_window(self) -> None:
        """Read it again as the phase ended (not once a reading failed)."""
        window = self.state.fsync
        if not window.unknown:
            window.stop(await self.fsync_probe.read())

    def record(self, name: str, messages: int, start: Mark, end: Mark) -> None:
        """Keep a finished phase."""
        phase = Phase(name, messages, self.plan.tuning.message_bytes, start, end)
        self.state.phases.append(phase)

    async def count_unacked(self, admin: AsyncClient, subscriptions: list[str]) -> None:
        """What the server still counts as not acked, over the subscriptions."""
        unacked = 0
        for name in subscriptions:
            info = await admin.subscriptions.get(name)
            unacked += info.pending + info.in_flight
        self.state.server_unacked = unacked

    async def clean_up(self, admin: AsyncClient) -> None:
        """Delete what the run created (best effort: a spawned server is thrown away anyway)."""
        deletions = {
            "queue": [admin.queues.delete],
            "latency": [admin.queues.delete],
            "fanout": [admin.topics.delete],
            "stream": [admin.streams.delete],
        }
        for subscription in await self.own_subscriptions(admin):
            with contextlib.suppress(errors.RelayError):
                await admin.subscriptions.delete(subscription)
        for delete in deletions[self.plan.workload]:
            with contextlib.suppress(errors.RelayError):
                await delete(self.name)

    async def own_subscriptions(self, admin: AsyncClient) -> list[str]:
        """Subscriptions this run created outside a queue."""
        if self.plan.workload not in ("fanout", "stream"):
            return []
        try:
            listed = await admin.subscriptions.list()
        except errors.RelayError:
            return []
        return [info.name for info in listed if info.name.startswith(f"{self.name}-")]


def split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal shares."""
    share, rest = divmod(total, parts)
    return [share + (1 if number < rest else 0) for number in range(parts)]


def start_consumers(
    consumers: list[tuple[int, Consumer]], deliveries: list[Deliveries], latency: LatencyRecorder
) -> list[asyncio.Task[None]]:
    """A task per consumer, accounting into its subscription's deliveries."""
    return [
        asyncio.create_task(consumer.run(deliveries[index], latency))
        for index, consumer in consumers
    ]


async def stop_consumers(
    consumers: list[tuple[int, Consumer]], tasks: list[asyncio.Task[None]]
) -> None:
    """Stop every consumer, let its acks land, and close it."""
    for _, consumer in consumers:
        consumer.stop()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await close_all([consumer for _, consumer in consumers])
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def close_all(connections: Sequence[Producer | Consumer]) -> None:
    """Close every connection, even when some fail to."""
    await asyncio.gather(
        *(connection.close() for connection in connections), return_exceptions=True
    )
