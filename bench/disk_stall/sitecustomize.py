"""Loaded by every Python process started with this directory on ``PYTHONPATH``
(``run.py`` puts it there): when ``RELAYMQ_BENCH_STALL`` is set, a RelayMQ server
started from such a process runs ``stalling_worker.py`` as its fsync worker process
instead of the real one, which it then runs itself."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("RELAYMQ_BENCH_STALL"):
    from relaymq.store.local import fsync_process

    os.environ["RELAYMQ_BENCH_REAL_WORKER"] = fsync_process.wire.__file__
    fsync_process.wire.__file__ = str(Path(__file__).with_name("stalling_worker.py"))
