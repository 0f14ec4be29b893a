"""``relaymq bench``'s report of the server's fsync passes in the measured window: the
bucket arithmetic on hand-made histograms, the parse of the server's own exposition,
and whole runs against a spawned and an attached server."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from rich.console import Console

from relaymq.api.metrics import fsync_family
from relaymq.bench.fsync import (
    FsyncProbe,
    FsyncReading,
    FsyncWindow,
    parse_fsync_histogram,
    summarize,
)
from relaymq.bench.report import build_report, print_report
from relaymq.broker.fsync_timings import FSYNC_BUCKETS_SECONDS, FsyncTimings
from tests.client.conftest import TOKEN, free_port
from tests.client.test_bench import BENCH_TIMEOUT_SECONDS, fabricated_state, run_bench
from tests.server.conftest import RunningServer

BOUNDS_SECONDS = (0.001, 0.01, 0.1)  # 1 ms, 10 ms, 100 ms, then +Inf


def reading(per_bucket: list[int], sum_seconds: float = 0.0) -> FsyncReading:
    """A cumulative reading over :data:`BOUNDS_SECONDS` from per-bucket counts."""
    cumulative, running = [], 0
    for count in per_bucket:
        running += count
        cumulative.append(running)
    return FsyncReading(BOUNDS_SECONDS, tuple(cumulative), sum_seconds)


def phases(*readings: tuple[FsyncReading | None, FsyncReading | None]) -> FsyncWindow:
    """A window over phases with these (start, end) readings."""
    window = FsyncWindow()
    for start, end in readings:
        window.start(start)
        window.stop(end)
    return window


def window(before: list[int], after: list[int], sums: tuple[float, float] = (0, 0)) -> dict:
    """The figures of the passes between two hand-made readings."""
    figures = phases((reading(before, sums[0]), reading(after, sums[1]))).figures()
    assert figures is not None
    return figures


# -- the bucket arithmetic --------------------------------------------------------------------


def test_two_phases_add_up_and_what_came_between_them_is_left_out() -> None:
    first = (reading([0, 0, 0, 0], 0.0), reading([10, 0, 0, 0], 0.01))
    second = (reading([50, 3, 0, 0], 0.2), reading([60, 3, 1, 0], 0.4))  # 40 + 3 between
    figures = phases(first, second).figures()
    assert figures is not None
    assert figures["passes"] == 21
    assert math.isclose(figures["mean_ms"], (0.01 + 0.2) / 21 * 1000, rel_tol=1e-6)
    assert phases(first, (None, reading([60, 3, 1, 0]))).figures() is None


def test_quantiles_are_the_upper_edges_of_the_difference() -> None:
    # Before the window: 7 passes the window must not count. In it: 90, 8, 1, 1.
    figures = window([5, 2, 0, 0], [95, 10, 1, 1], sums=(0.004, 0.004 + 0.5))
    assert figures["passes"] == 100
    assert figures["mean_ms"] == 5.0
    assert figures["p50_at_most_ms"] == 1.0
    assert figures["p99_at_most_ms"] == 100.0  # the 99th pass is in the 10-100 ms bucket
    assert figures["p99_9_at_most_ms"] is None  # in the +Inf bucket: no bound
    assert figures["over_10ms"] == 2
    assert figures["over_100ms"] == 1
    assert [bucket["passes"] for bucket in figures["buckets"]] == [90, 8, 1, 1]
    assert [bucket["at_most_ms"] for bucket in figures["buckets"]] == [1.0, 10.0, 100.0, None]


def test_an_empty_difference_is_zero_passes_and_no_quantiles() -> None:
    figures = window([3, 1, 0, 0], [3, 1, 0, 0])
    assert figures["passes"] == 0
    assert figures["mean_ms"] is None
    assert figures["p50_at_most_ms"] is figures["p99_at_most_ms"] is None
    assert figures["p99_9_at_most_ms"] is None
    assert figures["over_10ms"] == figures["over_100ms"] == 0


def test_every_pass_in_the_inf_bucket_has_no_bound_and_counts_as_slow() -> None:
    figures = window([0, 0, 0, 0], [0, 0, 0, 3], sums=(0, 36.0))
    assert figures["passes"] == 3
    assert figures["mean_ms"] == 12_000.0
    assert figures["p50_at_most_ms"] is figures["p99_9_at_most_ms"] is None
    assert figures["over_10ms"] == figures["over_100ms"] == 3


def test_a_quantile_on_a_bucket_boundary_is_exact() -> None:
    # 999 of 1,000 passes at most 1 ms: p99.9 is 1 ms; one more slow pass moves it.
    assert window([0] * 4, [999, 1, 0, 0])["p99_9_at_most_ms"] == 1.0
    assert window([0] * 4, [998, 2, 0, 0])["p99_9_at_most_ms"] == 10.0
    assert window([0] * 4, [50, 50, 0, 0])["p50_at_most_ms"] == 1.0
    assert window([0] * 4, [49, 51, 0, 0])["p50_at_most_ms"] == 10.0


def test_a_restarted_server_or_other_buckets_give_no_figures() -> None:
    restarted = phases((reading([10, 5, 0, 0]), reading([2, 0, 0, 0])))
    assert restarted.figures() is None
    other = FsyncReading((0.002, 0.01, 0.1), (0, 0, 0, 0), 0.0)
    assert phases((reading([0, 0, 0, 0]), other)).figures() is None
    assert phases((None, reading([1, 0, 0, 0]))).figures() is None
    assert phases((reading([1, 0, 0, 0]), None)).figures() is None


def test_without_a_10_ms_edge_the_slow_count_is_unknown() -> None:
    layout = FsyncReading((0.001, 0.05, 0.1), (1, 2, 2, 2), 0.01)
    figures = summarize(layout)
    assert figures.over_10ms is None
    assert figures.over_100ms == 0


# -- the server's exposition ------------------------------------------------------------------


class OneFamily:
    """A collector yielding one ready family."""

    def __init__(self, timings: FsyncTimings) -> None:
        self.timings = timings

    def collect(self) -> Iterator[Metric]:
        yield fsync_family(self.timings)


def exposition(durations_seconds: list[float]) -> str:
    """The text ``GET /metrics`` serves for the server's fsync histogram."""
    timings = FsyncTimings()
    for duration in durations_seconds:
        timings.observe(duration)
    registry = CollectorRegistry()
    registry.register(OneFamily(timings))
    return generate_latest(registry).decode()


