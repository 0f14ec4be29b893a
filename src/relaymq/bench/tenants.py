"""The ``tenants`` bench: does a tenant flooding past its quota slow its neighbour down?

Owns the tenant-isolation scenario of ``relaymq bench``. It creates two
namespaces, A (the flooder) and B (the neighbour), each with a stream, the
same publish quota and a key of its own, then measures B's publish latency
(one message per request, sequentially, at ``--rate``, within its quota)
twice: alone, and while A publishes at ``flood_factor`` times its quota from a
separate process (so the flood competes for the server, not for B's event
loop). It reports B's percentiles in both phases and their ratios, what A got
(accepted, refused, refusals carrying ``Retry-After``), how often B was
refused (must be never) and the server's CPU in each phase.

Run as ``python -m relaymq.bench.tenants ORDER_JSON`` this module is the
flood process: it prints ``ready`` once connected, floods, then prints its
counts as one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from relaymq import errors
from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.loops import default_event_loop, loop_factory
from relaymq.bench.server_stats import ServerStats
from relaymq.bench.transports import Endpoint
from relaymq.client import AsyncClient, RetryPolicy

STREAM_NAME = "events"
FLOOD_WARMUP_SECONDS = 0.5  # the flood reaches its rate before B's clock starts
FLOOD_MARGIN_SECONDS = 1.0  # and outlasts B's measured window
READY_LINE = "ready"
HTTP_TIMEOUT_SECONDS = 30
GOAL_RATIO = 1.2
WEBSOCKET_FLOOD_CONNECTIONS = 4


@dataclass(frozen=True)
class TenantsPlan:
    """What a tenants run is asked to do. Rates in messages per second."""

    protocol: str = "http"
    quota_per_second: float = 20.0
    flood_factor: float = 10.0
    neighbour_rate_per_second: float = 10.0
    duration_seconds: float = 10.0
    message_bytes: int = 100
    flood_connections: int = 16
    event_loop: str = "asyncio"  # B's client (see relaymq.bench.loops); A's is uvloop

    @property
    def flood_rate_per_second(self) -> float:
        """A's target publish rate."""
        return self.quota_per_second * self.flood_factor


@dataclass(frozen=True)
class Tenant:
    """A namespace of the run, the key that publishes in it, and its subject."""

    namespace: str
    token: str
    subject: str


@dataclass
class Outcomes:
    """What one side's publishes got."""

    accepted: int = 0
    refused: int = 0  # 429
    retry_after_seen: int = 0  # refusals that said when to retry
    failed: int = 0  # anything else

    def to_dict(self) -> dict[str, int]:
        """JSON-able counts."""
        return asdict(self)


@dataclass
class NeighbourPhase:
    """B's latencies and outcomes in one phase, with the server's CPU."""

    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    outcomes: Outcomes = field(default_factory=Outcomes)
    seconds: float = 0.0
    server_cpu_seconds: float | None = None


# -- publishing one message, per protocol ---------------------------------------------------


