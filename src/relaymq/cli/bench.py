"""``relaymq bench WORKLOAD``: measure a server, and check every message arrived.

Owns the command line of :mod:`relaymq.bench`: the workload and its knobs, the
choice between spawning a server (``--spawn``: embedded store in a temporary
directory, ``--fsync`` policy) and attaching to one (``--url``/``--token``/
``-n``, or a profile), the live progress bar, and the exit status: 0 when every
confirmed message was delivered, 1 when a message was lost or a publish
failed (the throughput figure is then withheld). ``disk`` needs no server: it
times this machine's disk alone, and exits 1 when it cannot write there.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from relaymq.bench.loops import EVENT_LOOPS, default_event_loop, loop_factory
from relaymq.bench.pacing import PACINGS, default_pacing
from relaymq.cli.output import Output
from relaymq.cli.profiles import Target, client_options
from relaymq.errors import InvalidArgument, RelayError
from relaymq.store.base import FsyncPolicy

DEFAULT_MESSAGES = 100_000
LATENCY_RATE_PER_SECOND = 2_000
LATENCY_DURATION_SECONDS = 10.0


@click.command(name="bench")
@click.argument(
    "workload", type=click.Choice(["queue", "fanout", "stream", "latency", "tenants", "disk"])
)
@click.option("--spawn", is_flag=True, help="Start a server of our own (embedded store, temp dir).")
@click.option(
    "--fsync",
    type=click.Choice([policy.value for policy in FsyncPolicy]),
    default="batch",
    show_default=True,
    help="Fsync policy of the spawned server.",
)
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, writable=True, path_type=Path),
    default=None,
    help="With --spawn: where its temporary store goes; disk: where its file goes (the disk "
    "to measure)  [default: the system's temp dir]",
)
@click.option("--protocol", type=click.Choice(["websocket", "http"]), default="websocket")
@click.option("--producers", type=click.IntRange(1), default=1, show_default=True)
@click.option("--consumers", type=click.IntRange(1), default=1, show_default=True)
@click.option("--subscriptions", type=click.IntRange(1), default=4, help="fanout: subscriptions.")
@click.option("--partitions", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--messages", type=click.IntRange(1), help=f"Messages in all (default {DEFAULT_MESSAGES:,})."
)
@click.option(
    "--duration",
    type=click.FloatRange(0.1),
    help="Publish (disk: sync) for this many seconds instead.",
)
@click.option(
    "--rate",
    type=click.FloatRange(1),
    help="Messages per second in all (latency: 2,000), or syncs per second (disk: 2,000). "
    "Latency counts from the send call; how late the pacer sends is reported apart, as "
    "schedule lag.",
)
@click.option("--backlog", is_flag=True, help="queue: publish everything first, then consume.")
@click.option(
    "--early-delivery",
    is_flag=True,
    help="queue and latency: a queue that delivers messages once written, before the "
    "fsync that confirms them.",
)
@click.option("--message-bytes", type=click.IntRange(40), default=256, show_default=True)
@click.option("--batch-messages", type=click.IntRange(1), default=1_000, show_default=True)
@click.option(
    "--linger-ms", type=click.FloatRange(0), help="Batching delay (default 1; latency 0)."
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1),
    default=20_000,
    show_default=True,
    help="Unconfirmed messages per producer.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(1),
    default=5_000,
    show_default=True,
    help="Credit per consumer.",
)
@click.option(
    "--ack-linger-ms",
    type=click.FloatRange(0),
    help="How long the SDK lets an ack wait to share a frame, WebSocket consumers "
    "(default: the SDK's, 1).",
)
@click.option(
    "--deliver-batch",
    type=click.IntRange(1),
    default=500,
    show_default=True,
    help="Messages per push.",
)
@click.option("--drain-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True)
@click.option("--quota", type=click.FloatRange(1), default=20.0, help="tenants: msg/s per tenant.")
@click.option(
    "--flood-factor", type=click.FloatRange(1), default=10.0, help="tenants: A's rate/quota"
)
@click.option(
    "--event-loop",
    type=click.Choice(EVENT_LOOPS),
    default=None,
    help="The clients' event loop  [default: uvloop where installed, else asyncio]",
)
@click.option(
    "--pacing",
    type=click.Choice(PACINGS),
    default=None,
    help="With a rate: even (each message at its own time, sub-millisecond timer) or coarse "
    "(what is due when the loop's millisecond timer fires)  [default: even on Linux]",
)
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@client_options
def bench(target: Target, output: Output, **options: Any) -> None:
    """Run WORKLOAD (queue, fanout, stream, latency, tenants) and report throughput, latency,
    server CPU and memory; check that every confirmed message arrived. ``disk`` measures
    the disk alone: a small write and its fdatasync, the floor under durable latency."""
    from relaymq.bench.transports import Tuning
    from relaymq.bench.workloads import BenchPlan

    workload = options["workload"]
    if workload == "disk":
        measure_the_disk(output, options)
        return
    if options["data_dir"] is not None and not options["spawn"]:
        raise click.UsageError("--data-dir needs --spawn: an attached server has its own")
    options["event_loop"] = options["event_loop"] or default_event_loop()
    if options["pacing"] == "even" and default_pacing() != "even":
        raise click.UsageError("--pacing even needs Linux (timerfd); use --pacing coarse")
    try:
        loop_factory(options["event_loop"])
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if options["early_delivery"] and workload not in ("queue", "latency"):
        raise click.UsageError("--early-delivery is for the queue and latency workloads")
    if workload == "tenants":
        from relaymq.bench.tenants import command as tenants

        if options["pacing"] is not None:
            raise click.UsageError("tenants paces its own publishers; --pacing is for the others")

        tenants(target, output, options)  # its own scenario: two tenants and a flood
        return
    latency = workload == "latency"
    messages, duration = options["messages"], options["duration"]
    if messages is None and duration is None:
        if latency:
            duration = LATENCY_DURATION_SECONDS
        else:
            messages = DEFAULT_MESSAGES
    linger_ms, ack_linger_ms = options["linger_ms"], options["ack_linger_ms"]
    tuning = Tuning(
        message_bytes=options["message_bytes"],
        batch_messages=options["batch_messages"],
        linger_ms=linger_ms if linger_ms is not None else (0 if latency else 1),
        max_in_flight_messages=options["max_in_flight"],
        prefetch_messages=options["prefetch"],
        deliver_batch_messages=options["deliver_batch"],
        **({} if ack_linger_ms is None else {"ack_linger_ms": ack_linger_ms}),
    )
    rate = options["rate"] or (LATENCY_RATE_PER_SECOND if latency else None)
    plan = BenchPlan(
        workload=workload,
        protocol=options["protocol"],
        producers=options["producers"],
        consumers=options["consumers"],
        subscriptions=options["subscriptions"],
        partitions=options["partitions"],
        messages=messages,
        duration_seconds=duration,
        rate_per_second=rate,
        backlog=options["backlog"],
        early_delivery=options["early_delivery"],
        drain_timeout_seconds=options["drain_timeout"],
        event_loop=options["event_loop"],
        pacing=None if rate is None else options["pacing"] or default_pacing(),
        tuning=tuning,
    )
    try:
        spawn = SpawnOptions(options["fsync"], options["data_dir"]) if options["spawn"] else None
        report = execute(plan, target, spawn, output, options["no_progress"])
    except RelayError as error:
        output.error(error)
        raise SystemExit(1) from None
    if output.as_json:
        output.json(report)
    else:
        from relaymq.bench.report import print_report

        print_report(report, Console())
    verification = report["verification"]
    if report["throughput_withheld"] or verification["failed_publishes"]:
        raise SystemExit(1)


DISK_PARAMETERS = frozenset(
    {"workload", "data_dir", "duration", "rate", "message_bytes", "as_json", "no_progress"}
)


def measure_the_disk(output: Output, options: dict[str, Any]) -> None:
    """``relaymq bench disk``: no server, no clients; the sync latency of the data's disk."""
    from relaymq.bench.disk import (
        DEFAULT_DURATION_SECONDS,
        DEFAULT_RATE_PER_SECOND,
        DiskPlan,
        build_disk_report,
        measure_disk,
        print_disk_report,
    )

    reject_options_disk_ignores()
    try:
        plan = DiskPlan(
            options["data_dir"] or Path(tempfile.gettempdir()),
            options["duration"] or DEFAULT_DURATION_SECONDS,
            options["rate"] or DEFAULT_RATE_PER_SECOND,
            options["message_bytes"],
        )
    except InvalidArgument as error:
        raise click.UsageError(error.message) from None
    try:
        report = build_disk_report(plan, measure_disk(plan))
    except OSError as error:
        raise click.ClickException(
            f"cannot measure the disk in {plan.directory}: {error.strerror or error}"
        ) from None
    if output.as_json:
        output.json(report)
    else:
        print_disk_report(report, Console())


