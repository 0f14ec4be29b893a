"""Latency while the disk stalls, on purpose and on a schedule.

A real disk's flush stalls come when they come (``relaymq bench disk`` shows how
often); this makes them come every ``PERIOD`` seconds and last ``LONG_MS`` (then
``NEXT_MS`` for the sync after), so two versions of the code can be compared under
the same stalls. It runs ``relaymq bench ARGS`` with this directory on the
``PYTHONPATH``: its ``sitecustomize`` makes the spawned server's fsync worker
process the stalling one (``stalling_worker.py``). Use ``--spawn``; ``--data-dir
/dev/shm`` keeps the real disk's own stalls out.

Run: ``.venv/bin/python bench/disk_stall/run.py --stall 2:500:40 -- latency --spawn
--data-dir /dev/shm --rate 10000 --duration 10 --linger-ms 1 --early-delivery``
(``docs/performance.md``, finding 48).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run ``relaymq bench`` under the stall schedule; its exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stall", default="2:500:40", help="PERIOD:LONG_MS:NEXT_MS")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="relaymq bench arguments")
    options = parser.parse_args()
    try:
        period, long_ms, next_ms = (float(part) for part in options.stall.split(":"))
    except ValueError:
        parser.error("--stall is PERIOD:LONG_MS:NEXT_MS, e.g. 2:500:40")
    if period <= 0 or long_ms < 0 or next_ms < 0:
        parser.error("--stall needs a positive period and stalls of 0 ms or more")
    arguments = options.bench[1:] if options.bench[:1] == ["--"] else options.bench
    paths = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "RELAYMQ_BENCH_STALL": options.stall,
    }
    relaymq = Path(sys.executable).with_name("relaymq")
    return subprocess.call([str(relaymq), "bench", *arguments], env=environment)


if __name__ == "__main__":
    sys.exit(main())
