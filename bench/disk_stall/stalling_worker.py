"""The fsync worker process with a disk that stalls on a schedule.

``RELAYMQ_BENCH_STALL=PERIOD:LONG_MS:NEXT_MS``: every ``PERIOD`` seconds one
``fdatasync`` takes ``LONG_MS`` milliseconds longer, and the one started after it
``NEXT_MS`` longer (a stalled disk rarely recovers in one sync; when the worker
syncs several files at once, that may be another file's). Then it runs the real
worker (``RELAYMQ_BENCH_REAL_WORKER``), whose syncs go through the patched call.
Only the worker's syncs stall: a pass the server runs on its own threads (a new
segment, a directory, the fallback when the worker is busy or gone) does not.
The worker runs isolated (``-I -S``), so this file imports nothing of RelayMQ.
"""

from __future__ import annotations

import os
import runpy
import threading
import time
from collections.abc import Callable

Sync = Callable[[int], None]


def stalling(fdatasync: Sync, period: float, long_seconds: float, next_seconds: float) -> Sync:
    """``fdatasync`` that sleeps first when the schedule says so."""
    state = {"due": time.monotonic() + period, "after_long": False}
    lock = threading.Lock()  # the worker syncs several files in parallel

    def sync(descriptor: int) -> None:
        extra = 0.0
        with lock:
            now = time.monotonic()
            if state["after_long"]:
                extra, state["after_long"] = next_seconds, False
            elif now >= state["due"]:
                extra, state["after_long"], state["due"] = long_seconds, True, now + period
        if extra:
            time.sleep(extra)
        fdatasync(descriptor)

    return sync


period, long_ms, next_ms = (float(part) for part in os.environ["RELAYMQ_BENCH_STALL"].split(":"))
os.fdatasync = stalling(os.fdatasync, period, long_ms / 1000, next_ms / 1000)
runpy.run_path(os.environ["RELAYMQ_BENCH_REAL_WORKER"], run_name="__main__")
