"""What the server's event loop waits for in the kernel during a bench run.

Runs ``relaymq bench ARGS`` (use ``--spawn``), finds the server it spawned, and looks at
the server's main thread, the event loop's, every half millisecond through
``/proc/<pid>/task/<pid>/stat``. Whenever the thread sleeps uninterruptibly (state
``D``: mostly a system call or page fault waiting for the disk) it reads the kernel stack
(``/proc/<pid>/task/<pid>/stack``, root only). At the end it prints the waits of
``--min-ms`` or more, longest first, each with when it began (seconds after the server
was found: the bench's setup takes the first second or two, start-up's own reads of
code and files from a busy disk show there) and its stack. The loop should never wait
for the disk: such a wait holds every delivery of the server (findings 49 and 50 in
``docs/performance.md`` found ``posix_fallocate`` and the close of a deleted segment
waiting out flush stalls). Linux only.

Run: ``.venv/bin/python bench/loop_waits.py -- latency --spawn --rate 10000 --duration 10
--linger-ms 1 --early-delivery`` (as root, beside ``bench/disk_busy.py`` for a busy disk).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.0005


def find_server(bench: psutil.Process, timeout_seconds: float = 30.0) -> psutil.Process | None:
    """The ``relaymq serve`` process ``bench`` spawned, once it runs."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and bench.is_running():
        for child in bench.children(recursive=True):
            try:
                if "serve" in child.cmdline():
                    return child
            except psutil.Error:
                continue
        time.sleep(0.05)
    return None


def sample_waits(pid: int) -> list[tuple[float, float, str]]:
    """``(milliseconds, seconds since sampling began, kernel stack)`` of each
    uninterruptible (``D``) wait of ``pid``'s main thread, until the process exits. Two
    samples in ``D`` are one wait only if the thread did not run in between (its count
    of time slices in ``schedstat`` is the same); a sample late by a busy machine
    lengthens a wait by the lateness."""
    task = Path(f"/proc/{pid}/task/{pid}")
    waits: list[tuple[float, float, str]] = []
    began = time.perf_counter()
    current: tuple[float, float, str, str] | None = None  # start, last seen, slices, stack
    while True:
        try:
            stat = (task / "stat").read_text()
            slices = (task / "schedstat").read_text().split()[2]
            waiting = stat[stat.rindex(")") + 2] == "D"
            now = time.perf_counter()
            if current is not None and (not waiting or slices != current[2]):
                waits.append(((current[1] - current[0]) * 1000, current[0] - began, current[3]))
                current = None
            if waiting and current is None:
                current = (now, now, slices, _kernel_stack(task))
            elif waiting and current is not None:
                current = (current[0], now, slices, current[3])
        except (FileNotFoundError, ProcessLookupError):
            if current is not None:  # still waiting when the process ended
                waits.append(((current[1] - current[0]) * 1000, current[0] - began, current[3]))
            return waits
        time.sleep(SAMPLE_SECONDS)


def _kernel_stack(task: Path) -> str:
    try:
        return (task / "stack").read_text()
    except PermissionError:
        return "(reading the kernel stack needs root)"


def main() -> int:
    """Run the bench, sample its server, print the long waits; the bench's exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-ms", type=float, default=3.0, help="shortest wait to print")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="relaymq bench arguments")
    options = parser.parse_args()
    arguments = options.bench[1:] if options.bench[:1] == ["--"] else options.bench
    if "--spawn" not in arguments:
        parser.error("the bench must spawn its server (--spawn)")
    relaymq = Path(sys.executable).with_name("relaymq")
    bench = subprocess.Popen([str(relaymq), "bench", *arguments])
    server = find_server(psutil.Process(bench.pid))
    waits = sample_waits(server.pid) if server is not None else []
    status = bench.wait()
    if server is None:
        print("loop_waits: no spawned server found", file=sys.stderr)
        return status or 1
    long_waits = sorted((wait for wait in waits if wait[0] >= options.min_ms), reverse=True)
    print(
        f"\nevent-loop thread: {len(waits)} D-state waits, {len(long_waits)} of "
        f"{options.min_ms:g} ms or more",
        file=sys.stderr,
    )
    for milliseconds, at_seconds, stack in long_waits:
        print(
            f"\n{milliseconds:.1f} ms, {at_seconds:.2f} s after the server started"
            f"\n{stack.rstrip()}",
            file=sys.stderr,
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
