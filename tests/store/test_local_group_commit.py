"""Local store only: how a finished fsync pass tells its appends (the group committer's
:class:`~relaymq.store.local.commit.OutcomeQueue`): in order, a slice at a time so
the event loop serves other work while a backlog is told, and a failure at once."""

from __future__ import annotations

import asyncio
import errno
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from relaymq.store.base import AppendDone
from relaymq.store.local import LocalStore, commit
from relaymq.store.local.log import LocalPartitionLog, SyncJob

from .test_conformance import make_batch

PARTITION = ("tenant", "orders", 0)
BACKLOG = 200
# Telling a backlog this slowly (0.2 s in all) lets a pass started meanwhile finish
# before the backlog's end, even on a loaded machine (the tests check that it did).
SLOW_TELLING_SECONDS = 0.001


class Recorder:
    """What happened, in order: each append told (``("done", offset)``, or
    ``("failed", offset)``), each pass finished (``("pass", end)``, or
    ``("rollback", end)``), and each turn of a task that only yields to the loop."""

    def __init__(self, seconds_per_append: float = 0.0) -> None:
        self.events: list[tuple[str, int]] = []
        self.seconds_per_append = seconds_per_append

    def done(self, offset: int, then: Callable[[], None] | None = None) -> AppendDone:
        def told(error: BaseException | None) -> None:
            self.events.append(("done" if error is None else "failed", offset))
            if self.seconds_per_append:
                time.sleep(self.seconds_per_append)  # an append's confirm costs time
            if then is not None:
                then()

        return told

    def told(self) -> list[int]:
        return [value for kind, value in self.events if kind in ("done", "failed")]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def index(self, event: tuple[str, int]) -> int:
        return self.events.index(event)

    def ticks_between(self, first: int, last: int) -> int:
        return self.kinds()[first:last].count("tick")

    async def tick_until(self, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            self.events.append(("tick", turn))
            turn += 1
            await asyncio.sleep(0)


class ControlledSync:
    """Passes wait for :meth:`release`, then skip the real fsync (order, not
    durability, is under test) or fail when told to; each finished pass is
    recorded with the end offset it covered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
        self.gate = threading.Event()
        self.failures = 0
        real_finish_sync = LocalPartitionLog.finish_sync

        def run_sync(log: LocalPartitionLog, job: SyncJob) -> None:
            self.gate.wait(10)
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EIO, "injected I/O error")

        def finish_sync(
            log: LocalPartitionLog, job: SyncJob, error: OSError | None
        ) -> BaseException | None:
            recorder.events.append(("pass" if error is None else "rollback", job.mark.next_offset))
            return real_finish_sync(log, job, error)

        monkeypatch.setattr(LocalPartitionLog, "run_sync", run_sync)
        monkeypatch.setattr(LocalPartitionLog, "datasync_target", lambda log, job: None)
        monkeypatch.setattr(LocalPartitionLog, "finish_sync", finish_sync)

    def release(self) -> None:
        self.gate.set()


def append_one(
    log: LocalPartitionLog,
    recorder: Recorder,
    position: int,
    then: Callable[[], None] | None = None,
) -> None:
    """Write message ``position`` at offset ``position`` (appends follow each other)."""
    assert log.start_append(make_batch(position, 1), recorder.done(position, then)) == position


def write_backlog(
    log: LocalPartitionLog, recorder: Recorder, while_telling: Callable[[], None] | None = None
) -> None:
    """Appends 0 to ``BACKLOG - 1``: the first pass (held) takes append 0, the next one
    the rest; ``while_telling`` runs once append 1, the backlog's first, is told."""
    append_one(log, recorder, 0)
    append_one(log, recorder, 1, then=while_telling)
    for position in range(2, BACKLOG):
        append_one(log, recorder, position)


async def until(condition: Callable[[], object], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.001)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[LocalPartitionLog]:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    yield await store.open_partition(*PARTITION)
    await store.close()


async def test_a_small_pass_is_told_in_the_step_that_finished_it(
    log: LocalPartitionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    sync = ControlledSync(monkeypatch, recorder)
    for position in range(3):
        append_one(log, recorder, position)
    stop = asyncio.Event()
    ticker = asyncio.create_task(recorder.tick_until(stop))
    sync.release()
    await until(lambda: len(recorder.told()) == 3)
    stop.set()
    await ticker
    assert recorder.told() == [0, 1, 2]
    for offset in range(3):  # no loop step between a pass and its appends hearing
        kinds = recorder.kinds()
        told_at = recorder.index(("done", offset))
        assert kinds[told_at - 1] in ("pass", "done")


async def test_a_backlog_is_told_in_order_and_in_slices(
    log: LocalPartitionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "TELL_SLICE_SECONDS", 0.0)  # one append per slice
    recorder = Recorder()
    sync = ControlledSync(monkeypatch, recorder)
    write_backlog(log, recorder)
    stop = asyncio.Event()
    ticker = asyncio.create_task(recorder.tick_until(stop))
    sync.release()
    await until(lambda: len(recorder.told()) == BACKLOG)
    stop.set()
    await ticker
    assert recorder.told() == list(range(BACKLOG))
    # Between the first append told and the last, the loop ran other work many times.
    first, last = recorder.index(("done", 0)), recorder.index(("done", BACKLOG - 1))
    assert recorder.ticks_between(first, last) >= BACKLOG // 2


async def test_a_later_pass_is_told_after_the_backlog_of_an_earlier_one(
    log: LocalPartitionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "TELL_SLICE_SECONDS", 0.0)
    recorder = Recorder(seconds_per_append=SLOW_TELLING_SECONDS)
    sync = ControlledSync(monkeypatch, recorder)

    def write_more() -> None:  # while the backlog is being told: a new pass syncs these
        for position in range(BACKLOG, BACKLOG + 10):
            append_one(log, recorder, position)

    write_backlog(log, recorder, while_telling=write_more)
    sync.release()
    await until(lambda: len(recorder.told()) == BACKLOG + 10)
    assert recorder.told() == list(range(BACKLOG + 10))
    # The later pass did finish while the backlog was still being told.
    assert recorder.index(("pass", BACKLOG + 10)) < recorder.index(("done", BACKLOG - 1))


async def test_a_failed_pass_is_told_in_the_step_of_its_rollback(
    log: LocalPartitionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "TELL_SLICE_SECONDS", 0.0)
    recorder = Recorder(seconds_per_append=SLOW_TELLING_SECONDS)
    sync = ControlledSync(monkeypatch, recorder)

    def write_doomed() -> None:  # while the backlog is being told: its pass fails
        sync.failures = 1
        append_one(log, recorder, BACKLOG)

    write_backlog(log, recorder, while_telling=write_doomed)
    stop = asyncio.Event()
    ticker = asyncio.create_task(recorder.tick_until(stop))
    sync.release()
    await until(lambda: ("failed", BACKLOG) in recorder.events)
    stop.set()
    await ticker
    rollback = recorder.index(("rollback", BACKLOG + 1))
    failed = recorder.index(("failed", BACKLOG))
    assert rollback < recorder.index(("done", BACKLOG - 1))  # amid the backlog's slices
    # The backlog before it and the failure were told at once: no append could start
    # at the rolled-back offset before the failure was known.
    assert recorder.told() == list(range(BACKLOG + 1))
    assert recorder.ticks_between(rollback, failed) == 0
    assert log.start_append(make_batch(BACKLOG, 1), recorder.done(BACKLOG)) == BACKLOG


async def test_closing_the_store_waits_until_every_append_was_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "TELL_SLICE_SECONDS", 0.0)
    recorder = Recorder()
    sync = ControlledSync(monkeypatch, recorder)
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    write_backlog(log, recorder)
    sync.release()
    await until(lambda: recorder.told())  # the backlog is being told
    await store.close()
    assert recorder.told() == list(range(BACKLOG))


async def test_a_failure_told_amid_a_backlog_leaves_one_slice_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit, "TELL_SLICE_SECONDS", 0.0)
    recorder = Recorder()
    outcomes = commit.OutcomeQueue(on_idle=lambda: None)
    outcomes.tell([recorder.done(offset) for offset in range(5)], None)  # 1 told, 4 wait
    outcomes.tell([recorder.done(5)], OSError(errno.EIO, "failed"))  # all told at once
    outcomes.tell([recorder.done(offset) for offset in range(6, 12)], None)
    stop = asyncio.Event()
    ticker = asyncio.create_task(recorder.tick_until(stop))
    await until(lambda: len(recorder.told()) == 12)
    stop.set()
    await ticker
    assert recorder.told() == list(range(12))
    # The later backlog goes one append per step: no second slice was scheduled.
    kinds = recorder.kinds()[recorder.index(("done", 6)) :]
    assert all(kinds[index + 1] == "tick" for index in range(0, len(kinds) - 1, 2))
