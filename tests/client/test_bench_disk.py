"""``relaymq bench disk``: paced write + sync pairs in the given directory, their
percentiles and slow counts, nothing left behind, and clear errors.

The timing checks replace the sync with one that never touches the disk: a real disk's
stalls (this project's CI machine has syncs of 10-100 ms in most minutes) would make them
fail for the disk's reasons, not the bench's."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from relaymq.bench import disk
from relaymq.bench.disk import DiskPlan, build_disk_report, measure_disk
from relaymq.bench.runner import MEMORY_FILESYSTEMS, filesystem_of
from relaymq.errors import InvalidArgument
from tests.client.test_bench import BENCH_TIMEOUT_SECONDS, RELAYMQ


def bench_disk(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``relaymq bench disk ARGUMENTS`` as a user runs it."""
    return subprocess.run(
        [*RELAYMQ, "bench", "disk", *arguments],
        capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the sync with a no-op that records the descriptor it was given."""
    synced: list[int] = []
    monkeypatch.setattr(disk, "sync_file", synced.append)
    return synced


def test_a_run_syncs_in_the_directory_and_leaves_nothing(tmp_path: Path) -> None:
    done = bench_disk("--data-dir", str(tmp_path), "--duration", "0.5", "--rate", "100", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["workload"] == "disk"
    assert report["plan"]["directory"] == str(tmp_path)
    assert report["filesystem"] == filesystem_of(tmp_path)
    assert report["sync_call"] == "fdatasync"
    assert report["reserved"] is (filesystem_of(tmp_path) not in MEMORY_FILESYSTEMS)
    assert 1 <= report["syncs"] <= 50
    latency = report["latency_ms"]
    assert latency["count"] == report["syncs"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert report["over_10ms"] >= report["over_100ms"] >= 0
    assert list(tmp_path.iterdir()) == []


def test_syncs_are_paced_at_the_rate(syncs: list[int], tmp_path: Path) -> None:
    report = build_disk_report(*plan_and_run(DiskPlan(tmp_path, 1.0, 100, 256)))
    assert 90 <= report["syncs"] <= 100  # 100 slots in the second, none sent in a burst
    assert 0.98 <= report["seconds"] < 1.2  # spread over the second, not done at once
    assert len(syncs) == report["syncs"]


def test_a_slow_sync_is_counted_and_its_missed_slots_are_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    count = 0

    def sync(descriptor: int) -> None:
        nonlocal count
        count += 1
        if count == 3:
            time.sleep(0.15)  # a flush the device held

    monkeypatch.setattr(disk, "sync_file", sync)
    report = build_disk_report(*plan_and_run(DiskPlan(tmp_path, 0.4, 100, 256)))
    assert report["over_100ms"] == 1
    assert report["over_10ms"] >= 1
    # 40 slots, 15 of them inside the stall: skipped, not sent in a burst after it.
    assert report["syncs"] <= 28


def test_each_sync_follows_its_own_write_and_writes_wrap_in_the_reserved_space(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, int, int]] = []
    real_pwrite = os.pwrite

    def pwrite(descriptor: int, data: bytes, position: int) -> int:
        calls.append(("write", descriptor, position))
        return real_pwrite(descriptor, data, position)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(disk, "sync_file", lambda descriptor: calls.append(("sync", descriptor, 0)))
    monkeypatch.setattr(disk, "RESERVED_BYTES", 1000)
    run = measure_disk(DiskPlan(tmp_path, 0.1, 100, 300))
    assert [kind for kind, _, _ in calls] == ["write", "sync"] * len(run.latency.values_us)
    assert len({descriptor for _, descriptor, _ in calls}) == 1
    positions = [position for kind, _, position in calls if kind == "write"]
    assert positions == [(300 * index) % 900 for index in range(len(positions))]


def test_the_text_report_names_the_floor_it_measured(tmp_path: Path) -> None:
    done = bench_disk("--data-dir", str(tmp_path), "--duration", "0.2", "--rate", "50")
    assert done.returncode == 0, done.stderr
    assert "write + fdatasync, ms" in done.stdout
    in_memory = filesystem_of(tmp_path) in MEMORY_FILESYSTEMS
    assert ("floor of end-to-end latency" in done.stdout) is not in_memory
    assert ("make nothing durable" in done.stdout) is in_memory


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm tmpfs on this system")
def test_a_directory_in_memory_is_warned_about() -> None:
    memory = Path(tempfile.mkdtemp(prefix="relaymq-test-", dir="/dev/shm"))
    try:
        done = bench_disk("--data-dir", str(memory), "--duration", "0.2", "--rate", "50")
        assert done.returncode == 0, done.stderr
        assert "(tmpfs)" in done.stdout
        assert "cost nothing and make nothing durable" in done.stdout
        assert "floor of end-to-end latency" not in done.stdout
        done = bench_disk("--data-dir", str(memory), "--duration", "0.1", "--json")
        assert json.loads(done.stdout)["in_memory"] is True
    finally:
        shutil.rmtree(memory)


def test_syncs_that_cannot_keep_up_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(disk, "sync_file", lambda descriptor: time.sleep(0.02))
    report = build_disk_report(*plan_and_run(DiskPlan(tmp_path, 0.2, 1000, 256)))
    assert not disk.kept_up(report)
    assert disk.kept_up({**report, "syncs_per_second": 1000.0})


def test_a_full_disk_is_an_error_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def full(descriptor: int, data: bytes, position: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError, match="No space left"):
        measure_disk(DiskPlan(tmp_path, 0.1, 100, 256))
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    done = bench_disk("--data-dir", str(target), "--duration", "0.1")
    assert done.returncode == 2
    assert "is a file" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--spawn"], "--spawn is not used by disk"),
        (["--messages", "10"], "--messages is not used by disk"),
        (["--url", "http://127.0.0.1:9"], "--url is not used by disk"),
        (["--early-delivery"], "--early-delivery is not used by disk"),
        (["--data-dir", "/nonexistent/relaymq"], "does not exist"),
        (["--rate", "0"], "--rate"),
        (["--message-bytes", str(disk.MAX_WRITE_BYTES + 1)], "a write is 1 to"),
    ],
)
def test_bad_arguments_are_usage_errors(arguments: list[str], message: str) -> None:
    done = bench_disk(*arguments, "--duration", "0.1")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_plan_outside_its_bounds_is_invalid(tmp_path: Path) -> None:
    for duration, rate, size in ((0, 100, 256), (1, 0, 256), (1, 100, disk.MAX_WRITE_BYTES + 1)):
        with pytest.raises(InvalidArgument):
            DiskPlan(tmp_path, duration, rate, size)


def test_the_url_from_the_environment_is_no_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [*RELAYMQ, "bench", "disk", "--data-dir", str(tmp_path), "--duration", "0.1"],
        capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS,
        env={**os.environ, "RELAYMQ_URL": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def plan_and_run(plan: DiskPlan) -> tuple[DiskPlan, disk.DiskRun]:
    """``plan`` and its run, for :func:`build_disk_report`."""
    return plan, measure_disk(plan)
