"""``relaymq bench`` pacing: when a paced producer sends, what its payload's
``sent_ns`` means, and the two ways of waiting (even and coarse)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.loops import loop_factory
from relaymq.bench.pacing import Pacer, SubMillisecondTicker, default_pacing
from relaymq.bench.report import paced
from relaymq.bench.transports import next_batch
from tests.client.test_bench import BENCH_TIMEOUT_SECONDS, RELAYMQ, producer_plan

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="timerfd is Linux's")
PACINGS = [pytest.param("even", marks=linux_only), "coarse"]


def on_uvloop(pacing: str, rate: float, messages: int) -> tuple[float, float]:
    """Pace ``messages`` on uvloop: the wall and the CPU seconds it took."""
    pytest.importorskip("uvloop")

    async def pace() -> tuple[float, float]:
        with Pacer(rate, LatencyRecorder(), pacing) as pacer:
            wall, cpu = time.perf_counter(), time.process_time()
            for sequence in range(messages):
                await pacer.wait(sequence)
            return time.perf_counter() - wall, time.process_time() - cpu

    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as runner:
        return runner.run(pace())


@pytest.mark.parametrize("pacing", PACINGS)
async def test_a_paced_message_is_stamped_when_sent_never_before_it_is_due(pacing: str) -> None:
    lag = LatencyRecorder()
    stamps = []
    with Pacer(2_000, lag, pacing) as pacer:
        for sequence in range(50):
            await pacer.wait(sequence)
            stamps.append((pacer.due_ns(sequence), pacer.stamp(sequence)))
    assert all(sent_ns >= due_ns for due_ns, sent_ns in stamps)
    assert len(lag.values_us) == 50
    assert list(lag.values_us) == [(sent - due) // 1000 for due, sent in stamps]


@pytest.mark.parametrize("pacing", PACINGS)
def test_a_paced_producer_on_uvloop_sleeps_instead_of_spinning(pacing: str) -> None:
    # uvloop rounds a timer under 0.5 ms down to 0 ms: a pacer that retried at once would
    # keep a CPU busy for the whole run, one the broker under test needs.
    wall_seconds, cpu_seconds = on_uvloop(pacing, 2_000, 400)
    assert wall_seconds >= 0.19
    assert cpu_seconds < 0.25 * wall_seconds


@linux_only
async def test_the_even_timer_ticks_every_fraction_of_a_millisecond() -> None:
    # What makes even pacing even: the event loop's own timers cannot sleep 0.2 ms
    # (asyncio sleeps a whole millisecond, uvloop not at all); the timerfd can.
    interval_ns = 200_000
    timer = SubMillisecondTicker(asyncio.get_running_loop(), interval_ns)
    first_ns = time.perf_counter_ns() + interval_ns
    woke_ns = []
    try:
        async with asyncio.timeout(5):
            for tick in range(21):
                due_ns = first_ns + tick * interval_ns
                while time.perf_counter_ns() < due_ns:  # as the pacer waits
                    await timer.tick_at(due_ns)
                woke_ns.append(time.perf_counter_ns())
    finally:
        timer.close()
    assert all(woke >= first_ns + tick * interval_ns for tick, woke in enumerate(woke_ns))
    gaps = [later - earlier for earlier, later in itertools.pairwise(woke_ns)]
    assert statistics.median(gaps) < 900_000


@linux_only
async def test_a_tick_nobody_waits_for_stops_the_timer_until_the_next_wait() -> None:
    interval_ns = 5_000_000
    timer = SubMillisecondTicker(asyncio.get_running_loop(), interval_ns)
    try:
        async with asyncio.timeout(5):
            await timer.tick_at(time.perf_counter_ns() + interval_ns)
            assert timer.armed
            await asyncio.sleep(0.02)  # the next ticks come with nobody waiting
            assert not timer.armed  # so the timer stopped instead of waking the loop
            due_ns = time.perf_counter_ns() + interval_ns
            await timer.tick_at(due_ns)
            assert time.perf_counter_ns() >= due_ns  # armed again, for that time
    finally:
        timer.close()


@linux_only
async def test_a_cancelled_even_pacer_leaves_no_timer_behind() -> None:
    loop = asyncio.get_running_loop()
    with Pacer(1, LatencyRecorder(), "even") as pacer:
        descriptor = pacer._timer._descriptor  # type: ignore[union-attr]
        sleeping = asyncio.ensure_future(pacer.wait(5))  # due in 5 s
        await asyncio.sleep(0.01)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
    assert not loop.remove_reader(descriptor)  # no longer watched
    with pytest.raises(OSError):
        os.fstat(descriptor)


def test_an_unknown_pacing_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pacing 'jittery'"):
        Pacer(100, LatencyRecorder(), "jittery")


@pytest.mark.parametrize("pacing", PACINGS)
def test_an_unpaced_message_has_no_schedule_and_no_lag(pacing: str) -> None:
    lag = LatencyRecorder()
    with Pacer(None, lag, pacing) as pacer:
        before = time.perf_counter_ns()
        assert pacer.due_ns(7) is None
        assert pacer.is_due(10**9)
        assert before <= pacer.stamp(7) <= time.perf_counter_ns()
    assert len(lag.values_us) == 0


@pytest.mark.parametrize("pacing", PACINGS)
async def test_an_http_batch_holds_what_is_due_each_stamped_as_it_joins(pacing: str) -> None:
    lag = LatencyRecorder()
    with Pacer(1_000, lag, pacing) as pacer:  # one message a millisecond
        await asyncio.sleep(0.02)
        batch = await next_batch(producer_plan(1_000, 1_000), pacer, 0, 500)
        assert 15 <= len(batch) < 500  # what was due, not a full batch
        assert [sequence for sequence, _ in batch] == list(range(len(batch)))
        due = [pacer.due_ns(sequence) for sequence, _ in batch]
        sent = [sent_ns for _, sent_ns in batch]
        assert all(sent_ns >= due_ns for due_ns, sent_ns in zip(due, sent, strict=True))
        assert sent == sorted(sent)
        assert len(lag.values_us) == len(batch)
        later = await next_batch(producer_plan(1_000, 1_000), pacer, len(batch), 500)
        assert later[0][0] == len(batch)
        assert later[0][1] >= pacer.due_ns(len(batch))


def test_the_report_header_names_the_pacing() -> None:
    assert paced({"rate_per_second": 2000.0, "pacing": "even"}) == ", even-paced at 2000 msg/s"
    assert paced({"rate_per_second": None, "pacing": None}) == ""


def bench_json(*arguments: str) -> dict:
    """``relaymq bench ... --spawn --json``; the report (the run must succeed)."""
    done = subprocess.run(
        [*RELAYMQ, "bench", *arguments, "--spawn", "--json", "--no-progress"],
        capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("pacing", [None, "coarse"])
def test_a_paced_run_names_its_pacing_and_an_unpaced_one_none(pacing: str | None) -> None:
    chosen = ["--pacing", pacing] if pacing else []
    report = bench_json("latency", "--duration", "0.5", "--rate", "400", *chosen)
    assert report["plan"]["pacing"] == (pacing or default_pacing())
    assert report["verification"]["ok"] is True
    assert report["schedule_lag_ms"]["count"] == report["verification"]["published"]
    unpaced = bench_json("queue", "--messages", "500", *chosen)
    assert unpaced["plan"]["pacing"] is None


def test_tenants_refuses_a_pacing() -> None:
    done = subprocess.run(
        [*RELAYMQ, "bench", "tenants", "--pacing", "coarse", "--spawn"],
        capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS,
    )  # fmt: skip
    assert done.returncode == 2
    assert "tenants paces its own publishers" in done.stderr
