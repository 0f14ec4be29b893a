"""Queues over HTTP: publish, fetch, ack, nack, redelivery, dead letters, ordering, dedup."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import httpx

from tests.server.conftest import AUTH_HEADERS, Api, RunningServer, expect, start_server

NO_BACKOFF = {"initial_ms": 0, "max_ms": 0, "multiplier": 1.0, "jitter": 0.0}


def create_queue(api: Api, name: str, **options: object) -> dict:
    """Create a queue and return its description."""
    return api.ok("POST", "/queues", 201, json={"name": name, **options})


def send(api: Api, queue: str, *payloads: str, **fields: object) -> list[dict]:
    """Publish text messages to a queue; return the publish results."""
    messages = [{"payload": payload, **fields} for payload in payloads]
    body = api.ok("POST", f"/queues/{queue}/messages", json={"messages": messages})
    return body["results"]


def fetch(api: Api, queue: str, max_messages: int = 10, wait_ms: int = 0) -> list[dict]:
    """Fetch messages from a queue."""
    body = {"max_messages": max_messages, "wait_ms": wait_ms}
    return api.ok("POST", f"/queues/{queue}/fetch", json=body)["messages"]


def settle(api: Api, queue: str, verb: str, receipts: list[str], **fields: object) -> list[dict]:
    """Ack, nack, extend or term receipts; return the per-receipt results."""
    body = {"receipts": receipts, **fields}
    return api.ok("POST", f"/queues/{queue}/{verb}", json=body)["results"]


def test_queue_flow_publish_fetch_ack(api: Api) -> None:
    queue = create_queue(api, "orders")
    assert queue["name"] == "orders"
    assert queue["dead_letter_queue"] == "orders-dlq"
    results = send(api, "orders", "first", "second")
    assert [result["offset"] for result in results] == [0, 1]
    assert all(result["stream"] == "orders" and not result["duplicate"] for result in results)

    messages = fetch(api, "orders")
    assert [message["payload"] for message in messages] == ["first", "second"]
    first = messages[0]
    assert first["subject"] == "orders"
    assert first["encoding"] == "utf-8"
    assert first["id"] == "0-0"
    assert first["delivery_count"] == 1
    assert first["lease_deadline_ms"] > first["timestamp_ms"]
    assert api.ok("GET", "/queues/orders")["in_flight"] == 2

    outcomes = settle(api, "orders", "ack", [message["receipt"] for message in messages])
    assert [outcome["ok"] for outcome in outcomes] == [True, True]
    assert fetch(api, "orders") == []
    stats = api.ok("GET", "/queues/orders")
    assert stats["in_flight"] == 0
    assert stats["depth"] == 0


def test_nack_redelivers_with_a_higher_delivery_count(api: Api) -> None:
    create_queue(api, "jobs", backoff=NO_BACKOFF)
    send(api, "jobs", "work")
    [message] = fetch(api, "jobs")
    [outcome] = settle(api, "jobs", "nack", [message["receipt"]], delay_ms=0, error="boom")
    assert outcome == {
        "receipt": message["receipt"],
        "ok": True,
        "error": None,
        "deadline_ms": None,
    }

    [again] = fetch(api, "jobs", wait_ms=2_000)
    assert again["payload"] == "work"
    assert again["delivery_count"] == 2
    assert again["receipt"] != message["receipt"]
    assert api.ok("GET", "/queues/jobs")["redelivered"] >= 1


def test_extend_returns_the_new_deadline(api: Api) -> None:
    create_queue(api, "slow", ack_timeout_ms=1_000)
    send(api, "slow", "work")
    [message] = fetch(api, "slow")
    [outcome] = settle(api, "slow", "extend", [message["receipt"]], extend_ms=60_000)
    assert outcome["ok"]
    assert outcome["deadline_ms"] > message["lease_deadline_ms"]


def test_stale_receipt_is_refused_after_redelivery(api: Api) -> None:
    create_queue(api, "leases", ack_timeout_ms=200, backoff=NO_BACKOFF)
    send(api, "leases", "work")
    [first] = fetch(api, "leases")
    time.sleep(0.4)
    [second] = fetch(api, "leases", wait_ms=3_000)
    assert second["delivery_count"] == 2

    [stale] = settle(api, "leases", "ack", [first["receipt"]])
    assert stale["ok"] is False
    assert stale["error"]["code"] == "stale_receipt"
    [fresh] = settle(api, "leases", "ack", [second["receipt"]])
    assert fresh["ok"] is True


def test_unknown_and_malformed_receipts_get_per_receipt_errors(api: Api) -> None:
    create_queue(api, "receipts")
    send(api, "receipts", "work")
    [message] = fetch(api, "receipts")
    settle(api, "receipts", "ack", [message["receipt"]])
    again, garbage = settle(api, "receipts", "ack", [message["receipt"], "not-a-receipt"])
    assert again["ok"] is False
    assert again["error"]["code"] in {"receipt_not_found", "stale_receipt"}
    assert garbage["error"]["code"] == "invalid_receipt"


def test_redrive_moves_dead_letters_back(api: Api) -> None:
    create_queue(api, "payments", max_deliveries=1, backoff=NO_BACKOFF)
    send(api, "payments", "charge")
    [message] = fetch(api, "payments")
    settle(api, "payments", "nack", [message["receipt"]], error="card declined")

    dead = api.ok("GET", "/queues/payments/dead-letters")["messages"]
    assert [item["payload"] for item in dead] == ["charge"]
    headers = dead[0]["headers"]
    assert headers["relaymq-origin-stream"] == "payments"
    assert headers["relaymq-last-error"] == "card declined"
    assert "relaymq-dead-letter-reason" in headers
    assert api.ok("GET", "/queues/payments")["dead_lettered"] == 1
    same = api.ok("GET", "/subscriptions/payments/dead-letters")["messages"]
    assert [item["payload"] for item in same] == ["charge"]

    assert api.ok("POST", "/queues/payments/dead-letters/redrive", json={}) == {"redriven": 1}
    [redriven] = fetch(api, "payments", wait_ms=2_000)
    assert redriven["payload"] == "charge"


def test_term_dead_letters_at_once(api: Api) -> None:
    create_queue(api, "emails")
    send(api, "emails", "spam")
    [message] = fetch(api, "emails")
    [outcome] = settle(api, "emails", "term", [message["receipt"]], reason="poison")
    assert outcome["ok"]
    dead = api.ok("GET", "/subscriptions/emails/dead-letters")["messages"]
    assert [item["payload"] for item in dead] == ["spam"]


def test_key_ordered_keeps_one_message_per_key_in_flight(api: Api) -> None:
    create_queue(api, "accounts", mode="key_ordered")
    body = {
        "messages": [
            {"key": "alice", "payload": "a1"},
            {"key": "alice", "payload": "a2"},
            {"key": "bob", "payload": "b1"},
        ]
    }
    api.ok("POST", "/queues/accounts/messages", json=body)
    first = fetch(api, "accounts")
    assert sorted(message["payload"] for message in first) == ["a1", "b1"]
    alice = next(message for message in first if message["key"] == "alice")
    settle(api, "accounts", "ack", [alice["receipt"]])
    [second] = fetch(api, "accounts")
    assert second["payload"] == "a2"


def test_dedup_by_message_id(api: Api) -> None:
    create_queue(api, "invoices")
    [original] = send(api, "invoices", "invoice 7", id="invoice-7")
    [duplicate] = send(api, "invoices", "invoice 7 again", id="invoice-7")
    assert duplicate["duplicate"] is True
    assert (duplicate["partition"], duplicate["offset"]) == (
        original["partition"],
        original["offset"],
    )
    messages = fetch(api, "invoices")
    assert [message["id"] for message in messages] == ["invoice-7"]
    assert [message["payload"] for message in messages] == ["invoice 7"]


def test_binary_publish_with_metadata_in_headers(api: Api) -> None:
    create_queue(api, "blobs")
    payload = bytes(range(256))
    headers = {
        "Content-Type": "application/octet-stream",
        "RelayMQ-Key": "blob-1",
        "RelayMQ-Message-Id": "blob-id",
        "RelayMQ-Priority": "3",
        "RelayMQ-Header-Trace-Id": "abc123",
    }
    api.ok("POST", "/queues/blobs/messages", content=payload, headers=headers)
    [message] = fetch(api, "blobs")
    assert message["encoding"] == "base64"
    assert base64.b64decode(message["payload"]) == payload
    assert message["key"] == "blob-1"
    assert message["id"] == "blob-id"
    assert message["priority"] == 3
    assert message["headers"] == {"trace-id": "abc123"}


def test_json_and_base64_payloads(api: Api) -> None:
    create_queue(api, "formats")
    encoded = base64.b64encode(b"\xff\xfebinary").decode()
    body = {
        "messages": [
            {"payload_json": {"order": 7, "items": ["tea"]}},
            {"payload": encoded, "encoding": "base64"},
            {"payload": "héllo", "headers": {"content-type": "text/plain"}},
        ]
    }
    api.ok("POST", "/queues/formats/messages", json=body)
    json_message, binary, text = fetch(api, "formats")
    assert json_message["payload"] == '{"order":7,"items":["tea"]}'
    assert binary == binary | {"payload": encoded, "encoding": "base64"}
    assert text["payload"] == "héllo"
    assert text["headers"] == {"content-type": "text/plain"}


def test_delayed_message_is_not_delivered_early(api: Api) -> None:
    create_queue(api, "reminders")
    send(api, "reminders", "later", delay_ms=600)
    assert fetch(api, "reminders") == []
    [message] = fetch(api, "reminders", wait_ms=5_000)
    assert message["payload"] == "later"


def test_list_get_purge_delete_queues(api: Api) -> None:
    create_queue(api, "alpha")
    create_queue(api, "beta", dead_letter=False)
    names = [item["name"] for item in api.ok("GET", "/queues")["items"]]
    assert names == ["alpha", "alpha-dlq", "beta"]
    send(api, "alpha", "one", "two")
    assert api.ok("GET", "/queues/alpha")["messages"] == 2

    api.ok("POST", "/queues/alpha/purge", 204)
    assert fetch(api, "alpha") == []
    api.ok("DELETE", "/queues/alpha", 204)
    names = [item["name"] for item in api.ok("GET", "/queues")["items"]]
    assert names == ["beta"]


async def test_long_poll_wakes_up_on_publish(running_server: RunningServer, api: Api) -> None:
    create_queue(api, "wakeup")
    prefix = f"{running_server.base_url}{api.prefix}/queues/wakeup"
    async with httpx.AsyncClient(timeout=30, headers=AUTH_HEADERS) as client:
        started = time.monotonic()
        waiting = asyncio.create_task(
            client.post(f"{prefix}/fetch", json={"max_messages": 1, "wait_ms": 5_000})
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        expect(await client.post(f"{prefix}/messages", json={"payload": "ping"}), 200)
        response = await waiting
        elapsed_seconds = time.monotonic() - started
    [message] = expect(response, 200)["messages"]
    assert message["payload"] == "ping"
    assert elapsed_seconds < 2.5


async def test_shutdown_releases_long_polls_at_once(tmp_path: Path) -> None:
    running = start_server(tmp_path / "data")
    prefix = f"{running.base_url}/v1/namespaces/default/queues/idle"
    async with httpx.AsyncClient(timeout=30, headers=AUTH_HEADERS) as client:
        expect(
            await client.post(
                f"{running.base_url}/v1/namespaces/default/queues", json={"name": "idle"}
            ),
            201,
        )
        waiting = asyncio.create_task(client.post(f"{prefix}/fetch", json={"wait_ms": 10_000}))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await asyncio.to_thread(running.stop)
        response = await waiting
    assert time.monotonic() - started < 3
    assert expect(response, 200) == {"messages": []}
    assert running.unexpected_errors == 0
