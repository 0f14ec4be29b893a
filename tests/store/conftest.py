"""The one place that knows the store implementations the conformance suite runs on.

A new store joins by adding a harness class and a parameter to ``store``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relaymq.store.base import FsyncPolicy, LogStore, MetadataStore
from relaymq.store.local import LocalStore
from relaymq.store.memory import MemoryLogStore, MemoryMetadataStore


class StoreHarness:
    """Opens, restarts and closes one implementation for a test.

    Capability flags say what a test may expect instead of skipping a feature:

    * ``durable``: data survives :meth:`restart`.
    * ``exact_retention``: retention drops exactly the messages over a limit (a
      segment store drops whole segments and may keep more).
    """

    name = ""
    durable = False
    exact_retention = False

    def __init__(self) -> None:
        self.logs: LogStore
        self.metadata: MetadataStore

    async def open(self, *, segment_bytes: int | None = None) -> None:
        """Open the store (``segment_bytes`` is a hint for segmented stores)."""
        raise NotImplementedError

    async def restart(self) -> None:
        """Close and open again with the same settings."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close whatever is open."""
        raise NotImplementedError


class LocalHarness(StoreHarness):
    durable = True

    def __init__(self, data_dir: Path, fsync: FsyncPolicy) -> None:
        super().__init__()
        self.name = f"local-{fsync.value}"
        self._data_dir = data_dir
        self._options: dict[str, Any] = {"fsync": fsync, "min_free_bytes": 0}
        self._store: LocalStore | None = None

    async def open(self, *, segment_bytes: int | None = None) -> None:
        if segment_bytes is not None:
            self._options["segment_bytes"] = segment_bytes
        self._store = await LocalStore.open(self._data_dir, **self._options)
        self.logs = self.metadata = self._store

    async def restart(self) -> None:
        await self.close()
        await self.open()

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


class MemoryHarness(StoreHarness):
    name = "memory"
    exact_retention = True

    async def open(self, *, segment_bytes: int | None = None) -> None:
        self.logs = MemoryLogStore()
        self.metadata = MemoryMetadataStore()

    async def restart(self) -> None:
        # A restart of a memory store loses everything: that is what it is.
        await self.close()
        await self.open()

    async def close(self) -> None:
        await self.logs.close()
        await self.metadata.close()


IMPLEMENTATIONS = ["local-always", "local-batch", "local-never", "memory"]


@pytest.fixture(params=IMPLEMENTATIONS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    """An unopened harness for each implementation; the test calls ``open``."""
    harness: StoreHarness
    if request.param == "memory":
        harness = MemoryHarness()
    else:
        harness = LocalHarness(tmp_path / "data", FsyncPolicy(request.param.split("-")[1]))
    yield harness
    if hasattr(harness, "logs"):  # opened by the test
        await harness.close()
