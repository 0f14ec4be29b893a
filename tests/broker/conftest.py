"""Fixtures: a real broker on the embedded store in a temporary directory, with a clock
the test can move forward."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from relaymq.broker import Broker, BrokerSettings, wall_clock_ms


class ManualClock:
    """Wall-clock time plus an offset the test advances."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return wall_clock_ms() + self.offset_ms

    def advance(self, milliseconds: int) -> None:
        self.offset_ms += milliseconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path) -> BrokerSettings:
    return BrokerSettings(data_dir=tmp_path / "data", checkpoint_interval_ms=20)


BrokerFactory = Callable[..., Awaitable[Broker]]


@pytest.fixture
async def open_broker(settings: BrokerSettings, clock: ManualClock) -> AsyncIterator[BrokerFactory]:
    """Opens brokers on the same data directory (to test restarts); closes them all at the end."""
    opened: list[Broker] = []

    async def factory(**overrides: object) -> Broker:
        chosen = (
            settings if not overrides else BrokerSettings(**{**_as_dict(settings), **overrides})
        )
        broker = await Broker.open(chosen, clock_ms=clock)
        opened.append(broker)
        return broker

    yield factory
    for broker in opened:
        await broker.close()


@pytest.fixture
async def broker(open_broker: BrokerFactory) -> Broker:
    return await open_broker()


def _as_dict(settings: BrokerSettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in settings.__slots__}
