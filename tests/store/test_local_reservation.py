"""Local store only: space reserved ahead of the active segment's data (posix_fallocate),
cut on roll and close, read as the end of the data after a crash; and which sync
(fdatasync or fsync) each file gets."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relaymq.errors import CorruptRecord, InvalidConfig, StorageFull
from relaymq.store.base import FsyncPolicy
from relaymq.store.local import LocalStore, record
from relaymq.store.local.segment import Segment
from relaymq.store.local.store import DEFAULT_RESERVE_CHUNK_BYTES, MAX_RESERVE_CHUNK_BYTES

from .test_conformance import make_batch, payload_position, read_all
from .test_local_recovery import (
    PARTITION,
    dropped_warnings,
    record_ends,
    reopen_and_check,
    segment_files,
    write_and_close,
)

SMALL_SEGMENT_BYTES = 64 * 1024
SMALL_CHUNK_BYTES = 16 * 1024


async def open_store(data_dir: Path, **options: object) -> LocalStore:
    return await LocalStore.open(data_dir, min_free_bytes=0, **options)  # type: ignore[arg-type]


async def fill(store: LocalStore, batches: int, per_batch: int = 10) -> None:
    log = await store.open_partition(*PARTITION)
    for batch in range(batches):
        await log.append(make_batch(batch * per_batch, per_batch, size=100))


def data_end(path: Path) -> int:
    """Where the records of a segment file end; only zeros (reserved space) may follow."""
    data = path.read_bytes()
    end = record.SEGMENT_HEADER_BYTES
    try:
        for frame in record.iter_frames(data, end):
            end = frame.end
    except record.FrameError:
        assert record.is_zero_fill(data, end), f"{path}: not zeros after the records"
    return end


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Everything the store logged at WARNING or above."""
    return [
        entry.getMessage()
        for entry in caplog.records
        if entry.name == "relaymq.store" and entry.levelno >= logging.WARNING
    ]


def skip_unless_reserving(store: LocalStore) -> None:
    if not store._reserver.enabled:
        pytest.skip("this file system cannot reserve space (posix_fallocate)")


# -- reserved space while open, none once sealed or closed ----------------------------------


async def test_the_active_segment_reserves_a_chunk_ahead_of_its_data(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await fill(store, 3)
    skip_unless_reserving(store)
    log = await store.open_partition(*PARTITION)
    (path,) = segment_files(tmp_path)
    data_bytes = log.stats().bytes
    assert data_bytes == data_end(path) < DEFAULT_RESERVE_CHUNK_BYTES
    assert path.stat().st_size == DEFAULT_RESERVE_CHUNK_BYTES  # more than half is left
    await store.close()
    assert path.stat().st_size == data_end(path) == data_bytes


async def test_a_roll_cuts_the_sealed_segment_to_its_data(tmp_path: Path) -> None:
    store = await open_store(
        tmp_path, segment_bytes=SMALL_SEGMENT_BYTES, reserve_chunk_bytes=SMALL_CHUNK_BYTES
    )
    await fill(store, 100)  # about 2.5 segments
    skip_unless_reserving(store)
    log = await store.open_partition(*PARTITION)
    *sealed, active = segment_files(tmp_path)
    assert len(sealed) >= 2
    for path in sealed:
        assert path.stat().st_size == data_end(path) == record_ends(path)[-1]
    # Reserved a chunk at a time, never past where the segment rolls.
    active_size = active.stat().st_size
    assert data_end(active) < active_size <= SMALL_SEGMENT_BYTES
    assert active_size % SMALL_CHUNK_BYTES == 0 or active_size == SMALL_SEGMENT_BYTES
    data_bytes = log.stats().bytes
    assert data_bytes == sum(data_end(path) for path in [*sealed, active])
    await store.close()
    assert sum(path.stat().st_size for path in segment_files(tmp_path)) == data_bytes
    assert active.stat().st_size == data_end(active)


async def test_reserving_can_be_turned_off(tmp_path: Path) -> None:
    store = await open_store(tmp_path, reserve_chunk_bytes=0)
    await fill(store, 3)
    (path,) = segment_files(tmp_path)
    assert path.stat().st_size == data_end(path)
    await store.close()
    with pytest.raises(InvalidConfig):
        LocalStore(tmp_path, reserve_chunk_bytes=MAX_RESERVE_CHUNK_BYTES + 1)


# -- reserved between passes, not by appends ------------------------------------------------


async def test_appends_find_their_space_reserved_by_the_pass_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """posix_fallocate can wait for a stalled disk, and an append runs on the event loop:
    once a pass has run, the space is reserved when the pass finishes, before the next
    one starts, and no append reserves for itself."""
    store = await open_store(
        tmp_path, segment_bytes=1024 * 1024, reserve_chunk_bytes=SMALL_CHUNK_BYTES
    )
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 1))
    skip_unless_reserving(store)
    real_fallocate, real_append = os.posix_fallocate, Segment.append
    reserved_by: list[str] = []
    appending = False

    def append(segment: Segment, *arguments: Any) -> None:
        nonlocal appending
        appending = True
        try:
            real_append(segment, *arguments)
        finally:
            appending = False

    def fallocate(file_descriptor: int, offset: int, length: int) -> None:
        reserved_by.append("an append" if appending else "a finished pass")
        real_fallocate(file_descriptor, offset, length)

    monkeypatch.setattr(Segment, "append", append)
    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    (path,) = segment_files(tmp_path)
    for batch in range(60):  # about 5 chunks, 10 messages a pass
        await log.append(make_batch(1 + batch * 10, 10, size=100))
        ahead = path.stat().st_size - log.stats().bytes
        assert SMALL_CHUNK_BYTES // 2 <= ahead < SMALL_CHUNK_BYTES * 3 // 2
    assert len(reserved_by) >= 4 and set(reserved_by) == {"a finished pass"}
    await store.close()
    assert path.stat().st_size == data_end(path)


