"""The runtime tuning of ``relaymq serve``: what freezing the start-up objects keeps."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaymq.broker import Broker
from relaymq.broker.models import StreamConfig, SubscriptionConfig
from relaymq.broker.settings import BrokerSettings
from relaymq.runtime import freeze_start_up_objects


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    """Freezing is process-wide: give the other tests their collector back."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen_afterwards")
async def test_a_recovered_stream_frozen_at_start_up_is_freed_once_deleted(
    tmp_path: Path,
) -> None:
    settings = BrokerSettings(data_dir=tmp_path / "data")
    broker = await Broker.open(settings)
    await broker.create_namespace("tenant")
    await broker.create_stream("tenant", StreamConfig(name="orders", subjects=["orders.>"]))
    await broker.create_subscription("tenant", SubscriptionConfig(name="audit", stream="orders"))
    await broker.close()
    broker = await Broker.open(settings)  # recovered state, as `relaymq serve` freezes it
    try:
        stream = broker._namespace("tenant").streams["orders"]
        subscription = stream.subscriptions["audit"]
        kept = [
            weakref.ref(stream),
            weakref.ref(subscription),
            weakref.ref(subscription.dispatcher),
            weakref.ref(stream.logs[0]),
        ]
        del stream, subscription
        freeze_start_up_objects()
        assert gc.get_freeze_count() > 0
        await broker.delete_stream("tenant", "orders")
        async with asyncio.timeout(5):  # an fsync pass in flight may still hold the log
            while any(reference() is not None for reference in kept):
                await asyncio.sleep(0.01)
    finally:
        await broker.close()
