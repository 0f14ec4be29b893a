"""Topics over HTTP: fan-out to every subscription, subject filters, lifecycle."""

from __future__ import annotations

from tests.server.conftest import Api


def fetch_payloads(api: Api, subscription: str) -> list[str]:
    """Fetch and ack everything a subscription has; return the payloads."""
    body = {"max_messages": 100}
    messages = api.ok("POST", f"/subscriptions/{subscription}/fetch", json=body)["messages"]
    receipts = [message["receipt"] for message in messages]
    if receipts:
        api.ok("POST", f"/subscriptions/{subscription}/ack", json={"receipts": receipts})
    return [message["payload"] for message in messages]


def test_fan_out_gives_every_subscription_every_message(api: Api) -> None:
    topic = api.ok("POST", "/topics", 201, json={"name": "events"})
    assert topic["subjects"] == ["events", "events.>"]
    for name in ("billing", "audit"):
        api.ok("POST", "/topics/events/subscriptions", 201, json={"name": name})

    messages = [
        {"subject": f"events.order.{number}", "payload": f"e{number}"} for number in range(3)
    ]
    results = api.ok("POST", "/publish", json={"messages": messages})["results"]
    assert [result["stream"] for result in results] == ["events"] * 3

    assert fetch_payloads(api, "billing") == ["e0", "e1", "e2"]
    assert fetch_payloads(api, "audit") == ["e0", "e1", "e2"]
    described = api.ok("GET", "/topics/events")
    assert sorted(item["name"] for item in described["subscriptions"]) == ["audit", "billing"]
    assert described["messages"] == 3


def test_subscription_filter_narrows_a_topic(api: Api) -> None:
    api.ok("POST", "/topics", 201, json={"name": "shop"})
    api.ok("POST", "/topics/shop/subscriptions", 201, json={"name": "all"})
    body = {"name": "eu-only", "filter_subject": "shop.eu.>"}
    subscription = api.ok("POST", "/topics/shop/subscriptions", 201, json=body)
    assert subscription["config"]["filter_subject"] == "shop.eu.>"

    for subject in ("shop.eu.paris", "shop.us.nyc", "shop.eu.rome"):
        api.ok("POST", "/publish", json={"subject": subject, "payload": subject})
    api.ok("POST", "/topics/shop/messages", json={"payload": "bare"})

    assert fetch_payloads(api, "eu-only") == ["shop.eu.paris", "shop.eu.rome"]
    assert fetch_payloads(api, "all") == ["shop.eu.paris", "shop.us.nyc", "shop.eu.rome", "bare"]


def test_topic_list_and_delete(api: Api) -> None:
    api.ok("POST", "/topics", 201, json={"name": "news"})
    api.ok("POST", "/queues", 201, json={"name": "work", "dead_letter": False})
    assert [item["name"] for item in api.ok("GET", "/topics")["items"]] == ["news"]
    api.ok("DELETE", "/topics/news", 204)
    assert api.ok("GET", "/topics")["items"] == []
    assert api.get("/topics/work").status_code == 404
