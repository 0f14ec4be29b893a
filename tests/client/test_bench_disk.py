"""``relaymq bench disk``: paced write + ``fdatasync`` pairs in the given directory, their
percentiles and slow counts, the file removed after, and clear errors."""

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
from relaymq.bench.runner import filesystem_of
from relaymq.errors import StorageFull
from tests.client.test_bench import BENCH_TIMEOUT_SECONDS, RELAYMQ


def bench_disk(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``relaymq bench disk ARGUMENTS`` as a user runs it."""
    return subprocess.run(
        [*RELAYMQ, "bench", "disk", *arguments],
        capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_a_run_syncs_at_its_rate_in_the_directory_and_leaves_nothing(tmp_path: Path) -> None:
    done = bench_disk("--data-dir", str(tmp_path), "--duration", "1", "--rate", "100", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["workload"] == "disk"
    assert report["plan"]["directory"] == str(tmp_path)
    assert report["filesystem"] == filesystem_of(tmp_path)
    assert 80 <= report["syncs"] <= 101  # paced: 100 a second, never a burst
    assert 0.95 <= report["seconds"] < 1.5  # spread over the second, not done at once
    assert 75 <= report["syncs_per_second"] <= 101
    latency = report["latency_ms"]
    assert latency["count"] == report["syncs"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert report["over_10ms"] >= report["over_100ms"] >= 0
    assert list(tmp_path.iterdir()) == []


def test_the_text_report_names_the_floor_it_measured(tmp_path: Path) -> None:
    done = bench_disk("--data-dir", str(tmp_path), "--duration", "0.3", "--rate", "100")
    assert done.returncode == 0, done.stderr
    assert "write + fdatasync, ms" in done.stdout
    assert "floor of end-to-end latency" in done.stdout
    assert "make nothing durable" not in done.stdout or filesystem_of(tmp_path) == "tmpfs"


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm tmpfs on this system")
def test_a_directory_in_memory_is_warned_about() -> None:
    memory = Path(tempfile.mkdtemp(prefix="relaymq-test-", dir="/dev/shm"))
    try:
        done = bench_disk("--data-dir", str(memory), "--duration", "0.2", "--rate", "100")
        assert done.returncode == 0, done.stderr
        assert "(tmpfs)" in done.stdout
        assert "cost nothing and make nothing durable" in done.stdout
    finally:
        shutil.rmtree(memory)


def test_each_sync_follows_its_own_write(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []
    real_pwrite, real_sync = os.pwrite, disk.sync_file

    def pwrite(descriptor: int, data: bytes, position: int) -> int:
        calls.append(("write", position))
        return real_pwrite(descriptor, data, position)

    def sync(descriptor: int) -> None:
        calls.append(("sync", descriptor))
        real_sync(descriptor)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(disk, "sync_file", sync)
    run = measure_disk(DiskPlan(tmp_path, 0.2, 200, 100))
    kinds = [kind for kind, _ in calls]
    assert kinds == ["write", "sync"] * len(run.latency.values_us)
    positions = [value for kind, value in calls if kind == "write"]
    assert positions == [100 * index for index in range(len(positions))]


def test_a_slow_sync_is_counted_and_its_missed_slots_are_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    syncs = 0
    real_sync = disk.sync_file

    def sync(descriptor: int) -> None:
        nonlocal syncs
        syncs += 1
        real_sync(descriptor)
        if syncs == 3:
            time.sleep(0.15)  # a flush the device held

    monkeypatch.setattr(disk, "sync_file", sync)
    plan = DiskPlan(tmp_path, 0.4, 100, 256)
    report = build_disk_report(plan, measure_disk(plan))
    assert report["over_10ms"] == 1
    assert report["over_100ms"] == 1
    # 40 slots, 15 of them inside the stall: skipped, not sent in a burst after it.
    assert report["syncs"] <= 28


def test_a_full_disk_is_a_storage_full_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def full(descriptor: int, data: bytes, position: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(StorageFull):
        measure_disk(DiskPlan(tmp_path, 0.1, 100, 256))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--spawn"], "disk measures the disk alone"),
        (["--messages", "10"], "disk runs for --duration"),
        (["--data-dir", "/nonexistent/relaymq"], "does not exist"),
        (["--rate", "0"], "--rate"),
    ],
)
def test_bad_arguments_are_usage_errors(arguments: list[str], message: str) -> None:
    done = bench_disk(*arguments, "--duration", "0.1")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
