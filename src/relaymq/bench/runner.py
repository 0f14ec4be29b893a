"""Running a bench: against a server it spawns, or one already running.

Owns :class:`SpawnedServer` (``relaymq serve`` on a free port, its embedded
store in a temporary directory with the asked fsync policy, an admin key of
its own; stopped and removed afterwards), :func:`filesystem_of` (what the
store's fsyncs land on) and :func:`run_bench`, which wires a
:class:`~relaymq.bench.workloads.Workload` to the server statistics and the
live progress display and returns the finished :class:`RunState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from relaymq.bench.server_stats import MetricsStats, ProcessStats, ServerStats
from relaymq.bench.transports import Endpoint
from relaymq.bench.verify import Publications
from relaymq.bench.workloads import BenchPlan, RunState, Workload
from relaymq.client import AsyncClient
from relaymq.errors import Unavailable

T = TypeVar("T")

START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 30
PROGRESS_INTERVAL_SECONDS = 0.25
# A paced (latency) run ticks once a second: each tick redraws the progress bar in the
# bench's loop (~1 ms) and, against an attached server, scrapes its /metrics (~2 ms of
# the server's loop), and a message arriving meanwhile waits.
PACED_PROGRESS_INTERVAL_SECONDS = 1.0
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
"""Filesystems in RAM: an fsync there costs nothing and makes nothing durable."""


def progress_interval_seconds(plan: BenchPlan) -> float:
    """How often the server is sampled and the progress redrawn during ``plan``."""
    return (
        PROGRESS_INTERVAL_SECONDS
        if plan.rate_per_second is None
        else PACED_PROGRESS_INTERVAL_SECONDS
    )


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin_key() -> str:
    """A fresh admin API key in the server's token format."""
    return f"rmq_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)[:43]}"


class SpawnedServer:
    """``relaymq serve`` in a child process, on an embedded store in a temporary directory
    (made in ``parent``, else in the system's temporary directory)."""

    def __init__(self, fsync: str, parent: Path | None = None) -> None:
        self.fsync = fsync
        self.token = admin_key()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = Path(tempfile.mkdtemp(prefix="relaymq-bench-", dir=parent))
        self.data_dir = self.root / "data"
        self.data_filesystem = filesystem_of(self.root)
        self.log_path = self.root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it is ready."""
        command = [
            sys.executable,
            "-c",
            "from relaymq.cli.main import main; main()",
            "serve",
            *("--port", str(self.port), "--data-dir", str(self.data_dir)),
            *("--fsync", self.fsync, "--log-level", "warning"),
        ]
        environment = {**os.environ, "RELAYMQ_ADMIN_KEY": self.token}  # noqa: TID251 - a child's env
        # The log goes to a file, not a pipe: nobody reads a pipe during the run, and
        # a server writing into a full one would stall (and skew the figures).
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=environment, stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(f"relaymq serve exited: {self.stderr_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise Unavailable("relaymq serve did not become ready")

    def stderr_tail(self) -> str:
        """The end of the server's log, for an error message."""
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it hangs; remove the data directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SpawnedServer:
        try:
            self.start()
        except BaseException:
            self.stop()  # a server that failed to start leaves no directory behind
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """Within: SIGTERM leaves as Ctrl-C does, through every ``with`` block's exit, so
    that a terminated bench stops the server it started (outside the main thread,
    where no handler can be set, nothing changes)."""
    try:
        previous = signal.signal(signal.SIGTERM, _exit_terminated)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_terminated(signal_number: int, frame: object) -> None:
    raise SystemExit(128 + signal_number)


def run_until_terminated(runner: asyncio.Runner, main: Coroutine[Any, Any, T]) -> T:
    """``runner.run(main)``, where SIGTERM cancels ``main`` and then exits as
    :func:`terminated_as_exit` does. Raised straight from the signal handler, the
    exit could land inside an event-loop callback (a protocol's
    ``data_received``), which uvloop reports as a transport error and swallows;
    the loop's own signal handling runs it as a callback of its own instead."""
    terminated = False

    async def until_terminated() -> T:
        nonlocal terminated
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None

        def on_terminate() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        previous = signal.getsignal(signal.SIGTERM)
        try:
            loop.add_signal_handler(signal.SIGTERM, on_terminate)
        except (NotImplementedError, RuntimeError, ValueError):  # no signals here
            return await main
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, previous)

    try:
        return runner.run(until_terminated())
    except asyncio.CancelledError:
        if terminated:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


async def run_bench(
    plan: BenchPlan,
    endpoint: Endpoint,
    stats: ServerStats,
    on_tick: Callable[[RunState], None] | None = None,
) -> RunState:
    """Run the plan's workload against ``endpoint``; ``on_tick`` sees the live state
    every :func:`progress_interval_seconds` (the server is sampled then too, for
    its peak memory)."""
    state = RunState(plan, secrets.token_hex(4), Publications(plan.producers))
    interval = progress_interval_seconds(plan)
    ticker = asyncio.create_task(tick_forever(state, stats, on_tick, interval))
    try:
        async with AsyncClient(
            endpoint.url, token=endpoint.token, namespace=endpoint.namespace
        ) as admin:
            await Workload(plan, endpoint, stats, state).run(admin)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    await stats.sample()
    state.stage = "done"
    return state


async def tick_forever(
    state: RunState,
    stats: ServerStats,
    on_tick: Callable[[RunState], None] | None,
    interval_seconds: float,
) -> None:
    """Sample the server and refresh the progress display, until cancelled."""
    while True:
        await stats.sample()
        if on_tick is not None:
            on_tick(state)
        await asyncio.sleep(interval_seconds)


def filesystem_of(path: Path) -> str | None:
    """The type of the filesystem ``path`` is on (``ext4``, ``tmpfs``...), if known."""
    resolved = path.resolve()
    mounts = [
        partition
        for partition in psutil.disk_partitions(all=True)
        if resolved.is_relative_to(partition.mountpoint)
    ]
    if not mounts:
        return None
    # The last of the longest: a filesystem mounted over another hides it.
    return max(reversed(mounts), key=lambda partition: len(partition.mountpoint)).fstype


def stats_for(server: SpawnedServer | None, endpoint: Endpoint) -> ServerStats:
    """Process statistics of a spawned server, ``/metrics`` of an attached one."""
    if server is not None:
        return ProcessStats(server.pid)
    return MetricsStats(endpoint.url, endpoint.token)
