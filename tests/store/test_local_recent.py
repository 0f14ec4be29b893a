"""Local store only: the newest messages are read from memory, not from the file."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from relaymq.core.message import Message
from relaymq.errors import RelayError
from relaymq.store.local import LocalStore, record
from relaymq.store.local.recent import RecentMessages

from .test_conformance import make_batch, payload_position, read_all

PARTITION = ("tenant", "orders", 0)


def forbid_threads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every ``asyncio.to_thread`` the log makes (a file read)."""
    calls: list[Any] = []
    real = asyncio.to_thread

    async def counting(function: Any, *args: Any) -> Any:
        calls.append(function)
        return await real(function, *args)

    monkeypatch.setattr("relaymq.store.local.log.asyncio.to_thread", counting)
    return calls


async def test_a_read_at_the_tail_needs_no_file_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 10))
    calls = forbid_threads(monkeypatch)
    await log.append(make_batch(10, 5))
    tail = await log.read(10, 100, 1 << 20)
    assert [payload_position(message) for message in tail] == list(range(10, 15))
    assert [message.offset for message in tail] == list(range(10, 15))
    assert all(message.partition == 0 for message in tail)
    assert calls == []
    await store.close()


async def test_reads_from_memory_keep_the_limits(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 20, size=100))
    assert len(await log.read(3, 4, 1 << 20)) == 4
    assert len(await log.read(3, 100, 1)) == 1  # at least one, whatever its size
    one_size = len(record.encode_batch(make_batch(0, 1, size=100), 0).data)
    assert len(await log.read(3, 100, 3 * one_size)) == 3
    await store.close()


async def test_old_offsets_and_reopened_logs_read_from_the_file(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    for first in range(0, 3_000, 100):
        await log.append(make_batch(first, 100))
    assert [payload_position(m) for m in await read_all(log)] == list(range(3_000))
    await store.close()
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    assert [payload_position(m) for m in await read_all(log, 2_990)] == list(range(2_990, 3_000))
    await store.close()


async def test_a_rolled_back_append_is_not_served_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 3))
    real_run_sync = log.run_sync
    failures = [OSError(errno.EIO, "the disk went away")]

    def failing_sync(job: object) -> None:
        if failures:
            raise failures.pop()
        real_run_sync(job)

    monkeypatch.setattr(log, "run_sync", failing_sync)
    monkeypatch.setattr(log, "datasync_target", lambda job: None)  # sync on threads
    with pytest.raises(RelayError):
        await log.append(make_batch(3, 2))
    assert log.next_offset == 3
    await log.append(make_batch(100, 1))  # takes offset 3 again
    messages = await read_all(log)
    assert [payload_position(m) for m in messages] == [0, 1, 2, 100]
    await store.close()


def test_the_window_is_bounded_and_consecutive() -> None:
    recent = RecentMessages(max_messages=5, max_bytes=1 << 20)
    batch = make_batch(0, 8)
    for offset, message in enumerate(batch):
        message.offset = offset
    recent.add(batch, [40] * len(batch))
    assert recent.first_offset == 3
    recent.cut(6)
    assert [m.offset for m in recent.read(3, 100, 100, 1 << 20)] == [3, 4, 5]
    gap = Message(subject="a", payload=b"x")
    gap.offset = 50
    recent.add([gap], [40])  # not consecutive: the window restarts
    assert recent.first_offset == 50
    small = RecentMessages(max_messages=100, max_bytes=3 * 40)
    small.add(batch, [40] * len(batch))
    assert small.first_offset == 5


def test_one_message_appends_slide_the_window() -> None:
    recent = RecentMessages(max_messages=100, max_bytes=1 << 20)
    batch = make_batch(0, 1_000)
    for offset, message in enumerate(batch):
        message.offset = offset
        recent.add([message], [40])
        assert recent.first_offset == max(0, offset - 99)
        newest = recent.read(offset, offset + 1, 10, 1 << 20)
        assert [m.offset for m in newest] == [offset]
    assert [m.offset for m in recent.read(900, 1_000, 3, 1 << 20)] == [900, 901, 902]
    assert [m.offset for m in recent.read(990, 995, 100, 1 << 20)] == list(range(990, 995))
    assert [m.offset for m in recent.read(990, 1_000, 100, 2 * 40)] == [990, 991]
    assert recent.read(995, 995, 100, 1 << 20) == []
    recent.cut(950)
    assert recent.first_offset == 900
    assert [m.offset for m in recent.read(945, 1_000, 100, 1 << 20)] == list(range(945, 950))
