"""Local store only: the fsync worker process, and the threads taking over when it dies."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
from pathlib import Path

import pytest

from relaymq.store.base import FsyncPolicy
from relaymq.store.local import LocalStore
from relaymq.store.local.fsync_process import FsyncProcess

from .test_conformance import make_batch, payload_position, read_all

PARTITION = ("tenant", "orders", 0)


def running_process(store: LocalStore) -> FsyncProcess:
    process = store._committer._process
    assert process is not None and process.alive
    return process


@pytest.mark.parametrize("policy", [FsyncPolicy.BATCH, FsyncPolicy.ALWAYS])
async def test_appends_are_synced_by_the_worker_process(
    tmp_path: Path, policy: FsyncPolicy
) -> None:
    store = await LocalStore.open(tmp_path, fsync=policy, min_free_bytes=0)
    running_process(store)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 1))  # a new file: a full fsync, on a thread
    threads_after_creation = len(store._committer._threads)
    results = await asyncio.gather(*(log.append(make_batch(1 + n, 1)) for n in range(20)))
    assert sorted(results) == list(range(1, 21))
    assert len(store._committer._threads) == threads_after_creation  # none started since
    assert store._committer._registered  # the worker holds the active segment
    assert [payload_position(m) for m in await read_all(log)] == list(range(21))
    await store.close()


async def test_no_worker_process_under_fsync_never(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, fsync=FsyncPolicy.NEVER, min_free_bytes=0)
    assert store._committer._process is None
    await store.close()


async def test_the_worker_reports_errors_per_file() -> None:
    process = FsyncProcess.start()
    assert process is not None
    read_end, write_end = os.pipe()
    answers: asyncio.Future[list[int] | None] = asyncio.get_running_loop().create_future()
    try:
        process.register(1, read_end)  # fdatasync of a pipe fails with EINVAL
        process.sync([1, 99], answers.set_result)  # 99 was never registered
        assert await asyncio.wait_for(answers, 5) == [errno.EINVAL, errno.EBADF]
    finally:
        process.close()
        process.wait()
        os.close(read_end)
        os.close(write_end)


async def test_threads_take_over_when_the_worker_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 2))
    await log.append(make_batch(2, 2))
    process = running_process(store)
    os.kill(process._process.pid, signal.SIGKILL)
    process._process.wait()
    with caplog.at_level(logging.ERROR, logger="relaymq.store"):
        results = await asyncio.gather(*(log.append(make_batch(4 + 2 * n, 2)) for n in range(5)))
    assert sorted(results) == [4, 6, 8, 10, 12]
    assert not process.alive
    assert "fsync worker process" in caplog.text
    assert [payload_position(m) for m in await read_all(log)] == list(range(14))
    await store.close()
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    assert log.next_offset == 14
    await store.close()


async def test_closing_the_store_stops_the_worker(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 3))
    await log.append(make_batch(3, 3))
    child = running_process(store)._process
    await store.close()
    assert child.poll() is not None


async def test_a_worker_dead_before_the_first_sync_fails_over(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    process = running_process(store)
    os.kill(process._process.pid, signal.SIGKILL)
    process._process.wait()
    log = await store.open_partition(*PARTITION)
    for first in range(0, 10, 2):
        assert await asyncio.wait_for(log.append(make_batch(first, 2)), 5) == first
    await asyncio.wait_for(store.close(), 5)


async def test_many_partitions_in_one_pass_queue_behind_a_full_socket(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    logs = [await store.open_partition("tenant", "wide", n) for n in range(400)]
    for round_ in range(2):  # the second round registers 400 files with the worker at once
        results = await asyncio.wait_for(
            asyncio.gather(*(log.append(make_batch(round_, 1)) for log in logs)), 30
        )
        assert results == [round_] * len(logs)
    assert running_process(store).alive
    await asyncio.wait_for(store.close(), 30)


async def test_a_key_the_worker_lost_does_not_fail_appends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 1))
    await log.append(make_batch(1, 1))
    _file, key = store._committer._registered[log]
    running_process(store).forget(key)  # behind the committer's back
    with caplog.at_level(logging.WARNING, logger="relaymq.store"):
        assert await log.append(make_batch(2, 1)) == 2  # synced on a thread instead
    assert "fsync worker process failed" in caplog.text
    assert await log.append(make_batch(3, 1)) == 3  # registered again
    assert [payload_position(m) for m in await read_all(log)] == [0, 1, 2, 3]
    await store.close()


async def test_a_rolled_segment_is_released_by_the_worker(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0, segment_bytes=2_000)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 1))
    await log.append(make_batch(1, 1))
    sealed, _key = store._committer._registered[log]
    offset = 2
    while log._active is sealed:
        await log.append(make_batch(offset, 5, size=200))
        offset += 5
    registered = store._committer._registered.get(log)
    assert registered is None or registered[0] is not sealed
    await store.close()


async def test_closing_waits_for_no_idle_moment_of_a_busy_store(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    busy = await store.open_partition("tenant", "busy", 0)
    idle = await store.open_partition("tenant", "idle", 0)
    await idle.append(make_batch(0, 1))
    stop = asyncio.Event()

    async def produce() -> None:
        offset = 0
        while not stop.is_set():
            await busy.append(make_batch(offset, 1))
            offset += 1

    producers = [asyncio.create_task(produce()) for _ in range(4)]
    await asyncio.sleep(0.2)
    await asyncio.wait_for(idle.close(), 5)  # a sync_now while passes run back to back
    stop.set()
    await asyncio.gather(*producers)
    await store.close()
