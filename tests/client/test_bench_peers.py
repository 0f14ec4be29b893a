"""``bench/peers.py``: the latency workload against real RabbitMQ and NATS JetStream
servers, each started by the script in a temporary directory, through their Python
clients; every message arrives once, the report says how durable a confirm was, and
nothing the script started outlives it, even when it is terminated."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.client.test_bench import BENCH_TIMEOUT_SECONDS

SCRIPT = Path(__file__).parents[2] / "bench" / "peers.py"


def start_peers(data_dir: Path, *arguments: str) -> subprocess.Popen[str]:
    """The script in a session of its own (so a test can stop all it started)."""
    command = [sys.executable, str(SCRIPT), *arguments, "--data-dir", str(data_dir), "--json"]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(run: subprocess.Popen[str]) -> tuple[str, str]:
    """Its output once it ended; on a timeout everything it started is killed."""
    try:
        return run.communicate(timeout=BENCH_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        raise


def run_peers(data_dir: Path, *arguments: str) -> dict[str, Any]:
    """One short run of the script; its ``--json`` document."""
    run = start_peers(data_dir, *arguments, "--rate", "100", "--duration", "1")
    stdout, stderr = finish(run)
    assert run.returncode == 0, stderr[-2000:]
    return json.loads(stdout)


def broker_processes(data_dir: Path) -> list[psutil.Process]:
    """Processes that run in the directory or name it (the brokers the script ran)."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ", "cwd"]):
        with contextlib.suppress(psutil.Error):
            info = process.info
            text = f"{info['cmdline']} {info['environ']} {info['cwd']}"
            if str(data_dir) in text and str(SCRIPT) not in text:
                found.append(process)
    return found


@pytest.mark.parametrize(
    ("arguments", "durable"),
    [
        (("nats",), "after fsync (sync_interval: always)"),
        (("rabbitmq", "--queue-type", "classic"), "classic"),
        (("rabbitmq", "--queue-type", "quorum"), "quorum"),
    ],
    ids=["nats", "rabbitmq-classic", "rabbitmq-quorum"],
)
def test_every_message_arrives_once_and_the_durability_is_reported(
    arguments: tuple[str, ...], durable: str, tmp_path: Path
) -> None:
    report = run_peers(tmp_path, *arguments)
    verification = report["verification"]
    assert verification["published"] >= 90  # 100 msg/s for a second
    assert verification["received"] == verification["published"]
    assert (verification["lost"], verification["duplicated"], verification["ok"]) == (0, 0, True)
    assert durable in report["server"]["durability"]
    latency = report["latency_ms"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert report["confirm_latency_ms"]["p50_ms"] > 0
    assert report["phases"][0]["server_cpu_percent"] > 0
    assert list(tmp_path.iterdir()) == []  # the broker's directory is gone
    assert broker_processes(tmp_path) == []


def test_a_terminated_run_stops_its_broker(tmp_path: Path) -> None:
    run = start_peers(tmp_path, "nats", "--rate", "100", "--duration", "60")
    deadline = time.monotonic() + 30
    while not broker_processes(tmp_path):
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(2)  # into the measured window
    run.terminate()
    finish(run)
    assert run.returncode != 0
    assert broker_processes(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