def test_the_servers_exposition_reads_back_into_its_buckets() -> None:
    durations = [0.0004] * 50 + [0.003] * 45 + [0.01] * 3 + [0.02, 1.1]
    before = parse_fsync_histogram(exposition([]))
    after = parse_fsync_histogram(exposition(durations))
    assert before is not None and after is not None
    assert after.bounds_seconds == FSYNC_BUCKETS_SECONDS
    figures = phases((before, after)).figures()
    assert figures is not None
    assert figures["passes"] == 100
    assert math.isclose(figures["mean_ms"], sum(durations) / 100 * 1000, rel_tol=1e-3)
    assert figures["p50_at_most_ms"] == 0.5
    assert figures["p99_at_most_ms"] == 25.0
    assert figures["p99_9_at_most_ms"] == 2500.0
    assert figures["over_10ms"] == 2  # exactly 10 ms is in the 10 ms bucket, not over it
    assert figures["over_100ms"] == 1


def test_an_exposition_without_the_metric_reads_as_unknown() -> None:
    assert parse_fsync_histogram("# HELP up Up.\n# TYPE up gauge\nup 1\n") is None
    assert parse_fsync_histogram("this is { not prometheus\n") is None
    assert parse_fsync_histogram("") is None


async def test_an_unreachable_or_refusing_server_reads_as_unknown(server_url: str) -> None:
    assert await FsyncProbe(f"http://127.0.0.1:{free_port()}", TOKEN).read() is None
    if TOKEN:  # a server with auth refuses ``/metrics`` without the token
        assert await FsyncProbe(server_url, None).read() is None
    assert await FsyncProbe(server_url, TOKEN).read() is not None


# -- the report -------------------------------------------------------------------------------


def printed(fsync: dict | None) -> str:
    """The human report of a fabricated run whose fsync figures are ``fsync``."""
    state = fabricated_state([(producer, sequence) for producer in (0, 1) for sequence in range(5)])
    report = build_report(state, {"spawned": False, "url": "x", "fsync": None}, None)
    assert report["fsync"] is None  # never read
    report["fsync"] = fsync
    console = Console(file=io.StringIO(), width=120)
    print_report(report, console)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_human_report_prints_a_table_a_line_or_nothing() -> None:
    slow = window([0] * 4, [95, 2, 2, 1], sums=(0, 2.0))
    text = printed(slow)
    assert "server fsync passes during the run, ms (bucket upper bounds)" in text
    assert "> 100" in text  # p99.9 in the +Inf bucket: above the last finite edge
    assert "server fsync passes: none" in printed(window([0] * 4, [0] * 4))
    assert "fsync passes" not in printed(None)


# -- whole runs -------------------------------------------------------------------------------


def assert_passes_measured(fsync: dict | None) -> None:
    """Passes counted, quantiles ordered (``None``, past the last edge, is the largest)."""
    assert fsync is not None
    assert fsync["passes"] > 0
    assert fsync["passes"] == sum(bucket["passes"] for bucket in fsync["buckets"])
    bounds = [fsync[name] for name in ("p50_at_most_ms", "p99_at_most_ms", "p99_9_at_most_ms")]
    ordered = [math.inf if bound is None else bound for bound in bounds]
    assert ordered == sorted(ordered)
    assert 0 <= fsync["over_100ms"] <= fsync["over_10ms"] <= fsync["passes"]
    assert fsync["mean_ms"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "arguments",
    [
        ["latency", "--duration", "1", "--rate", "500"],
        ["queue", "--messages", "3000", "--backlog"],  # two phases: one window over both
    ],
)
def test_a_spawned_batch_server_reports_its_fsync_passes(arguments: list[str]) -> None:
    status, report = run_bench(*arguments)
    assert status == 0
    assert report["server"]["fsync"] == "batch"
    assert_passes_measured(report["fsync"])


@pytest.mark.slow
def test_a_server_that_never_fsyncs_reports_zero_passes() -> None:
    # Zero, not null: the histogram was read, and no pass happened. null is for unknown.
    status, report = run_bench("latency", "--duration", "1", "--rate", "500", "--fsync", "never")
    assert status == 0
    fsync = report["fsync"]
    assert fsync is not None
    assert fsync["passes"] == 0
    assert fsync["p99_at_most_ms"] is None
    assert fsync["over_10ms"] == fsync["over_100ms"] == 0


@pytest.mark.slow
def test_an_attached_server_reports_its_fsync_passes(
    running_server: RunningServer, namespace: str
) -> None:
    command = [
        sys.executable,
        "-c",
        "from relaymq.cli.main import main; main()",
        "bench",
        *("latency", "--duration", "1", "--rate", "200"),
        *("--url", running_server.base_url, "-n", namespace),
        *(["--token", TOKEN] if TOKEN else []),
        *("--json", "--no-progress"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["server"]["spawned"] is False
    assert_passes_measured(report["fsync"])