class HttpPublisher:
    """Publishes one message per ``POST /v1/namespaces/NS/publish``."""

    def __init__(self, endpoint_url: str, tenant: Tenant, connections: int) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"{endpoint_url}/v1/namespaces/{tenant.namespace}",
            headers={"Authorization": f"Bearer {tenant.token}"},
            timeout=HTTP_TIMEOUT_SECONDS,
            limits=httpx.Limits(max_connections=connections),
        )

    async def publish(self, body: bytes, outcomes: Outcomes) -> None:
        """One request; its outcome counted."""
        try:
            response = await self.client.post(
                "/publish", content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError:
            outcomes.failed += 1
            return
        if response.status_code == 200:
            outcomes.accepted += 1
        elif response.status_code == 429:
            outcomes.refused += 1
            outcomes.retry_after_seen += "retry-after" in response.headers
        else:
            outcomes.failed += 1

    async def close(self) -> None:
        """Close the connections."""
        await self.client.aclose()


class WebSocketPublisher:
    """Publishes one message per ``publish`` frame through the SDK."""

    def __init__(self, client: AsyncClient, subject: str) -> None:
        self.client = client
        self.subject = subject

    @classmethod
    async def open(cls, endpoint_url: str, tenant: Tenant) -> WebSocketPublisher:
        """Connect now, so no measured window holds a handshake."""
        client = AsyncClient(
            endpoint_url,
            token=tenant.token,
            namespace=tenant.namespace,
            retry=RetryPolicy(timeout_seconds=10),
        )
        await client.connect()
        return cls(client, tenant.subject)

    async def publish(self, body: bytes, outcomes: Outcomes) -> None:
        """One frame, awaited until confirmed or refused."""
        try:
            await self.client.publish(self.subject, body)
        except errors.RateLimited as error:
            outcomes.refused += 1
            outcomes.retry_after_seen += "retry_after_seconds" in error.details
        except errors.RelayError:
            outcomes.failed += 1
        else:
            outcomes.accepted += 1

    async def close(self) -> None:
        """Close the connection."""
        await self.client.close()


Publisher = HttpPublisher | WebSocketPublisher


def message_body(subject: str, message_bytes: int) -> bytes:
    """A JSON publish body (HTTP) whose bytes double as the payload (WebSocket)."""
    padding = "x" * max(0, message_bytes)
    return json.dumps({"subject": subject, "payload": padding}).encode()


async def open_publisher(
    protocol: str, endpoint_url: str, tenant: Tenant, connections: int
) -> Publisher:
    """A publisher of ``tenant`` over ``protocol``."""
    if protocol == "http":
        return HttpPublisher(endpoint_url, tenant, connections)
    return await WebSocketPublisher.open(endpoint_url, tenant)


# -- the neighbour: B ---------------------------------------------------------------------------


async def measure_neighbour(
    publisher: Publisher, tenant: Tenant, plan: TenantsPlan, stats: ServerStats
) -> NeighbourPhase:
    """B publishes one message at a time at its rate for the duration. A latency
    runs from the request's start to its answer, or from when it was due if the
    previous answer came after that (so a slow answer cannot hide the next one's
    wait), never from a late timer wake-up."""
    phase = NeighbourPhase()
    body = message_body(tenant.subject, plan.message_bytes)
    interval_ns = int(1e9 / plan.neighbour_rate_per_second)
    await publisher.publish(body, Outcomes())  # warm the connection and the route
    before = await stats.sample()
    started_ns = time.perf_counter_ns()
    deadline_ns = started_ns + int(plan.duration_seconds * 1e9)
    sequence, answered_ns = 0, started_ns
    while (due_ns := started_ns + sequence * interval_ns) < deadline_ns:
        delay_ns = due_ns - time.perf_counter_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / 1e9)
        sent_ns = time.perf_counter_ns()
        await publisher.publish(body, phase.outcomes)
        start_ns = due_ns if answered_ns > due_ns else sent_ns
        answered_ns = time.perf_counter_ns()
        phase.latency.record((answered_ns - start_ns) // 1000)
        sequence += 1
    phase.seconds = (time.perf_counter_ns() - started_ns) / 1e9
    after = await stats.sample()
    if before.cpu_seconds is not None and after.cpu_seconds is not None:
        phase.server_cpu_seconds = after.cpu_seconds - before.cpu_seconds
    return phase


# -- the flood: A, in a process of its own -----------------------------------------------------


async def flood(order: dict[str, Any]) -> dict[str, Any]:
    """Publish at ``rate_per_second`` over ``connections`` paced workers for
    ``seconds``; A's outcomes and the rate it really sent."""
    tenant = Tenant(order["namespace"], order["token"], order["subject"])
    protocol, connections = order["protocol"], order["connections"]
    publishers = [
        await open_publisher(protocol, order["url"], tenant, connections)
        for _ in range(1 if protocol == "http" else WEBSOCKET_FLOOD_CONNECTIONS)
    ]
    body = message_body(tenant.subject, order["message_bytes"])
    outcomes = Outcomes()
    print(READY_LINE, flush=True)
    started = time.perf_counter()
    rate, seconds = order["rate_per_second"], order["seconds"]

    async def worker(index: int) -> None:
        publisher = publishers[index % len(publishers)]
        sent = 0
        while time.perf_counter() - started < seconds:
            await publisher.publish(body, outcomes)
            sent += 1
            due = started + (sent * connections + index) / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))

    await asyncio.gather(*(worker(index) for index in range(connections)))
    elapsed = time.perf_counter() - started
    for publisher in publishers:
        await publisher.close()
    sent_total = outcomes.accepted + outcomes.refused + outcomes.failed
    return {**outcomes.to_dict(), "sent_per_second": round(sent_total / elapsed, 1)}


