"""Tenant isolation benchmark: does a flooding tenant slow its neighbour down?

Starts ``relaymq serve`` (authentication on, every namespace limited to
``--rate`` published messages/s), creates tenants A and B, then measures B's
publish latency (one message per HTTP request, at half its quota) twice:
alone, and while A floods at ``--flood-factor`` times its own quota from a
separate process. Prints B's p50/p99 in both phases, their ratio, and what A
got (mostly 429s). The goal: B's latency within 20 % of its baseline.

Run: ``.venv/bin/python bench/tenant_isolation.py`` (``--help`` for the knobs).
Will be absorbed by ``relaymq bench`` as its ``tenant-isolation`` scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ADMIN_TOKEN = "rmq_" + "b" * 16 + "_" + "C" * 43
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RELAYMQ = Path(sys.executable).with_name("relaymq")


def parse_arguments() -> argparse.Namespace:
    """The benchmark's knobs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="quota, messages/s per tenant")
    parser.add_argument("--flood-factor", type=float, default=10, help="A's rate / its quota")
    parser.add_argument("--seconds", type=float, default=10, help="length of each phase")
    parser.add_argument("--flood-workers", type=int, default=32, help="A's concurrent requests")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    return parser.parse_args()


def free_port() -> int:
    """A TCP port free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, rate: float) -> tuple[subprocess.Popen[bytes], str]:
    """``relaymq serve`` with the quota; returns the process and its URL."""
    port = free_port()
    environment = {
        **os.environ,
        "RELAYMQ_ADMIN_KEY": ADMIN_TOKEN,
        "RELAYMQ_QUOTA_PUBLISH_MESSAGES_PER_SECOND": str(rate),
        "RELAYMQ_LOG_LEVEL": "warning",
    }
    command = [str(RELAYMQ), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base_url + "/readyz", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("relaymq serve did not start")


def create_tenant(base_url: str, name: str) -> str:
    """A namespace with a stream capturing ``events.>``; its publish URL."""
    with httpx.Client(base_url=base_url, headers=HEADERS) as admin:
        admin.post("/v1/namespaces", json={"name": name}).raise_for_status()
        stream = {"name": "events", "subjects": ["events.>"]}
        admin.post(f"/v1/namespaces/{name}/streams", json=stream).raise_for_status()
    return f"{base_url}/v1/namespaces/{name}/publish"


async def measure(url: str, rate: float, seconds: float) -> tuple[list[float], Counter[int]]:
    """Publish one message per request at ``rate``/s, one at a time; the latencies (ms)."""
    latencies_ms: list[float] = []
    statuses: Counter[int] = Counter()
    body = {"subject": "events.b", "payload": "x" * 100}
    async with httpx.AsyncClient(headers=HEADERS, timeout=30) as client:
        await client.post(url, json=body)  # warm the connection
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            before = time.perf_counter()
            response = await client.post(url, json=body)
            latencies_ms.append((time.perf_counter() - before) * 1000)
            statuses[response.status_code] += 1
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
    return latencies_ms, statuses


async def flood_async(url: str, rate: float, seconds: float, workers: int) -> Counter[int]:
    """Publish at ``rate`` requests/s from ``workers`` concurrent loops."""
    statuses: Counter[int] = Counter()
    body = {"subject": "events.a", "payload": "x" * 100}
    limits = httpx.Limits(max_connections=workers)
    async with httpx.AsyncClient(headers=HEADERS, timeout=30, limits=limits) as client:
        started = time.monotonic()

        async def worker(index: int) -> None:
            sent = 0
            while time.monotonic() - started < seconds:
                response = await client.post(url, json=body)
                statuses[response.status_code] += 1
                sent += 1
                due = started + (sent * workers + index) / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))

        await asyncio.gather(*(worker(index) for index in range(workers)))
    return statuses


def flood(url: str, rate: float, seconds: float, workers: int, results: object) -> None:
    """Process body: flood, then report the statuses through ``results`` (a queue)."""
    statuses = asyncio.run(flood_async(url, rate, seconds, workers))
    results.put(dict(statuses))  # type: ignore[attr-defined]


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p99 and mean of latencies."""
    return {
        "p50_ms": round(percentile(latencies_ms, 0.50), 3),
        "p99_ms": round(percentile(latencies_ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(latencies_ms), 3),
    }


def run(arguments: argparse.Namespace) -> dict[str, object]:
    """Both phases; the figures."""
    with tempfile.TemporaryDirectory(prefix="relaymq-bench-") as directory:
        process, base_url = start_server(Path(directory) / "data", arguments.rate)
        try:
            flooder_url = create_tenant(base_url, "tenant-a")
            neighbour_url = create_tenant(base_url, "tenant-b")
            b_rate = arguments.rate / 2
            alone, _ = asyncio.run(measure(neighbour_url, b_rate, arguments.seconds))
            results: multiprocessing.Queue[dict[int, int]] = multiprocessing.Queue()
            flood_rate = arguments.rate * arguments.flood_factor
            flooder = multiprocessing.Process(
                target=flood,
                args=(
                    flooder_url,
                    flood_rate,
                    arguments.seconds + 1,
                    arguments.flood_workers,
                    results,
                ),
            )
            flooder.start()
            time.sleep(0.5)  # let the flood reach its rate
            flooded, b_statuses = asyncio.run(measure(neighbour_url, b_rate, arguments.seconds))
            flooder.join()
            a_statuses = results.get()
        finally:
            process.terminate()
            process.wait(30)
    baseline, loaded = summary(alone), summary(flooded)
    return {
        "quota_messages_per_second": arguments.rate,
        "flood_messages_per_second_target": arguments.rate * arguments.flood_factor,
        "flood_messages_per_second_sent": round(sum(a_statuses.values()) / (arguments.seconds + 1)),
        "a_statuses": a_statuses,
        "b_statuses_during_flood": dict(b_statuses),
        "b_alone": baseline,
        "b_during_flood": loaded,
        "p50_ratio": round(loaded["p50_ms"] / baseline["p50_ms"], 3),
        "p99_ratio": round(loaded["p99_ms"] / baseline["p99_ms"], 3),
    }


def main() -> None:
    """Run and print."""
    arguments = parse_arguments()
    figures = run(arguments)
    if arguments.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
