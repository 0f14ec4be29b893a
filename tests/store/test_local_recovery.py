"""Local store only: torn-tail recovery, disk full, and group commit."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import time
from pathlib import Path

import pytest

from relaymq.core.message import Message
from relaymq.errors import CorruptRecord, RelayError, StorageFull
from relaymq.store.base import FsyncPolicy
from relaymq.store.local import LocalStore, record, segment
from relaymq.store.local.segment import Segment

from .test_conformance import make_batch, payload_position, read_all

PARTITION = ("tenant", "orders", 0)


def partition_directory(data_dir: Path) -> Path:
    return data_dir / "streams" / "tenant" / "orders" / "0"


def segment_files(data_dir: Path) -> list[Path]:
    return sorted(partition_directory(data_dir).glob("*.log"))


async def write_and_close(data_dir: Path, batches: int, per_batch: int, **options: object) -> None:
    store = await LocalStore.open(data_dir, min_free_bytes=0, **options)  # type: ignore[arg-type]
    log = await store.open_partition(*PARTITION)
    for batch in range(batches):
        await log.append(make_batch(batch * per_batch, per_batch, size=50))
    await store.close()


def record_ends(path: Path) -> list[int]:
    """Byte end of every record in a segment file, in order."""
    data = path.read_bytes()
    return [frame.end for frame in record.iter_frames(data, record.SEGMENT_HEADER_BYTES)]


async def reopen_and_check(data_dir: Path, expected_count: int) -> None:
    """Reopen: exactly the first ``expected_count`` messages, appends continue after them,
    and both survive another reopen."""
    store = await LocalStore.open(data_dir, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    assert log.next_offset == expected_count
    stored = await read_all(log)
    assert [payload_position(message) for message in stored] == list(range(expected_count))
    assert await log.append(make_batch(expected_count, 3)) == expected_count
    await store.close()
    store = await LocalStore.open(data_dir, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    stored = await read_all(log)
    assert [message.offset for message in stored] == list(range(expected_count + 3))
    await store.close()


def dropped_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        entry.getMessage()
        for entry in caplog.records
        if entry.name == "relaymq.store"
        and entry.levelno == logging.WARNING
        and "dropped" in entry.getMessage()
    ]


# -- torn tails ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
async def test_random_cut_recovers_to_last_whole_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, seed: int
) -> None:
    await write_and_close(tmp_path, 10, 20)
    (path,) = segment_files(tmp_path)
    ends = record_ends(path)
    cut = random.Random(seed).randrange(record.SEGMENT_HEADER_BYTES + 1, ends[-1])
    os.truncate(path, cut)
    caplog.set_level(logging.WARNING, "relaymq.store")
    whole = sum(1 for end in ends if end <= cut)
    await reopen_and_check(tmp_path, whole)
    if cut not in ends:
        (warning,) = dropped_warnings(caplog)
        assert f"dropped {cut - max([e for e in ends if e <= cut], default=16)} bytes" in warning


async def test_flipped_bit_in_last_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await write_and_close(tmp_path, 5, 10)
    (path,) = segment_files(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, "relaymq.store")
    await reopen_and_check(tmp_path, 49)
    (warning,) = dropped_warnings(caplog)
    assert "crc mismatch" in warning


async def test_garbage_appended(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await write_and_close(tmp_path, 5, 10)
    (path,) = segment_files(tmp_path)
    size = path.stat().st_size
    with path.open("ab") as file:
        file.write(random.Random(7).randbytes(1000))
    caplog.set_level(logging.WARNING, "relaymq.store")
    await reopen_and_check(tmp_path, 50)
    (warning,) = dropped_warnings(caplog)
    assert f"dropped 1000 bytes of damaged tail at position {size}" in warning


async def test_zeroed_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Zeros up to the end of the file are reserved space a crash left behind (a frame's
    length is never 0): the end of the data, cut without a warning. Zeros followed by
    anything else are damage (test_local_reservation.py)."""
    await write_and_close(tmp_path, 5, 10)
    (path,) = segment_files(tmp_path)
    with path.open("ab") as file:
        file.write(bytes(4096))
    caplog.set_level(logging.WARNING, "relaymq.store")
    await reopen_and_check(tmp_path, 50)
    assert not [entry for entry in caplog.records if entry.levelno >= logging.WARNING]


