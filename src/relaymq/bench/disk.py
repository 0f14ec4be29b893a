"""``relaymq bench disk``: how long a small write and its sync take, without RelayMQ.

Owns the measurement (:func:`measure_disk`), its JSON document and its table. Every
confirm under ``fsync=batch``, and every delivery without early delivery, waits for at
least one such sync, so these figures are a floor under the end-to-end latency on this
disk, and their tail (a flush the device holds for 100 ms) is one no broker that makes a
message durable before confirming it can hide there. Run it where the server's data goes
(``--data-dir``) before reading a latency figure, to know what the disk allows; PostgreSQL
ships ``pg_test_fsync`` for the same reason.

The file has no name (``O_TMPFILE`` where the platform has it), so nothing is left behind
however the run ends. Its space is reserved first where the platform can, as the store
reserves its segments', so a sync flushes data and no growing file's metadata. Syncs are
paced on a fixed schedule at ``--rate``; one that outlasts its slot delays the next, and
the missed slots are skipped, not caught up in a burst.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from relaymq.bench.fsync import SLOW_THRESHOLDS_SECONDS
from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.host import steal_seconds
from relaymq.bench.report import machine, percentile_table, print_steal_warning, share_of_machine
from relaymq.bench.runner import MEMORY_FILESYSTEMS, filesystem_of
from relaymq.errors import InvalidArgument

DEFAULT_RATE_PER_SECOND = 2_000.0
"""Syncs a second: one per message of the latency workload's default rate."""
DEFAULT_DURATION_SECONDS = 10.0
RESERVED_BYTES = 64 << 20
"""The file's reserved size, the default segment size; writes wrap around inside it."""
MAX_WRITE_BYTES = 16 << 20
"""The largest write, a quarter of the file: a pass of a large batch, not a file copy."""
# Where the platform has no fdatasync (macOS) a sync is an fsync; a module attribute so
# that tests can count or stall the syncs.
SYNC_CALL = "fdatasync" if hasattr(os, "fdatasync") else "fsync"
sync_file = getattr(os, SYNC_CALL)


@dataclass(frozen=True)
class DiskPlan:
    """What ``relaymq bench disk`` measures."""

    directory: Path
    duration_seconds: float = DEFAULT_DURATION_SECONDS
    rate_per_second: float = DEFAULT_RATE_PER_SECOND
    message_bytes: int = 256

    def __post_init__(self) -> None:
        if self.duration_seconds <= 0 or self.rate_per_second <= 0:
            raise InvalidArgument("the duration and the rate must be positive")
        if not 1 <= self.message_bytes <= MAX_WRITE_BYTES:
            raise InvalidArgument(f"a write is 1 to {MAX_WRITE_BYTES:,} bytes")


@dataclass
class DiskRun:
    """The syncs of one run and what the machine did meanwhile."""

    latency: LatencyRecorder
    reserved: bool
    seconds: float
    cpu_seconds: float
    steal_seconds: float | None


def measure_disk(plan: DiskPlan) -> DiskRun:
    """Write ``message_bytes`` and sync them ``rate_per_second`` times a second for
    ``duration_seconds``, in a new file in ``directory``; each sync's duration, from the
    write to the sync's return. Raises the ``OSError`` of a failed write or sync."""
    with tempfile.TemporaryFile(dir=plan.directory, prefix="relaymq-bench-") as file:
        reserved = reserve(file.fileno())
        return paced_syncs(file.fileno(), plan, reserved)


def reserve(descriptor: int) -> bool:
    """Reserve the file's space and make that durable; whether it could be reserved (a
    file system or platform without ``posix_fallocate``, or too little free space for
    it, is measured without)."""
    reserved = False
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(descriptor, 0, RESERVED_BYTES)
            reserved = True
        except OSError:
            pass
    os.fsync(descriptor)
    return reserved


