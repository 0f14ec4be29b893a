"""Local store only: how a finished fsync pass tells its appends (the group committer's
:class:`~relaymq.store.local.commit.OutcomeQueue`): in order, and a slice at a time,
so the event loop serves other work while a backlog is told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from relaymq.store.base import AppendDone
from relaymq.store.local import LocalStore, commit
from relaymq.store.local.log import LocalPartitionLog
from tests.fsync_control import hold_fsync

from .test_conformance import make_batch

PARTITION = ("tenant", "orders", 0)
BACKLOG = 200


class Recorder:
    """What happened, in order: each append's completion (by offset) and each turn
    of a task that only yields to the loop."""

    def __init__(self, seconds_per_append: float = 0.0) -> None:
        self.events: list[tuple[str, int]] = []
        self.errors: list[BaseException] = []
        self.seconds_per_append = seconds_per_append

    def done(self, offset: int) -> AppendDone:
        def told(error: BaseException | None) -> None:
            if error is not None:
                self.errors.append(error)
            self.events.append(("done", offset))
            if self.seconds_per_append:
                time.sleep(self.seconds_per_append)  # an append's confirm costs time

        return told

    def told_offsets(self) -> list[int]:
        return [value for kind, value in self.events if kind == "done"]

    async def tick_until(self, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            self.events.append(("tick", turn))
            turn += 1
            await asyncio.sleep(0)

    def ticks_while_telling(self) -> int:
        kinds = [kind for kind, _ in self.events]
        first, last = kinds.index("done"), len(kinds) - 1 - kinds[::-1].index("done")
        return kinds[first:last].count("tick")


def append_one(log: LocalPartitionLog, recorder: Recorder, position: int) -> None:
    """Write message ``position`` at offset ``position`` (appends follow each other)."""
    assert log.start_append(make_batch(position, 1), recorder.done(position)) == position


async def until(condition: Callable[[], object], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.001)


async def test_a_backlog_is_told_in_order_and_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "TELL_SLICE_SECONDS", 0.0)  # one append per slice
    held = hold_fsync(monkeypatch)
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    recorder = Recorder()
    for position in range(BACKLOG):  # one pass runs (held), the rest wait for the next
        append_one(log, recorder, position)
    stop = asyncio.Event()
    ticker = asyncio.create_task(recorder.tick_until(stop))
    held.release()
    await until(lambda: len(recorder.told_offsets()) == BACKLOG)
    stop.set()
    await ticker
    assert recorder.told_offsets() == list(range(BACKLOG))
    assert recorder.errors == []
    # Between the first append told and the last, the loop ran other work many times.
    assert recorder.ticks_while_telling() >= BACKLOG // 2
    await store.close()


async def test_a_later_pass_is_told_after_the_backlog_of_an_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "TELL_SLICE_SECONDS", 0.0)
    held = hold_fsync(monkeypatch)
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    recorder = Recorder(seconds_per_append=0.0002)  # the backlog outlasts a fresh pass
    later: list[int] = []

    def first_told(error: BaseException | None) -> None:
        recorder.events.append(("done", 0))
        # Written while the backlog is being told: a new pass syncs these (the gate is
        # open) and finishes before the backlog's last slice.
        for position in range(BACKLOG, BACKLOG + 10):
            later.append(position)
            append_one(log, recorder, position)

    assert log.start_append(make_batch(0, 1), first_told) == 0
    for position in range(1, BACKLOG):
        append_one(log, recorder, position)
    held.release()
    await until(lambda: len(recorder.told_offsets()) == BACKLOG + 10)
    assert recorder.told_offsets() == list(range(BACKLOG + 10))
    assert later and recorder.errors == []
    await store.close()


async def test_closing_waits_until_every_append_was_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "TELL_SLICE_SECONDS", 0.0)
    held = hold_fsync(monkeypatch)
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    recorder = Recorder()
    for position in range(BACKLOG):
        append_one(log, recorder, position)
    held.release()
    await until(lambda: recorder.told_offsets())  # the backlog is being told
    await store.close()
    assert recorder.told_offsets() == list(range(BACKLOG))
