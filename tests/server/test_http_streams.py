"""Streams over HTTP: lifecycle, pagination, replay by offset and time, ordered + seek."""

from __future__ import annotations

import time

from tests.server.conftest import Api


def publish(api: Api, stream: str, *payloads: str, **fields: object) -> list[dict]:
    """Publish text messages to a stream by name; return the results."""
    messages = [{"payload": payload, **fields} for payload in payloads]
    body = api.ok("POST", f"/streams/{stream}/messages", json={"messages": messages})
    return body["results"]


def read(api: Api, stream: str, **query: object) -> dict:
    """Read a stream partition."""
    return api.ok("GET", f"/streams/{stream}/messages", params=query)


def test_stream_lifecycle(api: Api) -> None:
    created = api.ok(
        "POST",
        "/streams",
        201,
        json={"name": "orders", "subjects": ["orders.>"], "partitions": 2, "description": "all"},
    )
    assert created["config"]["subjects"] == ["orders.>"]
    assert [partition["partition"] for partition in created["partitions"]] == [0, 1]

    body = {"subject": "orders.eu", "key": "k", "payload": "x"}
    [result] = api.ok("POST", "/publish", json=body)["results"]
    info = api.ok("GET", "/streams/orders")
    assert info["messages"] == 1
    assert info["depth"] == 1
    partition = info["partitions"][result["partition"]]
    assert partition["messages"] == 1
    assert partition["last_offset"] == result["offset"]

    patched = api.ok(
        "PATCH", "/streams/orders", json={"description": "changed", "max_age_ms": 60_000}
    )
    assert patched["config"]["description"] == "changed"
    assert patched["config"]["max_age_ms"] == 60_000

    api.ok("POST", "/streams/orders/purge", 204)
    assert api.ok("GET", "/streams/orders")["messages"] == 0
    api.ok("DELETE", "/streams/orders", 204)
    assert api.get("/streams/orders").status_code == 404


def test_subjects_default_to_the_stream_name(api: Api) -> None:
    created = api.ok("POST", "/streams", 201, json={"name": "audit"})
    assert created["config"]["subjects"] == ["audit"]
    [result] = publish(api, "audit", "entry")
    assert result == {"stream": "audit", "partition": 0, "offset": 0, "duplicate": False}


def test_pagination_walks_every_stream_once(api: Api) -> None:
    names = [f"s{number}" for number in range(5)]
    for name in reversed(names):
        api.ok("POST", "/streams", 201, json={"name": name})
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.ok("GET", "/streams", params=query)
        seen += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3


def test_replay_by_offset(api: Api) -> None:
    api.ok("POST", "/streams", 201, json={"name": "log"})
    publish(api, "log", *[f"m{number}" for number in range(10)])
    page = read(api, "log", from_offset=4, limit=3)
    assert [message["payload"] for message in page["messages"]] == ["m4", "m5", "m6"]
    assert [message["offset"] for message in page["messages"]] == [4, 5, 6]
    assert page["next_offset"] == 7
    rest = read(api, "log", from_offset=page["next_offset"])
    assert [message["payload"] for message in rest["messages"]] == ["m7", "m8", "m9"]
    assert read(api, "log", from_offset=10)["messages"] == []


def test_replay_by_timestamp(api: Api) -> None:
    api.ok("POST", "/streams", 201, json={"name": "timeline"})
    publish(api, "timeline", "old1", "old2")
    time.sleep(0.05)
    publish(api, "timeline", "new1", "new2")
    everything = read(api, "timeline")["messages"]
    since_ms = everything[2]["timestamp_ms"]
    assert since_ms > everything[1]["timestamp_ms"]
    recent = read(api, "timeline", from_timestamp_ms=since_ms)["messages"]
    assert [message["payload"] for message in recent] == ["new1", "new2"]


def test_ordered_subscription_seek_replays(api: Api) -> None:
    api.ok("POST", "/streams", 201, json={"name": "ledger"})
    body = {"name": "projector", "stream": "ledger", "mode": "ordered"}
    api.ok("POST", "/subscriptions", 201, json=body)
    publish(api, "ledger", *[f"t{number}" for number in range(5)])

    fetch_body = {"max_messages": 10, "consumer_id": "projector-1"}
    messages = api.ok("POST", "/subscriptions/projector/fetch", json=fetch_body)["messages"]
    assert [message["payload"] for message in messages] == ["t0", "t1", "t2", "t3", "t4"]
    [outcome] = api.ok(
        "POST", "/subscriptions/projector/ack", json={"receipts": [messages[-1]["receipt"]]}
    )["results"]
    assert outcome["ok"]

    api.ok("POST", "/subscriptions/projector/seek", 204, json={"offset": 2})
    replayed = api.ok("POST", "/subscriptions/projector/fetch", json=fetch_body)["messages"]
    assert [message["payload"] for message in replayed] == ["t2", "t3", "t4"]


def test_subscription_lifecycle_and_stats(api: Api) -> None:
    api.ok("POST", "/streams", 201, json={"name": "clicks"})
    body = {"name": "counter", "stream": "clicks", "ack_timeout_ms": 5_000, "max_deliveries": 3}
    created = api.ok("POST", "/subscriptions", 201, json=body)
    assert created["config"]["max_deliveries"] == 3
    publish(api, "clicks", "c1", "c2", "c3")

    info = api.ok("GET", "/subscriptions/counter")
    assert info["pending"] == 3
    assert info["lag_messages"] == 3
    api.ok("POST", "/subscriptions/counter/fetch", json={"max_messages": 1})
    info = api.ok("GET", "/subscriptions/counter")
    assert info["in_flight"] == 1
    assert info["depth"] == 3
    stream = api.ok("GET", "/streams/clicks")
    assert stream["subscriptions"] == 1
    assert stream["in_flight"] == 1

    patched = api.ok("PATCH", "/subscriptions/counter", json={"ack_timeout_ms": 9_000})
    assert patched["config"]["ack_timeout_ms"] == 9_000
    listed = api.ok("GET", "/subscriptions", params={"stream": "clicks"})["items"]
    assert [item["name"] for item in listed] == ["counter"]

    api.ok("POST", "/subscriptions/counter/purge", 204)
    assert api.ok("GET", "/subscriptions/counter")["pending"] == 0
    api.ok("DELETE", "/subscriptions/counter", 204)
    assert api.ok("GET", "/subscriptions")["items"] == []


def test_namespace_stats(api: Api) -> None:
    api.ok("POST", "/queues", 201, json={"name": "tasks", "dead_letter": False})
    api.ok(
        "POST", "/queues/tasks/messages", json={"messages": [{"payload": "a"}, {"payload": "b"}]}
    )
    stats = api.ok("GET", "/stats")
    assert stats["namespace"] == api.namespace
    assert stats["streams"] == 1
    assert stats["subscriptions"] == 1
    assert stats["messages"] == 2
    assert stats["pending"] == 2
