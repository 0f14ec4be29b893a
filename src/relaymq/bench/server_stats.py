"""The server's CPU time and peak memory during a bench run.

Owns two samplers with one interface: :class:`ProcessStats` reads a process
the bench spawned, with its children (psutil; the kernel's own peak RSS,
``VmHWM``, where Linux has it), and :class:`MetricsStats` reads a running server's ``GET /metrics``
(``process_cpu_seconds_total`` and ``process_resident_memory_bytes``, the
prometheus-client process collector; the peak is the largest sample seen, so
it is sampled on every progress tick).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import psutil


@dataclass(frozen=True)
class ServerSample:
    """CPU seconds used so far and the resident set now, in bytes (``None``: unknown)."""

    cpu_seconds: float | None
    rss_bytes: int | None


class ServerStats(Protocol):
    """Something that can tell how much CPU and memory the server uses."""

    peak_rss_bytes: int | None

    async def sample(self) -> ServerSample:
        """Read the figures now (and remember the peak memory)."""
        ...


class ProcessStats:
    """CPU and memory of a local server process."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss_bytes: int | None = None

    async def sample(self) -> ServerSample:
        """CPU seconds of the process and its children (the server's fsync worker is
        one) and its RSS now; the peak RSS from the kernel."""
        cpu_seconds = tree_cpu_seconds(self.process.pid)
        try:
            rss_bytes = self.process.memory_info().rss
        except psutil.Error:
            return ServerSample(None, None)
        peak = kernel_peak_rss_bytes(self.process.pid) or rss_bytes
        self.peak_rss_bytes = max(self.peak_rss_bytes or 0, peak, rss_bytes)
        return ServerSample(cpu_seconds, rss_bytes)


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) of ``pid`` and its live descendants, with what their
    reaped children used; ``None`` once ``pid`` is gone."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # a descendant that just exited
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def kernel_peak_rss_bytes(pid: int) -> int | None:
    """``VmHWM`` of ``/proc/PID/status`` (Linux's peak resident set), if readable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


class MetricsStats:
    """CPU and memory of a remote server, from its Prometheus endpoint."""

    def __init__(self, base_url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=5)
        self.peak_rss_bytes: int | None = None

    async def sample(self) -> ServerSample:
        """Parse the two process metrics; unknown when the endpoint cannot be read."""
        try:
            response = await self.client.get("/metrics")
            response.raise_for_status()
        except httpx.HTTPError:
            return ServerSample(None, None)
        values = metric_values(response.text)
        cpu = values.get("process_cpu_seconds_total")
        rss = values.get("process_resident_memory_bytes")
        rss_bytes = int(rss) if rss is not None else None
        if rss_bytes is not None:
            self.peak_rss_bytes = max(self.peak_rss_bytes or 0, rss_bytes)
        return ServerSample(cpu, rss_bytes)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


def metric_values(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition, by metric name."""
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        try:
            values[name] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    return values
