"""Local store only: the files of deleted segments are unlinked at once and closed on the
store's closer thread, never on the event loop (the last close frees the blocks, which
can wait for the disk)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from relaymq.store.local import LocalStore
from relaymq.store.local.closer import DeletedFileCloser

from .test_conformance import make_batch, read_all
from .test_local_recovery import PARTITION, partition_directory, segment_files

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds descriptors in /proc/self/fd"
)


def descriptors_of(paths: list[Path]) -> set[int]:
    """This process's open descriptors of ``paths``."""
    wanted = {str(path) for path in paths}
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") in wanted:
                found.add(int(name))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
    return found


async def test_trimmed_segments_are_closed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await LocalStore.open(tmp_path, min_free_bytes=0, segment_bytes=4_000)
    log = await store.open_partition(*PARTITION)
    for batch in range(20):
        await log.append(make_batch(batch * 10, 10, size=100))
    *sealed, active = segment_files(tmp_path)
    assert len(sealed) >= 2
    sealed_files = [*sealed, *(path.with_suffix(".index") for path in sealed)]
    descriptors = descriptors_of(sealed_files)
    assert len(descriptors) == len(sealed_files)
    closed_on: dict[int, str] = {}
    real_close = os.close

    def close(descriptor: int) -> None:
        if descriptor in descriptors:  # the first close: a reused number may close again
            closed_on.setdefault(descriptor, threading.current_thread().name)
        real_close(descriptor)

    monkeypatch.setattr(os, "close", close)
    await log.trim(190)
    assert not any(path.exists() for path in sealed_files)  # unlinked at once
    assert (await read_all(log))[0].offset == 190
    await store.close()  # waits for the closer
    assert set(closed_on) == descriptors
    assert all(name.startswith("relaymq-close") for name in closed_on.values()), closed_on
    assert sorted(path.name for path in partition_directory(tmp_path).glob("*.log")) == [
        active.name
    ]


async def test_a_deletion_after_the_store_closed_closes_at_once(tmp_path: Path) -> None:
    """A trim or a read can outlive the store's close: its files are closed right away,
    not on a thread no one waits for."""
    closer = DeletedFileCloser()
    await closer.wait_closed()
    threads = threading.active_count()
    descriptor = os.open(tmp_path / "late.log", os.O_CREAT | os.O_RDWR, 0o644)
    closer.close([descriptor])
    with pytest.raises(OSError):
        os.fstat(descriptor)
    assert threading.active_count() == threads