class FloodProcess:
    """``python -m relaymq.bench.tenants`` flooding as tenant A."""

    def __init__(self, order: dict[str, Any]) -> None:
        self.order = order
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the flood and wait until its connections are open."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relaymq.bench.tenants",
            json.dumps(self.order),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if line.decode().strip() != READY_LINE:
            raise errors.Unavailable("the flood process did not start")

    async def result(self) -> dict[str, Any]:
        """A's outcomes, once the flood is over."""
        assert self.process is not None and self.process.stdout is not None
        line = await self.process.stdout.readline()
        await self.process.wait()
        if not line:
            raise errors.Unavailable("the flood process ended without a result")
        return dict(json.loads(line))

    def kill(self) -> None:
        """Stop a flood that is still running (the run failed)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


def flood_order(plan: TenantsPlan, endpoint_url: str, tenant: Tenant) -> dict[str, Any]:
    """What the flood process is told to do."""
    return {
        "url": endpoint_url,
        "namespace": tenant.namespace,
        "token": tenant.token,
        "subject": tenant.subject,
        "protocol": plan.protocol,
        "connections": plan.flood_connections,
        "message_bytes": plan.message_bytes,
        "rate_per_second": plan.flood_rate_per_second,
        "seconds": FLOOD_WARMUP_SECONDS + plan.duration_seconds + FLOOD_MARGIN_SECONDS,
    }


# -- the run ------------------------------------------------------------------------------------


async def create_tenant(
    admin: httpx.AsyncClient, namespace: str, quota_per_second: float, subject: str
) -> Tenant:
    """A namespace with a stream capturing ``events.>``, the publish quota, and a
    key of its own that may publish there."""
    (await admin.post("/v1/namespaces", json={"name": namespace})).raise_for_status()
    stream = {"name": STREAM_NAME, "subjects": ["events.>"]}
    (await admin.post(f"/v1/namespaces/{namespace}/streams", json=stream)).raise_for_status()
    quota = {"publish_messages_per_second": quota_per_second}
    (await admin.put(f"/v1/namespaces/{namespace}/quota", json=quota)).raise_for_status()
    key = {"name": "bench", "grants": [{"role": "publish"}]}
    created = await admin.post(f"/v1/namespaces/{namespace}/keys", json=key)
    created.raise_for_status()
    return Tenant(namespace, created.json()["token"], subject)


async def delete_tenant(admin: httpx.AsyncClient, tenant: Tenant) -> None:
    """Remove a run's namespace (its stream first)."""
    with contextlib.suppress(httpx.HTTPError):
        await admin.delete(f"/v1/namespaces/{tenant.namespace}/streams/{STREAM_NAME}")
        await admin.delete(f"/v1/namespaces/{tenant.namespace}")


async def run_tenants(plan: TenantsPlan, endpoint: Endpoint, stats: ServerStats) -> dict[str, Any]:
    """Both phases against ``endpoint`` (an admin token); the raw figures."""
    run_id = secrets.token_hex(3)
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
    async with httpx.AsyncClient(
        base_url=endpoint.url, headers=headers, timeout=HTTP_TIMEOUT_SECONDS
    ) as admin:
        quota = plan.quota_per_second
        flooder = await create_tenant(admin, f"bench-{run_id}-a", quota, "events.a")
        neighbour = await create_tenant(admin, f"bench-{run_id}-b", quota, "events.b")
        try:
            return await both_phases(plan, endpoint.url, flooder, neighbour, stats)
        finally:
            for tenant in (flooder, neighbour):
                await delete_tenant(admin, tenant)


