"""The store conformance suite: one body of tests every store implementation passes.

Implementations come from the ``store`` fixture in ``conftest.py``; tests read
its capability flags (``durable``, ``exact_retention``) instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from relaymq.core.message import Message
from relaymq.errors import StoreClosed
from relaymq.store.base import PartitionLog, RetentionLimits

from .conftest import StoreHarness

NAMESPACE = "tenant"
STREAM = "orders"


def make_batch(
    first: int, count: int, *, timestamp_ms: int = 1_000, size: int = 32
) -> list[Message]:
    """``count`` messages whose payload names their intended position ``first + i``."""
    return [
        Message(
            subject="orders.created",
            payload=f"{first + index:08d}".encode().ljust(size, b"."),
            key=f"key-{(first + index) % 7}",
            headers={"n": str(first + index)},
            id=f"id-{first + index}",
            timestamp_ms=timestamp_ms + first + index,
            deliver_at_ms=None if index % 2 else 5,
            priority=index % 3,
            expires_at_ms=9_999 if index % 4 == 0 else None,
        )
        for index in range(count)
    ]


async def fill(log: PartitionLog, batches: int, per_batch: int, **options: int) -> None:
    for batch in range(batches):
        await log.append(make_batch(batch * per_batch, per_batch, **options))


async def read_all(log: PartitionLog, from_offset: int = 0) -> list[Message]:
    return await log.read(from_offset, 1_000_000, 1 << 40)


def payload_position(message: Message) -> int:
    return int(message.payload[:8])


async def open_log(store: StoreHarness, partition: int = 0) -> PartitionLog:
    return await store.logs.open_partition(NAMESPACE, STREAM, partition)


# -- offsets and appends ------------------------------------------------------------------


async def test_offsets_are_contiguous_from_zero_across_batches(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    assert (log.first_offset, log.next_offset) == (0, 0)
    firsts = []
    for batch in range(5):
        messages = make_batch(batch * 10, 10)
        firsts.append(await log.append(messages))
        assert [message.offset for message in messages] == list(range(batch * 10, batch * 10 + 10))
        assert {message.partition for message in messages} == {0}
    assert firsts == [0, 10, 20, 30, 40]
    assert log.next_offset == 50
    stored = await read_all(log)
    assert [message.offset for message in stored] == list(range(50))
    assert [payload_position(message) for message in stored] == list(range(50))


async def test_every_field_round_trips(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store, partition=3)
    sent = make_batch(0, 8)
    sent[1].headers = {"unicode": "ünï", "empty": ""}
    sent[2].payload = bytes(range(256))
    await log.append(sent)
    received = await read_all(log)
    assert received == sent
    assert {message.partition for message in received} == {3}


async def test_reopen_keeps_everything_and_continues(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await fill(log, 3, 10)
    await store.restart()
    log = await open_log(store)
    if not store.durable:
        assert (log.first_offset, log.next_offset) == (0, 0)
        return
    assert log.next_offset == 30
    assert await log.append(make_batch(30, 5)) == 30
    await store.restart()
    log = await open_log(store)
    stored = await read_all(log)
    assert [message.offset for message in stored] == list(range(35))
    assert [payload_position(message) for message in stored] == list(range(35))


async def test_empty_append_returns_next_offset(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await log.append(make_batch(0, 3))
    assert await log.append([]) == 3
    assert log.next_offset == 3


async def test_partitions_are_independent(store: StoreHarness) -> None:
    await store.open()
    first = await open_log(store, 0)
    second = await open_log(store, 1)
    await first.append(make_batch(0, 4))
    await second.append(make_batch(100, 2))
    assert first.next_offset == 4
    assert second.next_offset == 2
    assert [payload_position(message) for message in await read_all(second)] == [100, 101]


async def test_append_listeners_hear_of_readable_messages_before_the_append_returns(
    store: StoreHarness,
) -> None:
    await store.open()
    log = await open_log(store)
    heard: list[tuple[int, bool]] = []  # (readable end, whether the append had returned)
    appending: list[asyncio.Task[int]] = []
    unwatch = log.watch_appends(lambda: heard.append((log.next_offset, appending[-1].done())))
    for first in (0, 3):
        appending.append(asyncio.ensure_future(log.append(make_batch(first, 3))))
        await appending[-1]
    assert heard[0] == (3, False)
    assert heard[-1] == (6, False)
    assert len(await read_all(log)) == 6
    unwatch()
    await log.append(make_batch(6, 1))
    assert heard[-1][0] == 6  # no call once unwatched


async def test_concurrent_appends_keep_call_order_and_unique_offsets(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)

    async def appender(task: int) -> list[list[int]]:
        calls = []
        for call in range(10):
            messages = make_batch(task * 1000 + call * 10, 10)
            first = await log.append(messages)
            offsets = [message.offset for message in messages]
            assert offsets == list(range(first, first + 10))
            calls.append(offsets)
        return calls

    results = await asyncio.gather(*(appender(task) for task in range(16)))
    every_offset = sorted(offset for calls in results for offsets in calls for offset in offsets)
    assert every_offset == list(range(1600))
    stored = {message.offset: message for message in await read_all(log)}
    for task, calls in enumerate(results):
        for call, offsets in enumerate(calls):
            positions = [payload_position(stored[offset]) for offset in offsets]
            first = task * 1000 + call * 10
            assert positions == list(range(first, first + 10))


async def test_start_append_writes_now_and_tells_once_when_readable(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    told: list[tuple[BaseException | None, int]] = []  # (outcome, readable end then)
    messages = make_batch(0, 3)
    first = log.start_append(messages, lambda error: told.append((error, log.next_offset)))
    assert first == 0
    assert [message.offset for message in messages] == [0, 1, 2]  # offsets assigned at once
    for _ in range(200):
        if told:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # and never a second time
    assert told == [(None, 3)]
    assert len(await read_all(log)) == 3


async def test_start_append_that_cannot_start_raises_and_never_tells(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await log.close()
    told: list[BaseException | None] = []
    with pytest.raises(StoreClosed):
        log.start_append(make_batch(0, 1), told.append)
    await asyncio.sleep(0.05)
    assert told == []


async def test_flush_waits_for_every_append_in_flight(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await log.flush()  # nothing in flight
    told: list[BaseException | None] = []
    for first in (0, 2):
        log.start_append(make_batch(first, 2), told.append)
    await log.flush()
    assert told == [None, None]
    assert log.next_offset == 4 and len(await read_all(log)) == 4
    await log.close()
    with pytest.raises(StoreClosed):
        await log.flush()


async def test_a_cancelled_append_still_lands(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    appending = asyncio.ensure_future(log.append(make_batch(0, 2)))
    await asyncio.sleep(0)  # written; waiting for its sync
    appending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await appending
    await log.append(make_batch(2, 1))
    assert [payload_position(message) for message in await read_all(log)] == [0, 1, 2]


# -- reads ---------------------------------------------------------------------------------


async def test_read_ranges_and_clamping(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await fill(log, 4, 25)
    middle = await log.read(40, 7, 1 << 30)
    assert [message.offset for message in middle] == list(range(40, 47))
    tail = await log.read(95, 100, 1 << 30)
    assert [message.offset for message in tail] == list(range(95, 100))
    assert await log.read(100, 10, 1 << 30) == []
    assert await log.read(500, 10, 1 << 30) == []
    assert await log.read(0, 0, 1 << 30) == []
    await log.trim(30)
    clamped = await log.read(0, 3, 1 << 30)
    assert [message.offset for message in clamped] == [30, 31, 32]


async def test_read_max_bytes_returns_at_least_one(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await log.append(make_batch(0, 10, size=1000))
    assert [message.offset for message in await log.read(3, 10, 1)] == [3]
    some = await log.read(0, 10, 3500)
    assert 1 <= len(some) <= 4
    assert [message.offset for message in some] == list(range(len(some)))
    assert len(await log.read(0, 10, 1 << 30)) == 10


async def test_read_sees_appends_made_after_it_started(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await log.append(make_batch(0, 5))
    assert len(await read_all(log)) == 5
    await log.append(make_batch(5, 5))
    assert [message.offset for message in await log.read(5, 100, 1 << 30)] == list(range(5, 10))


# -- time --------------------------------------------------------------------------------------


async def test_offset_for_timestamp(store: StoreHarness) -> None:
    await store.open(segment_bytes=2_000)
    log = await open_log(store)
    assert await log.offset_for_timestamp(0) == 0
    await fill(log, 10, 20, timestamp_ms=10_000)  # message i has timestamp 10_000 + i
    assert await log.offset_for_timestamp(0) == 0
    assert await log.offset_for_timestamp(10_000) == 0
    assert await log.offset_for_timestamp(10_123) == 123
    assert await log.offset_for_timestamp(10_199) == 199
    assert await log.offset_for_timestamp(10_200) == 200
    assert await log.offset_for_timestamp(99_999) == log.next_offset
    await log.trim(150)
    assert await log.offset_for_timestamp(10_010) == 150


async def test_offset_for_timestamp_with_out_of_order_times(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    messages = make_batch(0, 6)
    for message, timestamp_ms in zip(messages, [50, 10, 70, 20, 90, 30], strict=True):
        message.timestamp_ms = timestamp_ms
    await log.append(messages)
    assert await log.offset_for_timestamp(60) == 2
    assert await log.offset_for_timestamp(15) == 0
    assert await log.offset_for_timestamp(80) == 4
    assert await log.offset_for_timestamp(91) == 6


# -- trim and retention ---------------------------------------------------------------------


async def test_trim_moves_first_offset_and_survives_restart(store: StoreHarness) -> None:
    await store.open(segment_bytes=2_000)
    log = await open_log(store)
    await fill(log, 10, 20)
    assert await log.trim(0) == 0
    assert await log.trim(137) == 137
    assert log.first_offset == 137
    assert await log.trim(100) == 137  # never moves back
    stored = await read_all(log)
    assert stored[0].offset == 137
    assert log.stats().messages == 200 - 137
    await store.restart()
    log = await open_log(store)
    if store.durable:
        assert log.first_offset == 137
        assert (await read_all(log))[0].offset == 137
        assert log.next_offset == 200


async def test_trim_everything_then_append(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await fill(log, 2, 10)
    assert await log.trim(10_000) == 20
    assert log.first_offset == log.next_offset == 20
    assert await read_all(log) == []
    assert log.stats().messages == 0
    assert await log.append(make_batch(20, 3)) == 20
    assert [message.offset for message in await read_all(log)] == [20, 21, 22]
    assert log.stats().first_timestamp_ms == 1_020


async def test_retention_by_age(store: StoreHarness) -> None:
    await store.open(segment_bytes=2_000)
    log = await open_log(store)
    await fill(log, 10, 20, timestamp_ms=0)  # message i at i ms
    await log.append(make_batch(200, 20, timestamp_ms=1_000_000))
    first = await log.enforce_retention(RetentionLimits(max_age_ms=1_000), now_ms=1_000_500)
    assert first == log.first_offset
    assert 0 < first <= 200
    if store.exact_retention:
        assert first == 200
    assert [message.offset for message in await read_all(log)] == list(range(first, 220))


async def test_retention_by_count(store: StoreHarness) -> None:
    await store.open(segment_bytes=2_000)
    log = await open_log(store)
    await fill(log, 20, 20)
    first = await log.enforce_retention(RetentionLimits(max_messages=100), now_ms=0)
    assert 0 < first <= 300
    if store.exact_retention:
        assert first == 300
    assert log.stats().messages == 400 - first
    assert (await read_all(log))[-1].offset == 399


async def test_retention_by_bytes(store: StoreHarness) -> None:
    await store.open(segment_bytes=2_000)
    log = await open_log(store)
    await fill(log, 20, 20, size=100)
    before = log.stats().bytes
    first = await log.enforce_retention(RetentionLimits(max_bytes=before // 4), now_ms=0)
    after = log.stats()
    limit = before // 4
    assert first > 0
    assert after.bytes < before
    if store.exact_retention:
        assert limit - 200 < after.bytes <= limit
    else:
        assert after.bytes >= limit  # whole segments: never below the limit
    assert (await read_all(log))[-1].offset == 399


async def test_retention_without_limits_keeps_everything(store: StoreHarness) -> None:
    await store.open(segment_bytes=2_000)
    log = await open_log(store)
    await fill(log, 5, 20)
    assert await log.enforce_retention(RetentionLimits(), now_ms=10**12) == 0
    assert log.stats().messages == 100


# -- stats ----------------------------------------------------------------------------------


async def test_stats(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    empty = log.stats()
    assert (empty.first_offset, empty.next_offset, empty.messages) == (0, 0, 0)
    assert (empty.first_timestamp_ms, empty.last_timestamp_ms) == (None, None)
    await fill(log, 3, 10, timestamp_ms=5_000)
    stats = log.stats()
    assert (stats.first_offset, stats.next_offset, stats.messages) == (0, 30, 30)
    assert (stats.first_timestamp_ms, stats.last_timestamp_ms) == (5_000, 5_029)
    assert stats.bytes > 0
    await log.trim(12)
    trimmed = log.stats()
    assert (trimmed.first_offset, trimmed.messages) == (12, 18)
    assert (trimmed.first_timestamp_ms, trimmed.last_timestamp_ms) == (5_012, 5_029)


# -- segments, streams, lifetime ---------------------------------------------------------


async def test_segment_roll_with_small_segments(store: StoreHarness) -> None:
    await store.open(segment_bytes=1_024)
    log = await open_log(store)
    for batch in range(40):
        await log.append(make_batch(batch * 7, 7, size=100))
    stored = await read_all(log)
    assert [message.offset for message in stored] == list(range(280))
    window = await log.read(100, 50, 1 << 30)
    assert [message.offset for message in window] == list(range(100, 150))
    await store.restart()
    log = await open_log(store)
    if store.durable:
        assert [payload_position(message) for message in await read_all(log)] == list(range(280))
        assert await log.append(make_batch(280, 1)) == 280


async def test_delete_stream(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await log.append(make_batch(0, 5))
    other = await store.logs.open_partition(NAMESPACE, "other", 0)
    await other.append(make_batch(0, 2))
    await log.close()
    await store.logs.delete_stream(NAMESPACE, STREAM)
    fresh = await open_log(store)
    assert (fresh.first_offset, fresh.next_offset) == (0, 0)
    assert len(await read_all(other)) == 2


async def test_closed_log_refuses_use(store: StoreHarness) -> None:
    await store.open()
    log = await open_log(store)
    await log.append(make_batch(0, 1))
    await log.close()
    with pytest.raises(StoreClosed):
        await log.append(make_batch(1, 1))


# -- metadata ---------------------------------------------------------------------------


async def test_documents(store: StoreHarness) -> None:
    await store.open()
    metadata = store.metadata
    await metadata.put_document("stream", "b", {"name": "b", "partitions": 2})
    await metadata.put_document("stream", "a", {"name": "a", "nested": {"x": [1, 2]}})
    await metadata.put_document("subscription", "a", {"name": "sub"})
    assert await metadata.list_documents("stream") == [
        {"name": "a", "nested": {"x": [1, 2]}},
        {"name": "b", "partitions": 2},
    ]
    await metadata.put_document("stream", "b", {"name": "b", "partitions": 8})
    await metadata.delete_document("stream", "a")
    await metadata.delete_document("stream", "missing")
    assert await metadata.list_documents("stream") == [{"name": "b", "partitions": 8}]
    assert await metadata.list_documents("nothing") == []
    await store.restart()
    expected = [{"name": "sub"}] if store.durable else []
    assert await store.metadata.list_documents("subscription") == expected


async def test_checkpoints(store: StoreHarness) -> None:
    await store.open()
    metadata = store.metadata
    await metadata.save_checkpoints(
        [("ns/s1/0", b"\x00one"), ("ns/s1/1", b"two"), ("ns/s10/0", b"x")]
    )
    await metadata.save_checkpoints([("ns/s1/0", b"three"), ("odd%_/0", b"y")])
    await metadata.save_checkpoints([])
    assert await metadata.load_checkpoint("ns/s1/0") == b"three"
    assert await metadata.load_checkpoint("missing") is None
    await metadata.delete_checkpoints("ns/s1/")
    assert await metadata.load_checkpoint("ns/s1/0") is None
    assert await metadata.load_checkpoint("ns/s1/1") is None
    assert await metadata.load_checkpoint("ns/s10/0") == b"x"
    await metadata.delete_checkpoints("odd%")
    assert await metadata.load_checkpoint("odd%_/0") is None
    await store.restart()
    expected = b"x" if store.durable else None
    assert await store.metadata.load_checkpoint("ns/s10/0") == expected
