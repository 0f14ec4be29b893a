"""``relaymq bench``: every workload end to end against a spawned server, and the
accounting that refuses a throughput figure when a message was lost."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from rich.console import Console

from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.loops import default_event_loop, loop_factory
from relaymq.bench.payload import decode_payload, encode_payload
from relaymq.bench.report import build_report, print_measured
from relaymq.bench.runner import (
    MEMORY_FILESYSTEMS,
    filesystem_of,
    progress_interval_seconds,
    tick_forever,
)
from relaymq.bench.server_stats import ServerSample
from relaymq.bench.transports import ProducerPlan, Tuning, WebSocketProducer
from relaymq.bench.verify import Deliveries, Publications, verdict
from relaymq.bench.workloads import BenchPlan, Mark, Phase, RunState

BENCH_TIMEOUT_SECONDS = 120
STALL_SECONDS = 0.02
# A server the bench stopped is gone at once, unless it was left running; this allows
# for a loaded machine reaping it.
STOPPED_SECONDS = 10
RELAYMQ = [sys.executable, "-c", "from relaymq.cli.main import main; main()"]


def run_bench(*arguments: str) -> tuple[int, dict]:
    """``relaymq bench ... --spawn --json``: exit status and the JSON document."""
    command = [*RELAYMQ, "bench", *arguments, "--spawn", "--json", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "phases", "subscriptions"),
    [
        (["queue", "--messages", "3000", "--producers", "2", "--consumers", "2"],
         ["publish", "end_to_end"], 1),
        (["queue", "--messages", "3000", "--backlog"], ["publish", "consume"], 1),
        (["fanout", "--messages", "2000", "--subscriptions", "3"], ["publish", "deliver"], 3),
        (["stream", "--messages", "3000", "--partitions", "2"], ["append", "replay"], 1),
        (["latency", "--duration", "1", "--rate", "500"], ["publish", "end_to_end"], 1),
        (["queue", "--messages", "2000", "--protocol", "http", "--batch-messages", "200"],
         ["publish", "end_to_end"], 1),
        (["latency", "--duration", "1", "--rate", "500", "--protocol", "http"],
         ["publish", "end_to_end"], 1),
    ],
)  # fmt: skip
def test_every_workload_delivers_everything_and_reports(
    arguments: list[str], phases: list[str], subscriptions: int
) -> None:
    status, report = run_bench(*arguments)
    assert status == 0
    verification = report["verification"]
    assert verification["ok"] is True
    assert verification["lost"] == verification["failed_publishes"] == 0
    assert verification["expected"] == verification["published"] * subscriptions
    assert verification["received"] == verification["expected"] > 0
    assert verification["server_unacked"] == 0
    assert [phase["name"] for phase in report["phases"]] == phases
    assert all(phase["msgs_per_second"] > 0 for phase in report["phases"])
    assert report["throughput_withheld"] is None
    latency = report["latency_ms"]
    assert latency["count"] == verification["received"]
    assert 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"] + 0.01
    assert report["server"]["spawned"] is True
    assert report["server"]["fsync"] == "batch"
    assert report["server"]["peak_rss_bytes"] > 0
    assert report["phases"][0]["server_cpu_percent"] is not None
    if sys.platform == "linux":
        assert all(phase["host_steal_percent"] >= 0 for phase in report["phases"])
    assert_schedule_lag(report, paced="--rate" in arguments)


def assert_schedule_lag(report: dict, paced: bool) -> None:
    """A paced run reports the lag of every published message; an unpaced one none."""
    lag = report["schedule_lag_ms"]
    if not paced:
        assert lag is None
        return
    assert lag["count"] == report["verification"]["published"] > 0
    assert 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"] + 0.01
    assert lag["mean_ms"] >= 0


def test_payload_round_trip() -> None:
    payload = encode_payload(12, 345, 6789, 256)
    assert len(payload) == 256
    assert decode_payload(payload) == (12, 345, 6789)
    with pytest.raises(ValueError):
        decode_payload(b"not a bench message at all, no, not at all")


def fabricated_state(received: list[tuple[int, int]]) -> RunState:
    """Two producers with five confirmed messages each; ``received`` delivered."""
    publications = Publications(2)
    for producer in range(2):
        for sequence in range(5):
            publications.confirm(producer, sequence)
    deliveries = Deliveries(publications)
    for producer, sequence in received:
        deliveries.receive(producer, sequence)
    state = RunState(BenchPlan("queue", messages=10), "test", publications, [deliveries])
    start, end = Mark(0.0, 0.0, 0.0), Mark(2.0, 1.0, 1.0)
    state.phases.append(Phase("publish", 10, 256, start, end))
    return state


def test_loss_duplicates_and_order_are_counted() -> None:
    received = [(0, 0), (0, 2), (0, 1), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3)]
    state = fabricated_state(received)
    accounting = verdict(state.publications, state.deliveries)
    assert (accounting.published, accounting.received) == (10, 7)
    assert accounting.lost == 3  # 0/3, 0/4, 1/4
    assert accounting.duplicated == 1
    assert accounting.out_of_order == 1  # 0/1 after 0/2
    assert not accounting.ok


def test_a_lost_message_withholds_every_throughput_figure() -> None:
    state = fabricated_state([(producer, sequence) for producer in (0, 1) for sequence in range(4)])
    report = build_report(state, {"spawned": False, "url": "x", "fsync": None}, None)
    assert report["verification"]["lost"] == 2
    assert report["throughput_withheld"] == "2 confirmed message(s) were never delivered"
    assert [phase["msgs_per_second"] for phase in report["phases"]] == [None]
    assert [phase["mb_per_second"] for phase in report["phases"]] == [None]


def test_a_complete_run_reports_its_throughput() -> None:
    state = fabricated_state([(producer, sequence) for producer in (0, 1) for sequence in range(5)])
    report = build_report(state, {"spawned": False, "url": "x", "fsync": None}, None)
    assert report["throughput_withheld"] is None
    assert report["phases"][0]["msgs_per_second"] == 5.0
    assert report["phases"][0]["server_cpu_percent"] == 50.0


def test_the_hypervisors_steal_time_is_reported_and_warned_about() -> None:
    cpus = os.cpu_count() or 1
    state = fabricated_state([])
    state.phases[0] = Phase(
        "publish", 10, 256, Mark(0.0, 0.0, 0.0, 100.0), Mark(2.0, 1.0, 1.0, 100.0 + 0.2 * cpus)
    )
    busy = build_report(state, {"spawned": False, "url": "x", "fsync": None}, None)
    assert busy["phases"][0]["host_steal_percent"] == 10.0
    state.phases[0] = Phase(
        "publish", 10, 256, Mark(0.0, 0.0, 0.0, 100.0), Mark(2.0, 1.0, 1.0, 100.0 + 0.01 * cpus)
    )
    quiet = build_report(state, {"spawned": False, "url": "x", "fsync": None}, None)
    assert quiet["phases"][0]["host_steal_percent"] == 0.5
    assert "hypervisor took 10%" in printed(busy)
    assert "hypervisor" not in printed(quiet)
    assert "hypervisor" not in printed(
        build_report(fabricated_state([]), {"spawned": False, "url": "x", "fsync": None}, None)
    )


def printed(report: dict[str, Any]) -> str:
    """What ``print_measured`` shows of ``report``, as plain text."""
    console = Console(record=True, width=200)
    print_measured(report, console)
    return console.export_text()


# -- the clients' event loop, the store's filesystem -----------------------------------------


def test_the_clients_event_loop_is_uvloop_where_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    assert default_event_loop() == "uvloop"
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is asyncio.new_event_loop
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        loop_factory("trio")


def test_a_missing_uvloop_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(ValueError, match="uvloop is not installed; use --event-loop asyncio"):
        loop_factory("uvloop")


@pytest.mark.slow
@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_a_run_names_the_event_loop_its_clients_ran_on(event_loop: str) -> None:
    status, report = run_bench(
        "latency", "--duration", "0.5", "--rate", "400", "--event-loop", event_loop
    )
    assert status == 0
    assert report["plan"]["event_loop"] == event_loop
    assert report["verification"]["ok"] is True


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm tmpfs on this system")
def test_a_store_in_memory_is_named_and_warned_about() -> None:
    memory = Path(tempfile.mkdtemp(prefix="relaymq-test-", dir="/dev/shm"))
    try:
        arguments = ("latency", "--duration", "0.5", "--rate", "200", "--data-dir", str(memory))
        status, report = run_bench(*arguments)
        assert status == 0
        assert report["server"]["data_filesystem"] == filesystem_of(memory) == "tmpfs"
        done = bench_text(*arguments)
        assert "data on tmpfs" in done.stdout
        assert "cost nothing and make nothing durable" in done.stdout
        assert list(memory.iterdir()) == []  # each run removed its store
    finally:
        shutil.rmtree(memory)


@pytest.mark.slow
def test_a_store_on_disk_is_named_without_a_warning(tmp_path: Path) -> None:
    if filesystem_of(tmp_path) in MEMORY_FILESYSTEMS:
        pytest.skip("the temporary directory is in memory here")  # /tmp on tmpfs
    done = bench_text("latency", "--duration", "0.5", "--rate", "200", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"data on {filesystem_of(tmp_path)}" in done.stdout
    assert "make nothing durable" not in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_filesystem_is_the_last_mounted_on_the_longest_matching_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mounts = [
        SimpleNamespace(mountpoint="/", fstype="ext4"),
        SimpleNamespace(mountpoint=str(tmp_path), fstype="xfs"),
        SimpleNamespace(mountpoint=str(tmp_path / "data"), fstype="ext4"),
        SimpleNamespace(mountpoint=str(tmp_path / "data"), fstype="tmpfs"),  # mounted over
        SimpleNamespace(mountpoint=str(tmp_path / "data2"), fstype="btrfs"),
    ]
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: mounts)
    (tmp_path / "data" / "store").mkdir(parents=True)
    assert filesystem_of(tmp_path / "data" / "store") == "tmpfs"
    assert filesystem_of(tmp_path / "other") == "xfs"
    assert filesystem_of(Path("/")) == "ext4"
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: [])
    assert filesystem_of(tmp_path) is None


def test_a_terminated_bench_stops_the_server_it_spawned(tmp_path: Path) -> None:
    command = [*RELAYMQ, "bench", "latency", "--spawn", "--duration", "60", "--no-progress"]
    bench = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + BENCH_TIMEOUT_SECONDS
        while not psutil.Process(bench.pid).children():
            assert bench.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        [server] = psutil.Process(bench.pid).children()
        time.sleep(3)  # up and measuring
        bench.terminate()
        bench.wait(BENCH_TIMEOUT_SECONDS)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
    assert bench.returncode != 0
    server.wait(STOPPED_SECONDS)  # psutil.TimeoutExpired if it outlived the bench
    assert list(tmp_path.iterdir()) == []


def test_a_data_directory_needs_a_spawned_server(tmp_path: Path) -> None:
    done = subprocess.run(
        [*RELAYMQ, "bench", "latency", "--data-dir", str(tmp_path), "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--data-dir needs --spawn" in done.stderr


def bench_text(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``relaymq bench ... --spawn`` with its text report (no progress bar)."""
    return subprocess.run(
        [*RELAYMQ, "bench", *arguments, "--spawn", "--no-progress"],
        capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


# -- pacing: what a payload's sent_ns means ------------------------------------------------


def producer_plan(messages: int, rate_per_second: float | None) -> ProducerPlan:
    """A plan for one producer of ``messages``."""
    return ProducerPlan(0, "subject", messages, None, rate_per_second, "test")


class RecordingPublisher:
    """The SDK publisher's surface the bench uses: records when each payload was handed
    over; the ``stall_at``-th publish blocks for ``STALL_SECONDS`` (backpressure)."""

    def __init__(self, stall_at: int) -> None:
        self.handed: list[tuple[bytes, int]] = []
        self.stall_at = stall_at

    async def publish(self, subject: str, payload: bytes, key: str) -> asyncio.Future[Any]:
        self.handed.append((payload, time.perf_counter_ns()))
        if len(self.handed) == self.stall_at + 1:
            await asyncio.sleep(STALL_SECONDS)
        confirmed = asyncio.get_running_loop().create_future()
        confirmed.set_result(None)
        return confirmed

    async def flush(self) -> None:
        pass


class RecordingClient:
    """An SDK client whose publisher records instead of sending."""

    def __init__(self, stall_at: int) -> None:
        self.recording = RecordingPublisher(stall_at)

    def publisher(self, **options: Any) -> RecordingPublisher:
        return self.recording


async def test_a_websocket_payload_carries_the_send_time_and_a_stall_shows_as_lag() -> None:
    client = RecordingClient(stall_at=10)
    tuning = Tuning(256, 100, 0, 1_000, 100, 100)
    producer = WebSocketProducer(client, tuning)  # type: ignore[arg-type]
    publications, lag = Publications(1), LatencyRecorder()
    rate = 1_000
    before = time.perf_counter_ns()
    await producer.run(producer_plan(40, rate), publications, lag)
    assert publications.confirmed == 40
    assert len(lag.values_us) == 40
    for sequence, (payload, handed_ns) in enumerate(client.recording.handed):
        _, decoded_sequence, sent_ns = decode_payload(payload)
        assert decoded_sequence == sequence
        assert before + int(sequence * 1e9 / rate) <= sent_ns <= handed_ns
        # Stamped right before the hand-over, even for the messages the stall made
        # late (stamped with their due time they would be ~15 ms older).
        assert handed_ns - sent_ns < 2_000_000
    # The messages due during the stall left late: the pacer's lag shows it.
    assert max(lag.values_us) >= STALL_SECONDS * 1e6 - 5_000


def test_a_paced_run_redraws_and_samples_once_a_second() -> None:
    assert progress_interval_seconds(BenchPlan("latency", rate_per_second=2_000)) == 1.0
    assert progress_interval_seconds(BenchPlan("queue")) == 0.25


async def test_the_ticker_samples_the_server_at_its_interval() -> None:
    class CountingStats:
        peak_rss_bytes = None

        def __init__(self) -> None:
            self.samples = 0

        async def sample(self) -> ServerSample:
            self.samples += 1
            return ServerSample(None, None)

    stats = CountingStats()
    state = RunState(BenchPlan("latency", rate_per_second=10), "test", Publications(1))
    ticker = asyncio.create_task(tick_forever(state, stats, None, 0.1))
    await asyncio.sleep(0.35)
    ticker.cancel()
    assert 3 <= stats.samples <= 4  # at 0, 0.1, 0.2 and 0.3 s (a busy machine may miss the last)