async def test_a_failed_reservation_after_a_pass_fails_no_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(tmp_path, reserve_chunk_bytes=SMALL_CHUNK_BYTES)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 10))
    skip_unless_reserving(store)
    (path,) = segment_files(tmp_path)
    reserved_size = path.stat().st_size
    calls: list[int] = []
    monkeypatch.setattr(os, "posix_fallocate", failing_fallocate(errno.ENOSPC, calls))
    caplog.set_level(logging.WARNING, "relaymq.store")
    # Fits what is reserved, but leaves less than half a chunk: the pass tops up, and fails.
    assert await log.append(make_batch(10, 60, size=150)) == 10
    assert reserved_size - SMALL_CHUNK_BYTES // 2 < log.stats().bytes < reserved_size
    assert calls
    (warning,) = store_warnings(caplog)
    assert "could not reserve space ahead" in warning and "No space left" in warning
    assert path.stat().st_size == reserved_size  # what was reserved before is kept
    calls.clear()
    assert await log.append(make_batch(70, 1)) == 70  # fits: no second try, no second warning
    assert calls == [] and len(store_warnings(caplog)) == 1
    monkeypatch.undo()
    assert await log.append(make_batch(71, 60, size=150)) == 71  # reserves for itself
    await store.close()
    await reopen_and_check(tmp_path, 131)