async def test_torn_segment_header_of_new_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await write_and_close(tmp_path, 10, 20, segment_bytes=4_000)
    paths = segment_files(tmp_path)
    assert len(paths) > 2
    last_base = int(paths[-1].stem)
    os.truncate(paths[-1], 5)
    caplog.set_level(logging.WARNING, "relaymq.store")
    await reopen_and_check(tmp_path, last_base)
    assert len(dropped_warnings(caplog)) == 1


async def test_damaged_index_is_rebuilt(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 10, 100)
    (path,) = segment_files(tmp_path)
    index_path = path.with_suffix(".index")
    assert index_path.stat().st_size > 0
    index_path.write_bytes(random.Random(3).randbytes(index_path.stat().st_size))
    await reopen_and_check(tmp_path, 1000)


async def test_corrupt_record_in_older_segment_stops_reads(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 10, 20, segment_bytes=4_000)
    first = segment_files(tmp_path)[0]
    ends = record_ends(first)
    data = bytearray(first.read_bytes())
    data[ends[4] + 30] ^= 0xFF  # inside record 5
    first.write_bytes(bytes(data))
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    assert [message.offset for message in await log.read(0, 5, 1 << 30)] == list(range(5))
    with pytest.raises(CorruptRecord):
        await log.read(0, 10, 1 << 30)
    later = await log.read(len(ends), 10, 1 << 30)  # the next segment is fine
    assert later[0].offset == len(ends)
    await store.close()


async def test_damage_found_on_open_in_an_older_segment_is_never_skipped(tmp_path: Path) -> None:
    """Recovery marks an older segment damaged and shortens its readable part; a read
    must stop at the damage, never jump to the next segment (that would silently skip
    confirmed messages, which a work queue would then trim)."""
    await write_and_close(tmp_path, 10, 20, segment_bytes=4_000)
    first = segment_files(tmp_path)[0]
    ends = record_ends(first)
    data = bytearray(first.read_bytes())
    data[ends[-2] + 30] ^= 0xFF  # inside the last record of the first segment
    first.write_bytes(bytes(data))
    damaged = len(ends) - 1
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    before = await log.read(0, 10_000, 1 << 30)
    assert [message.offset for message in before] == list(range(damaged))
    with pytest.raises(CorruptRecord):
        await log.read(damaged, 10, 1 << 30)
    later = await log.read(len(ends), 10, 1 << 30)  # the next segment is fine
    assert later[0].offset == len(ends)
    await store.close()


# -- disk full ---------------------------------------------------------------------------


