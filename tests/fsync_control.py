"""Holding or failing the local store's fsync passes from a test (the server may run
in another thread): the partition log's sync is patched, and passes then run on the
committer's threads instead of its worker process."""

from __future__ import annotations

import errno
import threading

import pytest

from relaymq.store.local.log import LocalPartitionLog, SyncJob


class HeldSync:
    """Holds every fsync pass until :meth:`release`; with ``fail`` set, the next pass
    to run fails with an I/O error."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.fail = False

    def release(self) -> None:
        """Let every pass run, now and from now on."""
        self.gate.set()


def hold_fsync(monkeypatch: pytest.MonkeyPatch, namespace: str | None = None) -> HeldSync:
    """Patch the partition logs' sync so that it waits for (and may fail on) a
    :class:`HeldSync`: every log's, or only those of ``namespace`` (on a server
    other tests share); ``monkeypatch`` undoes it."""
    held = HeldSync()
    real_run_sync = LocalPartitionLog.run_sync

    def run_sync(self: LocalPartitionLog, job: SyncJob) -> None:
        if namespace is None or namespace in self.directory.parts:
            held.gate.wait(10)
            if held.fail:
                held.fail = False
                raise OSError(errno.EIO, "injected I/O error")
        real_run_sync(self, job)

    monkeypatch.setattr(LocalPartitionLog, "run_sync", run_sync)
    monkeypatch.setattr(LocalPartitionLog, "datasync_target", lambda self, job: None)
    return held
