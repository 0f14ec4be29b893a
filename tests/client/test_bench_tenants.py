"""``relaymq bench tenants``: a flooding tenant is refused with ``Retry-After`` while
its neighbour, publishing within its quota at the same time, never is; the report's
shape. (The latency ratio is a measurement, not something a test can promise.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymq.bench.runner import filesystem_of
from tests.client.test_bench import run_bench

PHASE_KEYS = {"latency_ms", "outcomes", "seconds", "server_cpu_percent"}
LATENCY_KEYS = {"count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"}


@pytest.mark.parametrize(("protocol", "event_loop"), [("http", "uvloop"), ("websocket", "asyncio")])
def test_the_flooder_is_refused_and_its_neighbour_is_not(
    protocol: str, event_loop: str, tmp_path: Path
) -> None:
    status, report = run_bench(
        "tenants",
        *("--protocol", protocol, "--quota", "10", "--flood-factor", "10"),
        *("--rate", "5", "--duration", "1"),
        *("--event-loop", event_loop, "--data-dir", str(tmp_path)),
    )
    assert status == 0
    assert report["workload"] == "tenants"
    assert report["protocol"] == protocol
    assert report["plan"]["event_loop"] == event_loop
    assert report["server"]["data_filesystem"] == filesystem_of(tmp_path)
    assert list(tmp_path.iterdir()) == []
    flood = report["flood"]
    assert flood["refused"] > 0
    assert flood["retry_after_seen"] == flood["refused"]
    assert flood["accepted"] > 0
    assert flood["failed"] == 0
    assert report["neighbour_refused"] == 0
    assert report["isolated"] is True
    for phase in report["neighbour"].values():
        assert set(phase) == PHASE_KEYS
        assert set(phase["latency_ms"]) == LATENCY_KEYS
        assert phase["latency_ms"]["count"] == phase["outcomes"]["accepted"] >= 4
        assert phase["outcomes"]["refused"] == phase["outcomes"]["failed"] == 0
        assert phase["server_cpu_percent"] is not None
    assert set(report["ratios"]) == {"p50", "p90", "p99", "max"}
    assert all(ratio > 0 for ratio in report["ratios"].values())
    assert report["plan"]["flood_rate_per_second"] == 100
    assert isinstance(report["goal_met"], bool)
