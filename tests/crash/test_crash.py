"""Crash test: SIGKILL the broker at random moments while it publishes with confirms and
consumes with acks; restart it each time; count. Once with delivery after the fsync,
once with ``early_delivery`` (consumers get and ack messages before they are durable).
A killed process leaves what it wrote in the page cache, so the early run checks the
offers, acks and restarts under kills; what keeps early delivery safe when the
machine itself goes down is tested in ``tests/broker/test_early_delivery.py``.

Asserts that no confirmed message is lost and that every message delivered but
not acked before a crash is delivered again; prints the duplicates (allowed by
at-least-once delivery). ``RELAYMQ_CRASH_ITERATIONS`` raises the number of kills
(default 20).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("crash_worker.py")
ITERATIONS = int(os.environ.get("RELAYMQ_CRASH_ITERATIONS", "20"))


class Ledger:
    """What the worker processes reported, across all runs."""

    def __init__(self) -> None:
        self.confirmed: set[str] = set()
        self.deliveries: Counter[str] = Counter()
        self.acked: set[str] = set()
        self.delivered_unacked_at_crash: set[str] = set()

    def read(self, lines: list[str]) -> None:
        delivered_this_run: set[str] = set()
        acked_this_run: set[str] = set()
        for line in lines:
            kind, _, rest = line.partition(" ")
            ids = rest.split()
            if kind == "C":
                self.confirmed.update(ids)
            elif kind == "D":
                self.deliveries.update(ids)
                delivered_this_run.update(ids)
            elif kind == "A":
                self.acked.update(ids)
                acked_this_run.update(ids)
        self.delivered_unacked_at_crash |= delivered_this_run - acked_this_run


def run_worker(
    data_dir: Path, run_id: str, phase: str, delivery: str, kill_after_seconds: float | None
) -> list[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), str(data_dir), run_id, phase, delivery],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.endswith("\n"):  # a line cut by the kill is not a fact
                if line == "READY\n":
                    ready.set()
                lines.append(line.rstrip("\n"))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert ready.wait(60), "worker did not start"
    if kill_after_seconds is None:
        assert process.wait(120) == 0
    else:
        time.sleep(kill_after_seconds)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    thread.join(30)
    return lines


@pytest.mark.parametrize("delivery", ["durable", "early"])
def test_sigkill_loses_no_confirmed_message(tmp_path: Path, delivery: str) -> None:
    ledger = Ledger()
    chooser = random.Random()
    for iteration in range(ITERATIONS):
        kill_after = chooser.uniform(0.05, 1.0)
        ledger.read(run_worker(tmp_path, f"r{iteration}", "run", delivery, kill_after))
    ledger.read(run_worker(tmp_path, "drain", "drain", delivery, None))

    lost = ledger.confirmed - set(ledger.deliveries)
    never_redelivered = {
        message_id
        for message_id in ledger.delivered_unacked_at_crash
        if ledger.deliveries[message_id] < 2
    } - ledger.acked
    duplicates = sum(count - 1 for count in ledger.deliveries.values() if count > 1)
    print(
        f"\ncrash test: {ITERATIONS} kills, {len(ledger.confirmed)} confirmed, "
        f"{len(ledger.deliveries)} delivered, {len(ledger.acked)} acked, "
        f"{duplicates} duplicate deliveries, lost {len(lost)}"
    )
    assert len(ledger.confirmed) > 0
    assert lost == set(), f"confirmed but never delivered: {sorted(lost)[:20]}"
    assert ledger.confirmed <= ledger.acked, "every confirmed message is finally acked"
    assert never_redelivered == set()
