"""The Prometheus endpoint ``GET /metrics`` and everything it exposes.

Owns the app's metrics registry: a collector that reads ``broker.metrics()`` at
scrape time (the broker keeps plain integer counters; nothing here runs per
message), the fsync latency histogram of the broker's bucket counts, an ASGI
middleware timing HTTP requests by route template and status, the open-connections
gauge that the HTTP, WebSocket and SSE adapters update, and the default process
and Python collectors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relaymq.api.http.auth import AUTHORIZED
from relaymq.broker.fsync_timings import FsyncTimings

if TYPE_CHECKING:
    from relaymq.broker import Broker
    from relaymq.config import Settings

HTTP_BUCKETS_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
UNMATCHED_ROUTE = "unmatched"
PROTOCOLS = ("http", "websocket", "sse")

STREAM_LABELS = ["namespace", "stream"]
SUBSCRIPTION_LABELS = ["namespace", "stream", "subscription"]

STREAM_COUNTERS = {
    "published_messages": "Messages published to the stream.",
    "published_bytes": "Bytes published to the stream.",
}
STREAM_GAUGES = {
    "stored_messages": "Messages stored in the stream now.",
    "stored_bytes": "Bytes stored in the stream now.",
    "failed_partitions": "Partitions that take no appends after a failed write of messages "
    "already delivered early (restart the server).",
}
SUBSCRIPTION_COUNTERS = {
    "delivered_messages": "Deliveries to consumers (redeliveries included).",
    "delivered_bytes": "Payload bytes delivered to consumers.",
    "acked": "Messages acknowledged.",
    "nacked": "Messages negatively acknowledged.",
    "redelivered": "Messages delivered more than once.",
    "dead_lettered": "Messages moved to the dead-letter stream.",
}
SUBSCRIPTION_GAUGES = {
    "in_flight": "Messages delivered and not yet acked.",
    "pending": "Messages not yet delivered (retries waiting included).",
    "lag_messages": "Messages between the ack floor and the end of the stream.",
    "lag_seconds": "Age of the oldest message not yet acked.",
    "consumers": "Consumers attached now.",
}
COUNTER_NAMES = {  # exposed names of the subscription counters (``_total`` is added)
    "acked": "acked_messages",
    "nacked": "nacked_messages",
    "redelivered": "redelivered_messages",
    "dead_lettered": "dead_lettered_messages",
}
GAUGE_NAMES = {"in_flight": "in_flight_messages", "pending": "pending_messages"}


class OpenConnections:
    """Open connections by protocol. ``http`` counts requests in progress (SSE
    streams included); ``websocket`` and ``sse`` count those connections."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(PROTOCOLS, 0)

    def open(self, protocol: str) -> None:
        """One more ``protocol`` connection."""
        self.counts[protocol] += 1

    def close(self, protocol: str) -> None:
        """One fewer ``protocol`` connection."""
        self.counts[protocol] -= 1

    def count(self, protocol: str) -> int:
        """Open ``protocol`` connections."""
        return self.counts[protocol]

    def persistent(self) -> int:
        """Open WebSocket and SSE connections (those that outlive a request)."""
        return self.counts["websocket"] + self.counts["sse"]


def open_connections(app: Any) -> OpenConnections:
    """The app's connection gauge (created on first use, shared by every adapter)."""
    state = app.state
    if not hasattr(state, "open_connections"):
        state.open_connections = OpenConnections()
    return state.open_connections