def paced_syncs(descriptor: int, plan: DiskPlan, reserved: bool) -> DiskRun:
    """The measured loop of :func:`measure_disk` on a prepared file."""
    latency = LatencyRecorder()
    record = b"x" * plan.message_bytes
    wrap = RESERVED_BYTES - RESERVED_BYTES % plan.message_bytes
    interval = 1 / plan.rate_per_second
    cpu_before, steal_before = time.process_time(), steal_seconds()
    started = due = time.perf_counter()
    deadline = started + plan.duration_seconds
    position = 0
    while due < deadline:
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        began = time.perf_counter_ns()
        os.pwrite(descriptor, record, position)
        sync_file(descriptor)
        latency.record((time.perf_counter_ns() - began) // 1000)
        position = (position + plan.message_bytes) % wrap
        due = max(due + interval, time.perf_counter())
    steal_after = steal_seconds()
    return DiskRun(
        latency=latency,
        reserved=reserved,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_before,
        steal_seconds=None
        if steal_before is None or steal_after is None
        else steal_after - steal_before,
    )


def build_disk_report(plan: DiskPlan, run: DiskRun) -> dict[str, Any]:
    """The JSON document of a run."""
    summary = run.latency.summary()
    syncs = len(run.latency.values_us)
    filesystem = filesystem_of(plan.directory)
    return {
        "workload": "disk",
        "plan": {**asdict(plan), "directory": str(plan.directory)},
        "machine": machine(),
        "filesystem": filesystem,
        "in_memory": filesystem in MEMORY_FILESYSTEMS,
        "reserved": run.reserved,
        "sync_call": SYNC_CALL,
        "syncs": syncs,
        "seconds": round(run.seconds, 4),
        "syncs_per_second": round(syncs / run.seconds, 1),
        "bench_cpu_percent": round(100 * run.cpu_seconds / run.seconds, 1),
        "host_steal_percent": None
        if run.steal_seconds is None
        else share_of_machine(run.steal_seconds, run.seconds),
        "latency_ms": None if summary is None else summary.to_dict(),
        **{
            name: count_slower_than(run.latency, seconds)
            for name, seconds in SLOW_THRESHOLDS_SECONDS.items()
        },
    }


def count_slower_than(latency: LatencyRecorder, seconds: float) -> int:
    """How many syncs took longer than ``seconds``."""
    limit_us = seconds * 1_000_000
    return sum(1 for value in latency.values_us if value > limit_us)


def kept_up(report: dict[str, Any]) -> bool:
    """Whether the syncs came at the planned rate (else they ran back to back)."""
    return report["syncs_per_second"] >= 0.95 * report["plan"]["rate_per_second"]


def print_disk_report(report: dict[str, Any], console: Console) -> None:
    """The report as tables."""
    plan, sync = report["plan"], report["sync_call"]
    filesystem = report["filesystem"]
    console.print(
        f"[bold]relaymq bench disk[/bold]: {plan['message_bytes']}-byte write + {sync}, "
        f"paced at {plan['rate_per_second']:g}/s, in {plan['directory']}"
        f"{f' ({filesystem})' if filesystem else ''}"
        f"{'' if report['reserved'] else ', space not reserved'}"
    )
    if report["in_memory"]:
        console.print(
            f"[bold yellow]{plan['directory']} is on {filesystem} (memory): its syncs cost "
            "nothing and make nothing durable; measure the disk the data goes to[/bold yellow]"
        )
    print_steal_warning([report], console)
    if not kept_up(report):
        console.print(
            f"[bold yellow]the syncs could not keep up with {plan['rate_per_second']:g} a "
            "second and ran back to back[/bold yellow]"
        )
    console.print(syncs_table(report))
    if report["latency_ms"] is not None:
        console.print(percentile_table(f"write + {sync}, ms", report["latency_ms"]))
    if not report["in_memory"]:
        console.print(
            "Every durable confirm waits for at least one such sync: this is the floor of "
            "end-to-end latency on this disk for delivery after the fsync."
        )


def syncs_table(report: dict[str, Any]) -> Table:
    """How many syncs, how fast, and how many were slow."""
    table = Table(title="syncs")
    for column in ("syncs", "seconds", "syncs/s", *SLOW_THRESHOLDS_SECONDS, "bench CPU"):
        table.add_column(column.replace("over_", "> ").replace("ms", " ms"), justify="right")
    table.add_row(
        f"{report['syncs']:,}",
        f"{report['seconds']:.2f}",
        f"{report['syncs_per_second']:,.0f}",
        *(f"{report[name]:,}" for name in SLOW_THRESHOLDS_SECONDS),
        f"{report['bench_cpu_percent']:.0f}%",
    )
    return table
