"""The disk alone: how long a small write + ``fdatasync`` takes, without RelayMQ.

Every confirm under ``fsync=batch`` waits for one such sync, so this is the floor of the
end-to-end latency on a machine, and its tail (a flush the disk holds for 200 ms) is a
tail no broker on that disk can hide. Writes ``--bytes`` per sync into a file whose space
was reserved beforehand (as the segments' is), ``--rate`` times a second for
``--seconds``, and prints the percentiles and how many syncs took over 10 and 100 ms.
Run it next to ``relaymq bench latency`` results to see what the disk allowed that hour.

Run: ``.venv/bin/python bench/disk_fsync.py [--dir DIR] [--seconds 15] [--rate 1000]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

RESERVED_BYTES = 64 << 20


def measure(directory: str, seconds: float, rate: float, size: int) -> list[float]:
    """Sync durations (ms) of a paced write + ``fdatasync`` loop."""
    durations: list[float] = []
    record = b"x" * size
    interval = 1 / rate
    with tempfile.NamedTemporaryFile(dir=directory) as handle:
        descriptor = handle.fileno()
        os.posix_fallocate(descriptor, 0, RESERVED_BYTES)
        os.fsync(descriptor)
        position = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            os.pwrite(descriptor, record, position % RESERVED_BYTES)
            os.fdatasync(descriptor)
            durations.append((time.perf_counter() - started) * 1000)
            position += size
            time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the file goes")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=1_000, help="syncs per second")
    parser.add_argument("--bytes", type=int, default=256, help="bytes written per sync")
    arguments = parser.parse_args()
    durations = sorted(measure(arguments.dir, arguments.seconds, arguments.rate, arguments.bytes))

    def quantile(fraction: float) -> float:
        return durations[min(len(durations) - 1, int(fraction * len(durations)))]

    print(
        f"{len(durations)} syncs: p50 {quantile(0.5):.3f} p90 {quantile(0.9):.3f} "
        f"p99 {quantile(0.99):.3f} p99.9 {quantile(0.999):.3f} max {durations[-1]:.1f} ms; "
        f"over 10 ms: {sum(1 for d in durations if d > 10)}, "
        f"over 100 ms: {sum(1 for d in durations if d > 100)}"
    )


if __name__ == "__main__":
    main()
