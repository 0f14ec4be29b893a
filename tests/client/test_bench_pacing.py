"""``relaymq bench`` pacing: when a paced producer sends, what its payload's
``sent_ns`` means, and the two ways of waiting (even and coarse)."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import time

import pytest

from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.loops import loop_factory
from relaymq.bench.pacing import PACINGS, Pacer, SubMillisecondTimer, default_pacing
from relaymq.bench.report import paced
from relaymq.bench.transports import ProducerPlan, next_batch

RELAYMQ = [sys.executable, "-c", "from relaymq.cli.main import main; main()"]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="timerfd is Linux's")


def producer_plan(messages: int, rate_per_second: float | None) -> ProducerPlan:
    """A plan for one producer of ``messages``."""
    return ProducerPlan(0, "subject", messages, None, rate_per_second, "test")


def on_uvloop(pacing: str, rate: float, messages: int) -> tuple[list[int], float, float]:
    """Pace ``messages`` on uvloop: each send stamp, the wall and the CPU seconds."""
    pytest.importorskip("uvloop")

    async def pace() -> tuple[list[int], float, float]:
        with Pacer(rate, LatencyRecorder(), pacing) as pacer:
            stamps = []
            wall, cpu = time.perf_counter(), time.process_time()
            for sequence in range(messages):
                await pacer.wait(sequence)
                stamps.append(pacer.stamp(sequence))
            return stamps, time.perf_counter() - wall, time.process_time() - cpu

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
    _, wall_seconds, cpu_seconds = on_uvloop(pacing, 2_000, 400)
    assert wall_seconds >= 0.19
    assert cpu_seconds < 0.25 * wall_seconds


@linux_only
def test_even_pacing_sends_each_message_at_its_own_time() -> None:
    # At 2,000 msg/s one message is due every 0.5 ms. The event loop's millisecond
    # timers send them in bursts (gaps of a few microseconds inside a burst); the
    # timerfd sends each on its own.
    even, _, _ = on_uvloop("even", 2_000, 400)
    coarse, _, _ = on_uvloop("coarse", 2_000, 400)
    even_gaps = [later - earlier for earlier, later in itertools.pairwise(even)]
    coarse_gaps = [later - earlier for earlier, later in itertools.pairwise(coarse)]
    assert statistics.median(even_gaps) > 300_000
    assert statistics.median(coarse_gaps) < 100_000


@linux_only
async def test_the_sub_millisecond_timer_sleeps_at_least_its_delay() -> None:
    timer = SubMillisecondTimer(asyncio.get_running_loop())
    try:
        for delay_ns in (200_000, 700_000, 1):
            before = time.perf_counter_ns()
            await timer.sleep_ns(delay_ns)
            assert time.perf_counter_ns() - before >= delay_ns
    finally:
        timer.close()


def test_an_unknown_pacing_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pacing 'jittery'"):
        Pacer(100, LatencyRecorder(), "jittery")


def test_the_default_pacing_is_even_where_a_timerfd_exists() -> None:
    assert default_pacing() == ("even" if sys.platform == "linux" else "coarse")


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


@pytest.mark.slow
@pytest.mark.parametrize("pacing", [None, "coarse"])
def test_a_run_names_its_pacing(pacing: str | None) -> None:
    chosen = ["--pacing", pacing] if pacing else []
    command = [*RELAYMQ, "bench", "latency", "--duration", "0.5", "--rate", "400", *chosen]
    done = subprocess.run(
        [*command, "--spawn", "--json", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["plan"]["pacing"] == (pacing or default_pacing())
    assert report["verification"]["ok"] is True
    assert report["schedule_lag_ms"]["count"] == report["verification"]["published"]


def test_the_report_header_names_the_pacing() -> None:
    assert paced({"rate_per_second": 2000.0, "pacing": "even"}) == ", even-paced at 2000 msg/s"
    assert paced({"rate_per_second": None, "pacing": "even"}) == ""