def reject_options_disk_ignores() -> None:
    """A usage error for an option given on the command line that ``disk`` has no use
    for: ``--url`` would look like measuring that server's disk, and measure this one."""
    context = click.get_current_context()
    for parameter in context.command.params:
        name = parameter.name or ""
        given = context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        if given and name not in DISK_PARAMETERS:
            flag = parameter.opts[0] if parameter.opts else name
            raise click.UsageError(
                f"{flag} is not used by disk, which measures this machine's disk alone "
                "(--data-dir, --duration, --rate, --message-bytes, --json)"
            )


@dataclass(frozen=True)
class SpawnOptions:
    """How to start the server the bench spawns."""

    fsync: str
    parent: Path | None  # where its temporary data directory is made; None: system temp


def execute(
    plan: Any, target: Target, spawn: SpawnOptions | None, output: Output, no_progress: bool
) -> dict[str, Any]:
    """Run the plan against a spawned server (``spawn``) or the target; the report."""
    from relaymq.bench.runner import SpawnedServer, run_until_terminated, terminated_as_exit
    from relaymq.bench.transports import Endpoint
    from relaymq.runtime import tune_garbage_collector

    # The bench's own pauses count as latency or, in a paced producer, as schedule lag:
    # with CPython's GC thresholds its full collections of the imported modules stalled
    # producers and consumers for 15-40 ms. Tuned as ``relaymq serve`` tunes itself.
    tune_garbage_collector()
    new_loop = loop_factory(plan.event_loop)
    if spawn is None:
        endpoint = Endpoint(target.url, target.token, target.namespace)
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(measure(plan, endpoint, None, output, no_progress))
    # The loop closes (its leftover tasks cancelled) before the server stops.
    with (
        terminated_as_exit(),
        SpawnedServer(spawn.fsync, spawn.parent) as server,
        asyncio.Runner(loop_factory=new_loop) as runner,
    ):
        endpoint = Endpoint(server.url, server.token, "default")
        return run_until_terminated(runner, measure(plan, endpoint, server, output, no_progress))


async def measure(
    plan: Any, endpoint: Any, server: Any, output: Output, no_progress: bool
) -> dict[str, Any]:
    """Run with progress and statistics; build the report."""
    from relaymq.bench.report import LiveProgress, build_report
    from relaymq.bench.runner import progress_interval_seconds, run_bench, stats_for
    from relaymq.bench.server_stats import MetricsStats

    stats = stats_for(server, endpoint)
    console = Console(stderr=True)
    show = not no_progress and console.is_terminal
    described = {"spawned": server is not None, "url": endpoint.url}
    described["fsync"] = server.fsync if server is not None else None
    described["data_filesystem"] = server.data_filesystem if server is not None else None
    try:
        if show:
            with LiveProgress(console) as progress:
                interval = progress_interval_seconds(plan)
                state = await run_bench(plan, endpoint, stats, lambda s: progress.tick(s, interval))
        else:
            state = await run_bench(plan, endpoint, stats)
    finally:
        if isinstance(stats, MetricsStats):
            await stats.close()
    return build_report(state, described, stats.peak_rss_bytes)
