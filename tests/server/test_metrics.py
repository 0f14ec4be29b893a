"""``GET /metrics`` on a real server: the exposition parses and the counters move."""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.server.conftest import AUTH_HEADERS, Api, RunningServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    """Every sample of one scrape, by name and labels (parsing it on the way)."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_stream_and_subscription_counters_move(http: httpx.Client, api: Api) -> None:
    api.ok("POST", "/streams", 201, json={"name": "orders", "subjects": ["orders.>"]})
    api.ok("POST", "/subscriptions", 201, json={"name": "work", "stream": "orders"})
    stream = {"namespace": api.namespace, "stream": "orders"}
    subscription = {**stream, "subscription": "work"}
    before = scrape(http)
    assert value(before, "relaymq_subscription_pending_messages", **subscription) == 0
    messages = [{"subject": "orders.a", "payload": "12345"} for _ in range(10)]
    api.ok("POST", "/publish", json={"messages": messages})
    after_publish = scrape(http)
    assert value(after_publish, "relaymq_stream_published_messages_total", **stream) == 10
    assert value(after_publish, "relaymq_stream_published_bytes_total", **stream) == 50
    assert value(after_publish, "relaymq_stream_stored_messages", **stream) == 10
    assert value(after_publish, "relaymq_subscription_lag_messages", **subscription) == 10
    fetched = api.ok("POST", "/subscriptions/work/fetch", json={"max_messages": 10})
    receipts = [message["receipt"] for message in fetched["messages"]]
    api.ok("POST", "/subscriptions/work/ack", json={"receipts": receipts[:6]})
    after_ack = scrape(http)
    assert value(after_ack, "relaymq_subscription_delivered_messages_total", **subscription) == 10
    assert value(after_ack, "relaymq_subscription_delivered_bytes_total", **subscription) == 50
    assert value(after_ack, "relaymq_subscription_acked_messages_total", **subscription) == 6
    assert value(after_ack, "relaymq_subscription_in_flight_messages", **subscription) == 4


def test_fsync_and_process_metrics(http: httpx.Client, api: Api) -> None:
    api.ok("POST", "/streams", 201, json={"name": "orders", "subjects": ["orders.>"]})
    api.ok("POST", "/publish", json={"messages": [{"subject": "orders.a"}]})
    samples = scrape(http)
    assert value(samples, "relaymq_fsync_duration_seconds_count") >= 1
    assert value(samples, "relaymq_fsync_duration_seconds_bucket", le="+Inf") >= 1
    assert value(samples, "process_resident_memory_bytes") > 0


def test_http_requests_are_timed_by_route_template(http: httpx.Client, api: Api) -> None:
    api.ok("POST", "/streams", 201, json={"name": "orders", "subjects": ["orders.>"]})
    api.get("/streams/does-not-exist")
    samples = scrape(http)
    created = {"method": "POST", "route": "/v1/namespaces/{namespace}/streams", "status": "201"}
    assert value(samples, "relaymq_http_request_duration_seconds_count", **created) >= 1
    missing = {
        "method": "GET",
        "route": "/v1/namespaces/{namespace}/streams/{stream}",
        "status": "404",
    }
    assert value(samples, "relaymq_http_request_duration_seconds_count", **missing) >= 1
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not any(api.namespace in (route or "") for route in routes), "raw paths leak"


async def test_open_connections_count_websockets(
    running_server: RunningServer, http: httpx.Client
) -> None:
    url = running_server.base_url.replace("http://", "ws://") + "/v1/namespaces/default/ws"
    baseline = value(scrape(http), "relaymq_open_connections", protocol="websocket")
    async with connect(url, additional_headers=AUTH_HEADERS) as websocket:
        await websocket.send(json.dumps({"op": "ping"}))
        await websocket.recv()
        opened = value(scrape(http), "relaymq_open_connections", protocol="websocket")
        assert opened == baseline + 1
    assert value(scrape(http), "relaymq_open_connections", protocol="http") >= 1
