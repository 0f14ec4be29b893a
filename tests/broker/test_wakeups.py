"""A waiting consumer hears of new messages even when the notification came while
it was still looking (suspended in a slow read of another partition)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from relaymq.broker.models import StreamConfig, SubscriptionConfig
from relaymq.broker.settings import BrokerSettings
from relaymq.broker.stream import StreamHandle
from relaymq.broker.subscription import SubscriptionHandle
from relaymq.core.message import Message
from relaymq.store.memory import MemoryPartitionLog


class GatedLog(MemoryPartitionLog):
    """A partition whose reads wait for a gate: a slow disk read."""

    def __init__(self, partition: int) -> None:
        super().__init__(partition)
        self.gate = asyncio.Event()

    async def read(self, from_offset: int, max_messages: int, max_bytes: int) -> list[Message]:
        await self.gate.wait()
        return await super().read(from_offset, max_messages, max_bytes)


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


async def test_a_notification_during_a_fill_is_not_lost(tmp_path: Path) -> None:
    settings = BrokerSettings(data_dir=tmp_path)
    fast, slow = MemoryPartitionLog(0), GatedLog(1)
    config = StreamConfig(name="s", subjects=["s.>"], partitions=2)
    stream = StreamHandle("default", config, 0, [fast, slow], settings)
    await MemoryPartitionLog.append(slow, [Message(subject="s.other") for _ in range(3)])

    async def no_dead_letters(*_: object) -> None:
        return None

    filtered = SubscriptionConfig(name="q", stream="s", filter_subject="s.match")
    subscription = SubscriptionHandle(filtered, 0, stream, {}, {}, settings, 1, no_dead_letters)
    stream.subscriptions["q"] = subscription
    waiting = asyncio.create_task(subscription.fetch("B", 10, 5_000, None, wall_clock_ms))
    await asyncio.sleep(0)  # B found nothing in partition 0 and now reads partition 1
    appended = [Message(subject="s.match") for _ in range(3)]
    await fast.append(appended)  # readable, readers told: B is not waiting yet
    slow.gate.set()
    await asyncio.sleep(0.01)  # B's read ends; it takes nothing from its stale look
    taken = await subscription.fetch("A", 1, 0, None, wall_clock_ms)  # another consumer
    subscription.on_append(0, appended)  # the append returns
    delivered = await asyncio.wait_for(waiting, 1)  # not after its 5 s long-poll ran out
    offsets = sorted(delivery.message.offset for delivery in [*taken, *delivered])
    assert offsets == [0, 1, 2]
    assert delivered


async def no_dead_letters(*_: object) -> None:
    return None


async def queue_of(tmp_path: Path, messages: int) -> SubscriptionHandle:
    """A one-partition stream holding ``messages`` messages and its subscription."""
    settings = BrokerSettings(data_dir=tmp_path)
    log = MemoryPartitionLog(0)
    stream = StreamHandle("default", StreamConfig(name="s", subjects=["s.>"]), 0, [log], settings)
    await log.append([Message(subject="s.a") for _ in range(messages)])
    subscription = SubscriptionHandle(
        SubscriptionConfig(name="q", stream="s"), 0, stream, {}, {}, settings, 1, no_dead_letters
    )
    stream.subscriptions["q"] = subscription
    return subscription


async def test_an_ack_with_nothing_deliverable_wakes_no_fetcher(tmp_path: Path) -> None:
    subscription = await queue_of(tmp_path, 1)
    [delivery] = await subscription.fetch("A", 10, 0, None, wall_clock_ms)
    waiting = asyncio.create_task(subscription.fetch("A", 10, 5_000, None, wall_clock_ms))
    await asyncio.sleep(0.01)
    version = subscription.signal.version
    await subscription.settle(
        [delivery.receipt], subscription.dispatcher.ack, wall_clock_ms, only_frees=True
    )
    assert subscription.signal.version == version  # the caught-up fetch slept on
    assert not waiting.done()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting


async def test_an_ack_that_frees_a_consumers_room_wakes_its_fetch(tmp_path: Path) -> None:
    subscription = await queue_of(tmp_path, 2)
    [first] = await subscription.fetch("A", 10, 0, 1, wall_clock_ms)
    waiting = asyncio.create_task(subscription.fetch("A", 10, 5_000, 1, wall_clock_ms))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # at its in-flight limit
    await subscription.settle(
        [first.receipt], subscription.dispatcher.ack, wall_clock_ms, only_frees=True
    )
    [second] = await asyncio.wait_for(waiting, 1)  # not after its 5 s long-poll ran out
    assert second.message.offset == 1
