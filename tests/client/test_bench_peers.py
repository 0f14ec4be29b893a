"""``bench/peers.py``: the latency workload against real RabbitMQ and NATS JetStream
servers, each started by the script in a temporary directory, through their Python
clients; every message arrives once, and the report says how durable a confirm was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.client.test_bench import BENCH_TIMEOUT_SECONDS

SCRIPT = Path(__file__).parents[2] / "bench" / "peers.py"


def run_peers(*arguments: str) -> dict[str, Any]:
    """One short run of the script; its ``--json`` document."""
    command = [sys.executable, str(SCRIPT), *arguments, "--rate", "100", "--duration", "1"]
    finished = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    return json.loads(finished.stdout)


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
    arguments: tuple[str, ...], durable: str
) -> None:
    report = run_peers(*arguments)
    verification = report["verification"]
    assert verification["published"] >= 90  # 100 msg/s for a second
    assert verification["received"] == verification["published"]
    assert (verification["lost"], verification["duplicated"], verification["ok"]) == (0, 0, True)
    assert durable in report["server"]["durability"]
    latency = report["latency_ms"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert report["confirm_latency_ms"]["p50_ms"] > 0
    assert report["phases"][0]["server_cpu_percent"] > 0