async def both_phases(
    plan: TenantsPlan, url: str, flooder: Tenant, neighbour: Tenant, stats: ServerStats
) -> dict[str, Any]:
    """B alone, then B while A floods."""
    publisher = await open_publisher(plan.protocol, url, neighbour, 1)
    flood_process = FloodProcess(flood_order(plan, url, flooder))
    try:
        alone = await measure_neighbour(publisher, neighbour, plan, stats)
        await flood_process.start()
        await asyncio.sleep(FLOOD_WARMUP_SECONDS)
        flooded = await measure_neighbour(publisher, neighbour, plan, stats)
        flood_outcomes = await flood_process.result()
    finally:
        flood_process.kill()
        await publisher.close()
    return {"alone": alone, "flooded": flooded, "flood": flood_outcomes}


# -- the report ---------------------------------------------------------------------------------


def phase_figures(phase: NeighbourPhase) -> dict[str, Any]:
    """One of B's phases as JSON."""
    summary = phase.latency.summary()
    latency = None if summary is None else summary.to_dict()
    cpu = phase.server_cpu_seconds
    return {
        "latency_ms": latency,
        "outcomes": phase.outcomes.to_dict(),
        "seconds": round(phase.seconds, 3),
        "server_cpu_percent": None if cpu is None else round(100 * cpu / phase.seconds, 1),
    }


def ratios(alone: dict[str, Any], flooded: dict[str, Any]) -> dict[str, float | None]:
    """Flooded / alone, per percentile."""
    result: dict[str, float | None] = {}
    for name in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
        base = (alone["latency_ms"] or {}).get(name)
        loaded = (flooded["latency_ms"] or {}).get(name)
        key = name.removesuffix("_ms")
        result[key] = round(loaded / base, 3) if base and loaded is not None else None
    return result


def build_report(
    plan: TenantsPlan, figures: dict[str, Any], server: dict[str, Any], peak_rss_bytes: int | None
) -> dict[str, Any]:
    """The JSON document of a tenants run."""
    from relaymq.bench.report import machine

    alone, flooded = phase_figures(figures["alone"]), phase_figures(figures["flooded"])
    flood_outcomes = figures["flood"]
    neighbour_refused = alone["outcomes"]["refused"] + flooded["outcomes"]["refused"]
    phase_ratios = ratios(alone, flooded)
    return {
        "workload": "tenants",
        "protocol": plan.protocol,
        "plan": {**asdict(plan), "flood_rate_per_second": plan.flood_rate_per_second},
        "machine": machine(),
        "server": {**server, "peak_rss_bytes": peak_rss_bytes},
        "neighbour": {"alone": alone, "flooded": flooded},
        "ratios": phase_ratios,
        "flood": {"target_per_second": plan.flood_rate_per_second, **flood_outcomes},
        "neighbour_refused": neighbour_refused,
        "isolated": neighbour_refused == 0 and flood_outcomes["refused"] > 0,
        "goal_ratio": GOAL_RATIO,
        "goal_met": all(
            (phase_ratios[name] or float("inf")) <= GOAL_RATIO for name in ("p50", "p99")
        ),
    }


