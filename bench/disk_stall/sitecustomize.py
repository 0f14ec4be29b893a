"""Loaded by every Python process started with this directory on ``PYTHONPATH``
(``run.py`` puts it there): when ``RELAYMQ_BENCH_STALL`` is set, a RelayMQ server
started from such a process runs ``stalling_worker.py`` as its fsync worker process
instead of the real one, which it then runs itself.

A bench-only hack: it points the worker module's ``__file__`` (what the server
starts the worker from) elsewhere, in the bench client too (harmless there: it
starts no worker), and it hides any other ``sitecustomize`` on the path."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("RELAYMQ_BENCH_STALL"):
    from relaymq.store.local import fsync_process

    os.environ["RELAYMQ_BENCH_REAL_WORKER"] = fsync_process.wire.__file__
    fsync_process.wire.__file__ = str(Path(__file__).with_name("stalling_worker.py"))
