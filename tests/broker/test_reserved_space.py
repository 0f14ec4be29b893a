"""The ``reserve_chunk_bytes`` setting reaches the embedded store: an active segment
holds that much reserved space ahead of its data, or none at 0."""

from __future__ import annotations

import pytest

from relaymq.broker import BrokerSettings
from relaymq.core.message import Message

from .conftest import BrokerFactory

NAMESPACE = "default"


@pytest.mark.parametrize("chunk_bytes", [0, 64 * 1024])
async def test_the_setting_sizes_the_reserved_space(
    open_broker: BrokerFactory, settings: BrokerSettings, chunk_bytes: int
) -> None:
    broker = await open_broker(reserve_chunk_bytes=chunk_bytes)
    await broker.create_queue(NAMESPACE, "jobs", dead_letter=False)
    await broker.publish(NAMESPACE, [Message(subject="jobs", payload=b"m0")])
    (segment,) = settings.data_dir.glob("streams/default/jobs/0/*.log")
    size = segment.stat().st_size
    if chunk_bytes == 0:
        assert size < 1024  # the header and one record
    else:
        assert size == chunk_bytes