async def test_no_top_up_out_of_the_free_space_headroom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With less than a chunk above ``min_free_bytes``, passes leave the reservation
    alone; appends still reserve what they need, as before."""
    free_bytes = 10 * 1024**3
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free_bytes))
    store = await LocalStore.open(
        tmp_path,
        min_free_bytes=free_bytes - SMALL_CHUNK_BYTES // 2,
        reserve_chunk_bytes=SMALL_CHUNK_BYTES,
    )
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 1))
    skip_unless_reserving(store)
    (path,) = segment_files(tmp_path)
    for batch in range(30):  # about 2.5 chunks
        await log.append(make_batch(1 + batch * 10, 10, size=100))
        assert path.stat().st_size % SMALL_CHUNK_BYTES == 0
        assert path.stat().st_size - log.stats().bytes < SMALL_CHUNK_BYTES  # never topped up
    await store.close()
    await reopen_and_check(tmp_path, 301)


# -- a crash leaves the reserved zeros behind ----------------------------------------------


@pytest.mark.parametrize("fsync", list(FsyncPolicy))
async def test_a_crash_with_a_reserved_tail_reopens_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fsync: FsyncPolicy
) -> None:
    running, crashed = tmp_path / "running", tmp_path / "crashed"
    store = await open_store(
        running,
        fsync=fsync,
        segment_bytes=SMALL_SEGMENT_BYTES,
        reserve_chunk_bytes=SMALL_CHUNK_BYTES,
    )
    await fill(store, 50)  # about 1.25 segments
    skip_unless_reserving(store)
    # The files as a crash (SIGKILL, power loss after the fsyncs) leaves them: never closed.
    shutil.copytree(running / "streams", crashed / "streams")
    await store.close()
    *_sealed, active = segment_files(crashed)
    assert active.stat().st_size > data_end(active)

    caplog.set_level(logging.DEBUG, "relaymq.store")
    store = await open_store(crashed)
    log = await store.open_partition(*PARTITION)
    assert log.next_offset == 500
    assert active.stat().st_size == data_end(active)  # the zeros are cut
    assert await log.append(make_batch(500, 5)) == 500
    assert active.stat().st_size > data_end(active)  # and reserved again
    assert [payload_position(message) for message in await read_all(log)] == list(range(505))
    await store.close()
    assert store_warnings(caplog) == []
    await reopen_and_check(crashed, 505)
    assert store_warnings(caplog) == []


async def test_a_sealed_segment_left_with_reserved_zeros_reopens_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash right after a roll, before the cut of the sealed segment was durable."""
    await write_and_close(tmp_path, 20, 20, segment_bytes=4_000)
    first = segment_files(tmp_path)[0]
    size = first.stat().st_size
    with first.open("ab") as file:
        file.write(bytes(SMALL_CHUNK_BYTES))
    caplog.set_level(logging.DEBUG, "relaymq.store")
    await reopen_and_check(tmp_path, 400)
    assert store_warnings(caplog) == []
    assert first.stat().st_size == size


@pytest.mark.parametrize(
    "damage",
    [
        bytes(4096) + b"\x01",  # zeros, then one byte
        bytes(30) + b"garbage" + bytes(500),  # zeros, then garbage, then zeros
        b"\x01" + bytes(4096),  # one byte, then zeros
    ],
)
async def test_zeros_followed_by_anything_else_are_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: bytes
) -> None:
    await write_and_close(tmp_path, 5, 10)
    (path,) = segment_files(tmp_path)
    size = path.stat().st_size
    with path.open("ab") as file:
        file.write(damage)
    caplog.set_level(logging.WARNING, "relaymq.store")
    await reopen_and_check(tmp_path, 50)
    (warning,) = dropped_warnings(caplog)
    assert f"dropped {len(damage)} bytes of damaged tail at position {size}" in warning


async def test_a_torn_record_in_reserved_space_is_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The start of a record made it to disk, the rest of its pages did not."""
    await write_and_close(tmp_path, 5, 10)
    (path,) = segment_files(tmp_path)
    ends = record_ends(path)
    os.truncate(path, ends[-2] + 30)
    with path.open("ab") as file:
        file.write(bytes(SMALL_CHUNK_BYTES))
    caplog.set_level(logging.WARNING, "relaymq.store")
    await reopen_and_check(tmp_path, 49)
    (warning,) = dropped_warnings(caplog)
    assert f"at position {ends[-2]} (crc mismatch)" in warning


async def test_records_lost_at_the_end_of_an_older_segment_are_a_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older segment whose last record reads as zeros ends early: cut silently as a
    zero tail, but the missing offsets before the next segment are logged, and reads stop
    there instead of skipping them."""
    await write_and_close(tmp_path, 10, 20, segment_bytes=4_000)
    first = segment_files(tmp_path)[0]
    ends = record_ends(first)
    data = bytearray(first.read_bytes())
    data[ends[-2] :] = bytes(len(data) - ends[-2])
    first.write_bytes(bytes(data))
    missing = len(ends) - 1
    caplog.set_level(logging.WARNING, "relaymq.store")
    store = await open_store(tmp_path)
    log = await store.open_partition(*PARTITION)
    (error,) = store_warnings(caplog)
    assert f"ends at offset {missing} but the next starts at {len(ends)}" in error
    assert [message.offset for message in await read_all(log)] == list(range(missing))
    with pytest.raises(CorruptRecord):
        await log.read(missing, 10, 1 << 30)
    assert (await log.read(len(ends), 1, 1 << 30))[0].offset == len(ends)
    await store.close()


# -- disk full and file systems that cannot reserve -----------------------------------------


