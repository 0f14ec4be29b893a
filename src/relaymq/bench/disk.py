"""``relaymq bench disk``: how long a small write and its ``fdatasync`` take, without RelayMQ.

Owns the measurement (:func:`measure_disk`), its JSON document and its table. Every
confirm under ``fsync=batch``, and every delivery without early delivery, waits for at
least one such sync, so these figures are a floor under the end-to-end latency on this
disk, and their tail (a flush the device holds for 100 ms) is one no broker that makes a
message durable before confirming it can hide there. Run it where the server's data goes
(``--data-dir``) before reading a latency figure, to know what the disk allows; PostgreSQL
ships ``pg_test_fsync`` for the same reason.

The file's space is reserved first, as the store reserves its segments', so a sync
flushes data and no growing file's metadata. Syncs are paced at ``--rate``; one that
outlasts its slot delays the next, and the missed slots are skipped, not caught up in a
burst. The file is deleted at the end.
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

from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.host import steal_seconds
from relaymq.bench.report import machine, percentile_table, print_steal_warning, share_of_machine
from relaymq.bench.runner import MEMORY_FILESYSTEMS, filesystem_of
from relaymq.store.local.space import UNSUPPORTED_ERRNOS, translate_os_error

RESERVED_BYTES = 64 << 20
"""The file's reserved size, the default segment size; writes wrap around inside it."""

SLOW_SYNC_MS = (10, 100)
sync_file = getattr(os, "fdatasync", os.fsync)


@dataclass(frozen=True)
class DiskPlan:
    """What ``relaymq bench disk`` measures."""

    directory: Path
    duration_seconds: float
    rate_per_second: float
    message_bytes: int


@dataclass
class DiskRun:
    """The syncs of one run and what the machine did meanwhile."""

    latency: LatencyRecorder
    seconds: float
    cpu_seconds: float
    steal_seconds: float | None


def measure_disk(plan: DiskPlan) -> DiskRun:
    """Write ``message_bytes`` and ``fdatasync`` them ``rate_per_second`` times a second for
    ``duration_seconds``, in a fresh file in ``directory``; each sync's duration, from the
    write to the sync's return. Raises the :class:`RelayError` of a failed write or sync."""
    try:
        with tempfile.NamedTemporaryFile(dir=plan.directory, prefix="relaymq-bench-") as file:
            reserve(file.fileno())
            return paced_syncs(file.fileno(), plan)
    except OSError as error:
        raise translate_os_error(error) from None


def reserve(descriptor: int) -> None:
    """Reserve the file's space and make that durable, where the platform can."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(descriptor, 0, RESERVED_BYTES)
        except OSError as error:
            if error.errno not in UNSUPPORTED_ERRNOS:
                raise
    os.fsync(descriptor)


def paced_syncs(descriptor: int, plan: DiskPlan) -> DiskRun:
    """The measured loop of :func:`measure_disk` on a reserved file."""
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
    return {
        "workload": "disk",
        "plan": {**asdict(plan), "directory": str(plan.directory)},
        "machine": machine(),
        "filesystem": filesystem_of(plan.directory),
        "syncs": syncs,
        "seconds": round(run.seconds, 4),
        "syncs_per_second": round(syncs / run.seconds, 1) if run.seconds else None,
        "bench_cpu_percent": round(100 * run.cpu_seconds / run.seconds, 1) if run.seconds else None,
        "host_steal_percent": None
        if run.steal_seconds is None
        else share_of_machine(run.steal_seconds, run.seconds),
        "latency_ms": None if summary is None else summary.to_dict(),
        **{f"over_{limit}ms": slower_than(run.latency, limit) for limit in SLOW_SYNC_MS},
    }


def slower_than(latency: LatencyRecorder, limit_ms: float) -> int:
    """How many syncs took longer than ``limit_ms``."""
    limit_us = limit_ms * 1000
    return sum(1 for value in latency.values_us if value > limit_us)


def print_disk_report(report: dict[str, Any], console: Console) -> None:
    """The report as tables."""
    plan = report["plan"]
    filesystem = report["filesystem"]
    console.print(
        f"[bold]relaymq bench disk[/bold]: {plan['message_bytes']}-byte write + fdatasync, "
        f"paced at {plan['rate_per_second']:g}/s, in {plan['directory']}"
        f"{f' ({filesystem})' if filesystem else ''}"
    )
    if filesystem in MEMORY_FILESYSTEMS:
        console.print(
            f"[bold yellow]{plan['directory']} is on {filesystem} (memory): its syncs cost "
            "nothing and make nothing durable; measure the disk the data goes to[/bold yellow]"
        )
    print_steal_warning([report], console)
    table = Table(title="syncs")
    for column in ("syncs", "seconds", "syncs/s", "> 10 ms", "> 100 ms", "bench CPU"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{report['syncs']:,}",
        f"{report['seconds']:.2f}",
        f"{report['syncs_per_second']:,.0f}",
        str(report["over_10ms"]),
        str(report["over_100ms"]),
        f"{report['bench_cpu_percent']:.0f}%",
    )
    console.print(table)
    if report["latency_ms"] is not None:
        console.print(percentile_table("write + fdatasync, ms", report["latency_ms"]))
    console.print(
        "Every durable confirm waits for at least one such sync: this is the floor of "
        "end-to-end latency on this disk for delivery after the fsync."
    )


def command(directory: Path, duration: float, rate: float, message_bytes: int) -> dict[str, Any]:
    """Measure and return the report (the CLI prints it)."""
    plan = DiskPlan(directory, duration, rate, message_bytes)
    return build_disk_report(plan, measure_disk(plan))
