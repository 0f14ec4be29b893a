"""Keep the disk busy: write ``--mib`` MiB to a file and ``fdatasync`` it, pause, again.

Another tenant's writes, on purpose: its flushes make the device stall the server's
now and then, so a latency run meets a busy disk of the same kind each time (with
``bench/loop_waits.py``, finding 49 in ``docs/performance.md``). Writes to ``--dir``
(the disk the server's data directory is on), a new file each round, deleted after (as
``dd if=/dev/zero of=F bs=1M count=100 conv=fdatasync; rm F`` would), until stopped.

Run: ``.venv/bin/python bench/disk_busy.py --mib 100 --pause 1 &`` ... ``kill %1``
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading

CHUNK_BYTES = 1 << 20


def main() -> int:
    """Write and sync until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="a directory on the disk")
    parser.add_argument("--mib", type=int, default=100, help="MiB written per round")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between rounds")
    options = parser.parse_args()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    chunk = b"\xa5" * CHUNK_BYTES
    try:
        while not stopping.is_set():
            # A new file each round, deleted after: allocation and discards, as dd would.
            with tempfile.NamedTemporaryFile(dir=options.dir, prefix="disk-busy-") as handle:
                for _ in range(options.mib):
                    handle.write(chunk)
                handle.flush()
                os.fdatasync(handle.fileno())
            stopping.wait(options.pause)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
