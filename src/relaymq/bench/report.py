"""What a bench run prints: a live progress bar, then tables for people or JSON for machines.

Owns :func:`build_report` (the one JSON document of a run: plan, machine,
server, phases, latency, schedule lag, the server's fsync passes, verification),
:func:`print_report` (the same as rich tables) and :class:`LiveProgress`. The
rule that makes the figures worth trusting lives here too: when a confirmed
message was lost, no throughput figure is given (``throughput_withheld`` says
why), whatever the clock said.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from relaymq import __version__
from relaymq.bench.host import STEAL_WARNING_PERCENT
from relaymq.bench.runner import MEMORY_FILESYSTEMS
from relaymq.bench.verify import Verdict, verdict
from relaymq.bench.workloads import Phase, RunState

MEGABYTE = 1_000_000
FSYNC_QUANTILES = ("p50_at_most_ms", "p99_at_most_ms", "p99_9_at_most_ms")
FSYNC_SLOW_COUNTS = ("over_10ms", "over_100ms")


def machine() -> dict[str, Any]:
    """The machine the run happened on."""
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "relaymq": __version__,
    }


def cpu_model() -> str:
    """The CPU's model name (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_verdict(state: RunState) -> Verdict:
    """The delivery accounting of a finished run."""
    return verdict(state.publications, state.deliveries)


def withheld_reason(accounting: Verdict) -> str | None:
    """Why no throughput may be reported, if so: lost messages."""
    if accounting.lost:
        return f"{accounting.lost} confirmed message(s) were never delivered"
    return None


def phase_figures(phase: Phase, withheld: bool) -> dict[str, Any]:
    """One phase as JSON-able figures (rates ``None`` when withheld)."""
    seconds = phase.seconds
    server_cpu = phase.server_cpu_seconds
    return {
        "name": phase.name,
        "messages": phase.messages,
        "seconds": round(seconds, 4),
        "msgs_per_second": None if withheld else round(phase.messages / seconds, 1),
        "mb_per_second": None
        if withheld
        else round(phase.messages * phase.message_bytes / seconds / MEGABYTE, 3),
        "server_cpu_percent": None if server_cpu is None else round(100 * server_cpu / seconds, 1),
        "client_cpu_percent": round(100 * phase.client_cpu_seconds / seconds, 1),
        "host_steal_percent": share_of_machine(phase.steal_seconds, seconds),
    }


def share_of_machine(cpu_seconds: float | None, seconds: float) -> float | None:
    """``cpu_seconds`` as a percentage of all the machine's CPUs for ``seconds``."""
    if cpu_seconds is None:
        return None
    return round(100 * cpu_seconds / (seconds * (os.cpu_count() or 1)), 1)


def build_report(
    state: RunState, server: dict[str, Any], peak_rss_bytes: int | None
) -> dict[str, Any]:
    """The JSON document of a run."""
    plan = state.plan
    accounting = run_verdict(state)
    reason = withheld_reason(accounting)
    latency = state.latency.summary()
    schedule_lag = state.schedule_lag.summary() if plan.rate_per_second is not None else None
    plan_fields = {key: value for key, value in asdict(plan).items() if key != "tuning"}
    return {
        "workload": plan.workload,
        "protocol": plan.protocol,
        "plan": {**plan_fields, **asdict(plan.tuning)},
        "machine": machine(),
        "server": {**server, "peak_rss_bytes": peak_rss_bytes},
        "phases": [phase_figures(phase, reason is not None) for phase in state.phases],
        "latency_ms": None if latency is None else latency.to_dict(),
        "schedule_lag_ms": None if schedule_lag is None else schedule_lag.to_dict(),
        "fsync": state.fsync.figures(),
        "verification": {**accounting.to_dict(), "server_unacked": state.server_unacked},
        "throughput_withheld": reason,
    }


def data_on(server: dict[str, Any]) -> str:
    """``, data on ext4`` for a spawned server whose data filesystem is known."""
    filesystem = server.get("data_filesystem")
    return f", data on {filesystem}" if filesystem else ""


def print_measured(report: dict[str, Any], console: Console) -> None:
    """The tables every latency or throughput report starts with: a warning when the
    data was in memory, the phases' throughput, the latency and the schedule lag."""
    print_memory_warning(report["server"], console)
    console.print(phase_table(report))
    print_steal_warning(report["phases"], console)
    if report["latency_ms"] is not None:
        console.print(latency_table(report["latency_ms"]))
    if report["schedule_lag_ms"] is not None:
        console.print(schedule_lag_table(report["schedule_lag_ms"]))


def print_memory_warning(server: dict[str, Any], console: Console) -> None:
    """Warn when a spawned server's store was in memory, where fsyncs are free."""
    if server.get("data_filesystem") in MEMORY_FILESYSTEMS:
        console.print(
            f"[bold yellow]the store is on {server['data_filesystem']} (memory): its fsyncs "
            "cost nothing and make nothing durable; use --data-dir for a disk[/bold yellow]"
        )


def print_steal_warning(phases: list[dict[str, Any]], console: Console) -> None:
    """Warn when the hypervisor took much of the machine's CPU time during a phase."""
    worst = max((phase.get("host_steal_percent") or 0.0 for phase in phases), default=0.0)
    if worst >= STEAL_WARNING_PERCENT:
        console.print(
            f"[bold yellow]the hypervisor took {worst:.0f}% of this machine's CPU time "
            "during the run (steal time): the host was busy, and these figures show its "
            "load as well as RelayMQ's[/bold yellow]"
        )


def paced(plan: dict[str, Any]) -> str:
    """``, even-paced at 2000 msg/s`` for a paced plan, else nothing."""
    if plan.get("rate_per_second") is None:
        return ""
    return f", {plan.get('pacing', 'coarse')}-paced at {plan['rate_per_second']:g} msg/s"