def print_report(report: dict[str, Any]) -> None:
    """The report as tables."""
    from rich.console import Console
    from rich.table import Table

    from relaymq.bench.report import data_on, print_memory_warning

    console = Console()
    plan, flood_figures = report["plan"], report["flood"]
    console.print(
        f"[bold]relaymq bench tenants[/bold] over {report['protocol']}: quota "
        f"{plan['quota_per_second']:g} msg/s each; A floods at {plan['flood_rate_per_second']:g} "
        f"msg/s ({plan['flood_factor']:g}x), B publishes {plan['neighbour_rate_per_second']:g} "
        f"msg/s, {plan['duration_seconds']:g} s per phase, B's client on {plan['event_loop']}; "
        f"server {report['server']['url']}{data_on(report['server'])}"
    )
    print_memory_warning(report["server"], console)
    table = Table(title="B's publish latency, ms")
    for column in ("phase", "requests", "p50", "p90", "p99", "max", "429s", "server CPU"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for name, phase in report["neighbour"].items():
        latency = phase["latency_ms"] or {}
        cpu = phase["server_cpu_percent"]
        table.add_row(
            name,
            f"{latency.get('count', 0):,}",
            *(f"{latency.get(key, 0):.2f}" for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
            str(phase["outcomes"]["refused"]),
            "?" if cpu is None else f"{cpu:.0f}%",
        )
    ratio_cells = ["?" if value is None else f"x{value:.2f}" for value in report["ratios"].values()]
    table.add_row("ratio", "", *ratio_cells, "", "")
    console.print(table)
    console.print(
        f"A: sent {flood_figures['sent_per_second']:,.0f}/s, accepted "
        f"{flood_figures['accepted']:,}, refused {flood_figures['refused']:,} "
        f"(Retry-After on {flood_figures['retry_after_seen']:,}), failed {flood_figures['failed']}"
    )
    verdict = "isolated" if report["isolated"] else "[bold red]NOT isolated[/bold red]"
    goal = "met" if report["goal_met"] else "not met"
    console.print(
        f"{verdict}: B refused {report['neighbour_refused']} time(s); "
        f"latency goal (p50 and p99 within x{report['goal_ratio']}) {goal}"
    )


def command(target: Any, output: Any, options: dict[str, Any]) -> None:
    """``relaymq bench tenants``: run, print, and exit 1 unless B was never refused
    while A was."""
    from relaymq.bench.runner import SpawnedServer
    from relaymq.runtime import tune_garbage_collector

    # A collector pause in this process would count as B's latency: tuned as the
    # server tunes itself.
    tune_garbage_collector()
    quota = options["quota"]
    plan = TenantsPlan(
        protocol=options["protocol"],
        quota_per_second=quota,
        flood_factor=options["flood_factor"],
        neighbour_rate_per_second=options["rate"] or quota / 2,
        duration_seconds=options["duration"] or TenantsPlan.duration_seconds,
        message_bytes=options["message_bytes"],
        event_loop=options["event_loop"],
    )
    new_loop = loop_factory(plan.event_loop)
    try:
        if options["spawn"]:
            with (
                SpawnedServer(options["fsync"], options["data_dir"]) as server,
                asyncio.Runner(loop_factory=new_loop) as runner,
            ):
                endpoint = Endpoint(server.url, server.token, "default")
                report = runner.run(measure(plan, endpoint, server))
        else:
            endpoint = Endpoint(target.url, target.token, target.namespace)
            with asyncio.Runner(loop_factory=new_loop) as runner:
                report = runner.run(measure(plan, endpoint, None))
    except (errors.RelayError, httpx.HTTPError) as error:
        if isinstance(error, errors.RelayError):
            output.error(error)
        else:
            output.error(errors.Unavailable(f"tenants bench failed: {error}"))
        raise SystemExit(1) from None
    if output.as_json:
        output.json(report)
    else:
        print_report(report)
    if not report["isolated"]:
        raise SystemExit(1)


async def measure(plan: TenantsPlan, endpoint: Endpoint, server: Any) -> dict[str, Any]:
    """Run against a spawned server or an attached one; the report."""
    from relaymq.bench.runner import stats_for
    from relaymq.bench.server_stats import MetricsStats

    stats = stats_for(server, endpoint)
    described = {
        "spawned": server is not None,
        "url": endpoint.url,
        "fsync": server.fsync if server is not None else None,
        "data_filesystem": server.data_filesystem if server is not None else None,
    }
    try:
        figures = await run_tenants(plan, endpoint, stats)
        await stats.sample()  # the peak memory, once more
    finally:
        if isinstance(stats, MetricsStats):
            await stats.close()
    return build_report(plan, figures, described, stats.peak_rss_bytes)


def flood_main() -> None:
    """The flood process: the order is the first argument; the result goes to stdout."""
    order = json.loads(sys.argv[1])
    # uvloop where installed: the flood should spend its CPU on requests.
    with asyncio.Runner(loop_factory=loop_factory(default_event_loop())) as runner:
        result = runner.run(flood(order))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    flood_main()