def failing_fallocate(error_number: int, calls: list[int]) -> Callable[[int, int, int], None]:
    def fallocate(file_descriptor: int, offset: int, length: int) -> None:
        calls.append(length)
        raise OSError(error_number, os.strerror(error_number))

    return fallocate


async def test_disk_full_on_reserve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await open_store(tmp_path, reserve_chunk_bytes=4096)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 10))
    skip_unless_reserving(store)
    (path,) = segment_files(tmp_path)
    data_bytes = log.stats().bytes
    calls: list[int] = []
    monkeypatch.setattr(os, "posix_fallocate", failing_fallocate(errno.ENOSPC, calls))
    with pytest.raises(StorageFull):
        await log.append(make_batch(10, 40, size=300))  # crosses the reserved end
    assert len(calls) == 2 and calls[1] < calls[0]  # a chunk, then only what the batch needs
    assert log.next_offset == 10
    assert [message.offset for message in await read_all(log)] == list(range(10))
    assert path.stat().st_size == log.stats().bytes == data_bytes
    monkeypatch.undo()
    assert await log.append(make_batch(10, 40, size=300)) == 10
    assert path.stat().st_size > data_end(path)
    await store.close()
    await reopen_and_check(tmp_path, 50)


async def test_less_than_a_chunk_free_still_takes_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC for a whole chunk: reserve only what the batch needs, as a write would."""
    real_fallocate = os.posix_fallocate

    def tight(file_descriptor: int, offset: int, length: int) -> None:
        if length > 64 * 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fallocate(file_descriptor, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", tight)
    store = await open_store(tmp_path)
    await fill(store, 5)
    skip_unless_reserving(store)
    (path,) = segment_files(tmp_path)
    log = await store.open_partition(*PARTITION)
    assert path.stat().st_size == data_end(path) == log.stats().bytes
    await store.close()
    await reopen_and_check(tmp_path, 50)


@pytest.mark.parametrize("error_number", [errno.EOPNOTSUPP, errno.EINVAL])
async def test_a_file_system_that_cannot_reserve_gets_plain_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error_number: int
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "posix_fallocate", failing_fallocate(error_number, calls))
    store = await open_store(tmp_path)
    logs = [await store.open_partition("tenant", "orders", partition) for partition in (0, 1)]
    for batch in range(5):
        for log in logs:
            assert await log.append(make_batch(batch * 10, 10)) == batch * 10
    assert len(calls) == 1  # the store stopped trying after the first refusal
    (path,) = segment_files(tmp_path)
    assert path.stat().st_size == data_end(path) == logs[0].stats().bytes
    await store.close()
    await reopen_and_check(tmp_path, 50)


# -- which sync each file gets ----------------------------------------------------------------


async def test_appended_data_is_fdatasynced_new_and_finished_files_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "fdatasync"):
        pytest.skip("no fdatasync on this platform")
    store = await open_store(tmp_path, fsync=FsyncPolicy.ALWAYS, segment_bytes=4_000)
    log = await store.open_partition(*PARTITION)
    calls: Counter[str] = Counter()

    def counting(name: str) -> Callable[[int], None]:
        real = getattr(os, name)

        def sync(file_descriptor: int) -> None:
            calls[name] += 1
            real(file_descriptor)

        return sync

    for name in ("fsync", "fdatasync"):
        monkeypatch.setattr(os, name, counting(name))
    # Count on the fsync threads: the worker process's fdatasyncs happen in another
    # process (tests/store/test_local_fsync_process.py covers which files it gets).
    monkeypatch.setattr(log, "datasync_target", lambda job: None)
    await log.append(make_batch(0, 1))  # the first sync of a created file
    assert calls == Counter(fsync=1)
    for offset in range(1, 4):
        calls.clear()
        await log.append(make_batch(offset, 1))
        assert calls == Counter(fdatasync=1)
    offset = 4
    while len(segment_files(tmp_path)) == 1:
        calls.clear()
        await log.append(make_batch(offset, 5, size=200))
        offset += 5
    # The roll's pass: the sealed log and its index, the new log, the directory.
    assert calls == Counter(fsync=4)
    calls.clear()
    await log.append(make_batch(offset, 1))
    assert calls == Counter(fdatasync=1)
    calls.clear()
    await store.close()
    assert calls["fsync"] == 2 and calls["fdatasync"] == 0  # the active log and its index