def fsync_family(timings: FsyncTimings) -> HistogramMetricFamily:
    """The broker's fsync pass timings in Prometheus form (cumulative buckets)."""
    buckets: list[tuple[str, float]] = []
    running = 0
    bounds = (*timings.bounds_seconds, float("inf"))
    for bound, count in zip(bounds, timings.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    family = HistogramMetricFamily(
        "relaymq_fsync_duration_seconds", "Duration of the store's fsync passes."
    )
    family.add_metric([], buckets, timings.sum_seconds)
    return family


class BrokerCollector(Collector):
    """Reads ``broker.metrics()`` and the connection counts at each scrape."""

    def __init__(self, broker: Broker, connections: OpenConnections) -> None:
        self.broker = broker
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        """Every RelayMQ metric family, built from one broker snapshot."""
        snapshot = self.broker.metrics()
        yield from stream_families(snapshot.streams)
        yield from subscription_families(snapshot.subscriptions)
        yield fsync_family(self.broker.fsync_timings)
        yield self.connection_family()

    def describe(self) -> list[Metric]:
        """Nothing: the families are only known at scrape time."""
        return []

    def connection_family(self) -> GaugeMetricFamily:
        """``relaymq_open_connections`` by protocol."""
        family = GaugeMetricFamily(
            "relaymq_open_connections", "Open connections by protocol.", labels=["protocol"]
        )
        for protocol in PROTOCOLS:
            family.add_metric([protocol], self.connections.count(protocol))
        return family


def stream_families(streams: list[Any]) -> list[Metric]:
    """The per-stream families."""
    return families("relaymq_stream_", STREAM_LABELS, streams, STREAM_COUNTERS, STREAM_GAUGES)


def subscription_families(subscriptions: list[Any]) -> list[Metric]:
    """The per-subscription families."""
    return families(
        "relaymq_subscription_",
        SUBSCRIPTION_LABELS,
        subscriptions,
        SUBSCRIPTION_COUNTERS,
        SUBSCRIPTION_GAUGES,
    )


def families(
    prefix: str,
    labels: list[str],
    rows: list[Any],
    counters: dict[str, str],
    gauges: dict[str, str],
) -> list[Metric]:
    """One counter or gauge family per field of ``rows``, labelled by ``labels``."""
    result: list[Metric] = []
    for field, documentation in counters.items():
        name = prefix + COUNTER_NAMES.get(field, field)
        family = CounterMetricFamily(name, documentation, labels=labels)
        result.append(filled(family, labels, field, rows))
    for field, documentation in gauges.items():
        name = prefix + GAUGE_NAMES.get(field, field)
        family = GaugeMetricFamily(name, documentation, labels=labels)
        result.append(filled(family, labels, field, rows))
    return result


def filled(family: Any, labels: list[str], field: str, rows: list[Any]) -> Metric:
    """``family`` with one sample per row: the row's ``field``, labelled by ``labels``."""
    for row in rows:
        family.add_metric([getattr(row, label) for label in labels], getattr(row, field))
    return family


class RequestMetrics:
    """ASGI middleware: times each HTTP request by method, route template and
    status, and counts requests in progress. SSE streams are counted but not
    timed (their duration is the client's, not the server's)."""

    def __init__(self, app: ASGIApp, histogram: Histogram, connections: OpenConnections) -> None:
        self.app = app
        self.histogram = histogram
        self.connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, then observe its duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_seconds = time.perf_counter()
        response: dict[str, Any] = {"status": 500, "streaming": False}

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["streaming"] = is_event_stream(message)
            await send(message)

        self.connections.open("http")
        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.connections.close("http")
            if not response["streaming"]:
                elapsed_seconds = time.perf_counter() - started_seconds
                labels = (scope["method"], route_template(scope), str(response["status"]))
                self.histogram.labels(*labels).observe(elapsed_seconds)


def is_event_stream(start: Message) -> bool:
    """Whether a response start message opens a ``text/event-stream``."""
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return value.startswith(b"text/event-stream")
    return False


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/namespaces/{namespace}``), never
    the raw path, so label cardinality stays bounded."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def build_registry(
    broker: Broker, connections: OpenConnections
) -> tuple[CollectorRegistry, Histogram]:
    """A fresh registry (one per app, so tests can run many apps) with every collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker, connections))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    histogram = Histogram(
        "relaymq_http_request_duration_seconds",
        "Duration of HTTP requests by method, route template and status.",
        ["method", "route", "status"],
        buckets=HTTP_BUCKETS_SECONDS,
        registry=registry,
    )
    return registry, histogram


def install(app: FastAPI, broker: Broker, settings: Settings) -> None:
    """Register ``GET /metrics`` and the request-timing middleware on ``app``."""
    connections = open_connections(app)
    registry, histogram = build_registry(broker, connections)
    app.state.metrics_registry = registry
    app.add_middleware(RequestMetrics, histogram=histogram, connections=connections)

    async def metrics(request: Request) -> Response:
        """The Prometheus text exposition of every metric."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics", metrics, methods=["GET"], include_in_schema=False, dependencies=AUTHORIZED
    )