async def test_disk_full_on_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 10))
    data_bytes_before = log.stats().bytes
    real_write_all = segment._write_all

    def half_then_full(file_descriptor: int, data: bytes, position: int) -> None:
        os.pwrite(file_descriptor, data[: len(data) // 2], position)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment, "_write_all", half_then_full)
    with pytest.raises(StorageFull):
        await log.append(make_batch(10, 10))
    # Cut back to the data end (the reserved tail goes too): no byte of the batch is left.
    assert segment_files(tmp_path)[0].stat().st_size == data_bytes_before
    assert log.stats().bytes == data_bytes_before
    assert log.next_offset == 10
    assert [message.offset for message in await read_all(log)] == list(range(10))
    monkeypatch.setattr(segment, "_write_all", real_write_all)
    assert await log.append(make_batch(10, 5)) == 10
    await store.close()
    await reopen_and_check(tmp_path, 15)


async def test_disk_full_on_fsync_rolls_back_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    await log.append(make_batch(0, 10))
    real_sync = Segment.sync
    failures = 1

    def full_once(self: Segment, *, with_index: bool) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real_sync(self, with_index=with_index)

    monkeypatch.setattr(Segment, "sync", full_once)
    monkeypatch.setattr(Segment, "datasync_descriptor", lambda self: None)  # sync on threads
    results = await asyncio.gather(
        *(log.append(make_batch(10 + task * 5, 5)) for task in range(4)), return_exceptions=True
    )
    failed = [result for result in results if isinstance(result, StorageFull)]
    assert failed, results
    assert all(isinstance(result, (int, StorageFull)) for result in results)
    confirmed = sum(1 for result in results if isinstance(result, int))
    stored = await read_all(log)
    assert [message.offset for message in stored] == list(range(10 + confirmed * 5))
    assert await log.append(make_batch(0, 2)) == 10 + confirmed * 5
    await store.close()
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    assert log.next_offset == 10 + confirmed * 5 + 2
    await store.close()


async def test_min_free_bytes_refuses_early(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=1 << 62)
    log = await store.open_partition(*PARTITION)
    with pytest.raises(StorageFull):
        await log.append(make_batch(0, 1))
    assert log.next_offset == 0
    await store.close()


# -- group commit ------------------------------------------------------------------------


async def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    durations: list[float] = []
    store = await LocalStore.open(
        tmp_path, fsync=FsyncPolicy.BATCH, min_free_bytes=0, fsync_observer=durations.append
    )
    logs = [await store.open_partition("tenant", "orders", partition) for partition in range(4)]
    durations.clear()
    appends = 200
    await asyncio.gather(
        *(logs[task % 4].append(make_batch(task * 10, 10)) for task in range(appends))
    )
    assert 1 <= len(durations) <= appends // 10
    assert all(duration >= 0 for duration in durations)
    assert sum(log.next_offset for log in logs) == appends * 10
    await store.close()


async def test_always_policy_syncs_every_append(tmp_path: Path) -> None:
    durations: list[float] = []
    store = await LocalStore.open(
        tmp_path, fsync=FsyncPolicy.ALWAYS, min_free_bytes=0, fsync_observer=durations.append
    )
    log = await store.open_partition(*PARTITION)
    durations.clear()
    await asyncio.gather(*(log.append(make_batch(task, 1)) for task in range(20)))
    assert len(durations) == 20
    await store.close()


async def test_files_on_disk(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 20, 20, segment_bytes=4_000)
    paths = segment_files(tmp_path)
    assert len(paths) > 2
    assert paths[0].name == "00000000000000000000.log"
    for path in paths:
        assert path.with_suffix(".index").exists()
        header = path.read_bytes()[: record.SEGMENT_HEADER_BYTES]
        assert record.decode_segment_header(header) == int(path.stem)
    assert (tmp_path / "metadata.db").exists()


def test_frame_decoder_rejects_garbage() -> None:
    rng = random.Random(11)
    batch = record.encode_batch([Message(subject="a", payload=b"x" * 40)], 0)
    for _ in range(300):
        data = bytearray(batch.data)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        with pytest.raises(record.FrameError):
            record.read_frame(bytes(data), 0)


# -- group commit --------------------------------------------------------------------------


async def test_a_failed_pass_does_not_strand_appends_waiting_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    real_run_sync = log.run_sync
    calls = 0

    def failing_first_sync(job: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            time.sleep(0.05)  # a second append joins the next pass meanwhile
            raise RuntimeError("a bug in the fsync thread")
        real_run_sync(job)

    monkeypatch.setattr(log, "run_sync", failing_first_sync)
    monkeypatch.setattr(log, "datasync_target", lambda job: None)  # sync on threads
    first = asyncio.create_task(log.append(make_batch(0, 1)))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(log.append(make_batch(1, 1)))
    with pytest.raises(RelayError):
        await asyncio.wait_for(first, 5)
    # The rollback after the failed pass also cut the second record, written after the
    # last durable state: it fails too, but it is told so instead of waiting forever.
    with pytest.raises(RelayError):
        await asyncio.wait_for(second, 5)
    assert await log.append(make_batch(2, 1)) == 0
    assert len(await log.read(0, 10, 1 << 20)) == 1
    await store.close()


async def test_cancelled_appends_do_not_cancel_the_pass_others_wait_for(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0)
    log = await store.open_partition(*PARTITION)
    appends = [asyncio.create_task(log.append(make_batch(index, 1))) for index in range(6)]
    await asyncio.sleep(0)
    for task in appends[::2]:
        task.cancel()
    finished = await asyncio.gather(*appends, return_exceptions=True)
    for task, outcome in zip(appends[1::2], finished[1::2], strict=True):
        assert not task.cancelled() and isinstance(outcome, int)
    await log.close()
    await store.close()