def print_report(report: dict[str, Any], console: Console) -> None:
    """The report as tables."""
    plan = report["plan"]
    server = report["server"]
    console.print(
        f"[bold]relaymq bench {report['workload']}[/bold] over {report['protocol']}: "
        f"{plan['producers']} producer(s), {plan['consumers']} consumer(s), "
        f"{plan['message_bytes']}-byte messages, batch {plan['batch_messages']}, "
        f"linger {plan['linger_ms']} ms, ack linger {plan.get('ack_linger_ms', 0)} ms, "
        f"clients on {plan.get('event_loop', 'asyncio')}"
        f"{paced(plan)}"
        f"{'; early delivery' if plan.get('early_delivery') else ''}; "
        f"server {server['url']} "
        f"(fsync={server.get('fsync') or 'its own'}{data_on(server)})"
    )
    print_measured(report, console)
    fsync = report.get("fsync")
    if fsync is not None:
        console.print(fsync_table(fsync) if fsync["passes"] else "server fsync passes: none")
    console.print(verification_table(report["verification"]))
    rss = server.get("peak_rss_bytes")
    if rss is not None:
        console.print(f"server peak RSS: {rss / 2**20:,.0f} MiB")
    if report["throughput_withheld"]:
        console.print(f"[bold red]throughput withheld: {report['throughput_withheld']}[/bold red]")


def phase_table(report: dict[str, Any]) -> Table:
    """Throughput and CPU of each phase."""
    table = Table(title="throughput")
    for column in ("phase", "messages", "seconds", "msg/s", "MB/s", "server CPU", "bench CPU"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for phase in report["phases"]:
        table.add_row(
            phase["name"],
            f"{phase['messages']:,}",
            f"{phase['seconds']:.2f}",
            "withheld" if phase["msgs_per_second"] is None else f"{phase['msgs_per_second']:,.0f}",
            "withheld" if phase["mb_per_second"] is None else f"{phase['mb_per_second']:.1f}",
            percent(phase["server_cpu_percent"]),
            percent(phase["client_cpu_percent"]),
        )
    return table


def percent(value: float | None) -> str:
    """A CPU percentage cell."""
    return "?" if value is None else f"{value:.0f}%"


def latency_table(latency: dict[str, Any]) -> Table:
    """End-to-end latency percentiles."""
    return percentile_table(f"end-to-end latency, ms ({latency['count']:,} messages)", latency)


def schedule_lag_table(lag: dict[str, Any]) -> Table:
    """Percentiles of how late paced producers handed messages to the client."""
    # No message count in the title: it is the published count, and the title would wrap.
    return percentile_table("publisher lag behind schedule, ms", lag)


def percentile_table(title: str, figures: dict[str, Any]) -> Table:
    """One row of percentiles in milliseconds, from a
    :class:`~relaymq.bench.histogram.LatencySummary` as a dict."""
    table = Table(title=title)
    names = ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "mean_ms")
    for name in names:
        table.add_column(name.removesuffix("_ms").replace("_", "."), justify="right")
    table.add_row(*(f"{figures[name]:.3f}" for name in names))
    return table


def fsync_table(fsync: dict[str, Any]) -> Table:
    """The server's fsync passes during the measured window (bucket upper bounds)."""
    table = Table(title="server fsync passes during the run, ms (bucket upper bounds)")
    columns = ("passes", "mean", "p50 <=", "p99 <=", "p99.9 <=", "> 10 ms", "> 100 ms")
    for column in columns:
        table.add_column(column, justify="right")
    edges = [bucket["at_most_ms"] for bucket in fsync["buckets"] if bucket["at_most_ms"]]
    table.add_row(
        f"{fsync['passes']:,}",
        f"{fsync['mean_ms']:.3f}",
        *(bound_cell(fsync[name], max(edges, default=0)) for name in FSYNC_QUANTILES),
        *("?" if fsync[name] is None else f"{fsync[name]:,}" for name in FSYNC_SLOW_COUNTS),
    )
    return table


def bound_cell(bound_ms: float | None, last_edge_ms: float) -> str:
    """A bucket's upper edge; ``None`` means past the last finite one (no bound)."""
    return f"> {last_edge_ms:g}" if bound_ms is None else f"{bound_ms:g}"


def verification_table(verification: dict[str, Any]) -> Table:
    """Every confirmed message accounted for."""
    table = Table(title="verification")
    names = (
        "published",
        "expected",
        "received",
        "lost",
        "duplicated",
        "out_of_order",
        "failed_publishes",
        "server_unacked",
    )
    for name in names:
        table.add_column(name.replace("_", " "), justify="right")
    table.add_row(
        *("?" if verification[name] is None else f"{verification[name]:,}" for name in names)
    )
    return table


class LiveProgress:
    """Published and received messages, live, on standard error."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>12}"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,  # refreshed from the run's own tick: no thread of its own
            transient=True,
        )
        self.published = self.progress.add_task("published", total=None, rate="")
        self.received = self.progress.add_task("received", total=None, rate="")
        self.previous: tuple[int, int] = (0, 0)

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def tick(self, state: RunState, interval_seconds: float) -> None:
        """Show the state now."""
        published, received = state.publications.confirmed, state.received
        rates = (
            (published - self.previous[0]) / interval_seconds,
            (received - self.previous[1]) / interval_seconds,
        )
        self.previous = (published, received)
        self.progress.update(
            self.published,
            completed=published,
            total=state.plan.messages,
            rate=f"{rates[0]:,.0f}/s",
            description=state.stage[:12],
        )
        self.progress.update(
            self.received,
            completed=received,
            total=state.expected_deliveries,
            rate=f"{rates[1]:,.0f}/s",
        )
        self.progress.refresh()
