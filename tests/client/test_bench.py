"""``relaymq bench``: every workload end to end against a spawned server, and the
accounting that refuses a throughput figure when a message was lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from relaymq.bench.payload import decode_payload, encode_payload
from relaymq.bench.report import build_report
from relaymq.bench.verify import Deliveries, Publications, verdict
from relaymq.bench.workloads import BenchPlan, Mark, Phase, RunState

BENCH_TIMEOUT_SECONDS = 120


def run_bench(*arguments: str) -> tuple[int, dict]:
    """``relaymq bench ... --spawn --json``: exit status and the JSON document."""
    command = [
        sys.executable,
        "-c",
        "from relaymq.cli.main import main; main()",
        "bench",
        *arguments,
        "--spawn",
        "--json",
        "--no-progress",
    ]
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
