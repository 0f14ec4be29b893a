"""The publish rate gate: a publish over the namespace's rate is answered 429 before
routing, exactly as the route would answer it, and only for a caller the route would
have let through to its quota check; everything else reaches the app."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from relaymq.api.http.rate_gate import RateGate, publish_target
from relaymq.auth.principal import Grant, Principal, PrincipalKind, Role
from relaymq.auth.quotas import Quota, Quotas
from relaymq.errors import Unauthenticated
from tests.server.conftest import AUTH_HEADERS, expect, expect_error, start_server

PUBLISHER = Principal("key:publisher", PrincipalKind.API_KEY, (Grant("acme", Role.PUBLISH),))
STRANGER = Principal("key:stranger", PrincipalKind.API_KEY, (Grant("other", Role.PUBLISH),))
READER = Principal("key:reader", PrincipalKind.API_KEY, (Grant("acme", Role.READ),))
PRINCIPALS = {"publisher": PUBLISHER, "stranger": STRANGER, "reader": READER}


class EmptyStore:
    """An auth store without saved quotas."""

    def load_quotas(self) -> dict[str, Any]:
        return {}


class FakeSecurity:
    """Quotas of 1 message/s, and a token per principal."""

    def __init__(self) -> None:
        self.quotas = Quotas(Quota(publish_messages_per_second=1), EmptyStore())  # type: ignore[arg-type]

    async def authenticate(self, token: str | None) -> Principal:
        if token not in PRINCIPALS:
            raise Unauthenticated("invalid or expired credentials")
        return PRINCIPALS[token]


class Inner:
    """The app behind the gate: counts what reaches it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1


def gated() -> tuple[RateGate, Inner, FakeSecurity]:
    inner, security = Inner(), FakeSecurity()
    return RateGate(inner, security), inner, security  # type: ignore[arg-type]


def request(gate: RateGate, path: str, token: str | None) -> list[dict[str, Any]]:
    """One POST through the gate; what it sent back (nothing: passed on)."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(gate(scope, receive, send))
    return sent


def test_publish_paths_are_recognised() -> None:
    assert publish_target("/v1/namespaces/acme/publish") == (
        "/v1/namespaces/{namespace}/publish",
        {"namespace": "acme"},
    )
    assert publish_target("/v1/namespaces/acme/queues/jobs/messages") == (
        "/v1/namespaces/{namespace}/queues/{queue}/messages",
        {"namespace": "acme", "queue": "jobs"},
    )
    for path in (
        "/v1/namespaces/acme/publish/",
        "/v1/namespaces//publish",
        "/healthz",
        "/v1/namespaces/acme/subscriptions/s/messages",
        "/v1/namespaces/acme/streams",
    ):
        assert publish_target(path) is None  # fmt: skip


def test_room_and_unknown_namespaces_pass_through() -> None:
    gate, inner, security = gated()
    assert request(gate, "/v1/namespaces/acme/publish", "publisher") == []
    assert inner.calls == 1
    assert "acme" not in security.quotas.meters  # the gate never creates a meter


def test_an_empty_bucket_is_answered_by_the_gate() -> None:
    gate, inner, security = gated()
    security.quotas.charge_publish("acme", 1, 10)  # the one message of this second
    sent = request(gate, "/v1/namespaces/acme/streams/events/messages", "publisher")
    assert inner.calls == 0
    start, body = sent
    assert start["status"] == 429
    assert dict(start["headers"])[b"retry-after"] == b"1"
    error = json.loads(body["body"])["error"]
    assert error["code"] == "rate_limited"
    assert error["details"]["quota"] == "publish_messages_per_second"


@pytest.mark.parametrize("token", [None, "wrong", "stranger", "reader"])
def test_callers_the_route_would_refuse_otherwise_pass_through(token: str | None) -> None:
    gate, inner, security = gated()
    security.quotas.charge_publish("acme", 1, 10)
    assert request(gate, "/v1/namespaces/acme/publish", token) == []
    assert inner.calls == 1  # 401, 404 (hidden) or 403: the route's answer, not a 429


def test_a_real_server_answers_like_the_route(tmp_path: Path) -> None:
    server = start_server(tmp_path, fsync="never", quota_publish_messages_per_second=1)
    try:
        with httpx.Client(base_url=server.base_url, headers=AUTH_HEADERS) as admin:
            expect(admin.post("/v1/namespaces", json={"name": "acme"}), 201)
            stream = {"name": "events", "subjects": ["events.>"]}
            expect(admin.post("/v1/namespaces/acme/streams", json=stream), 201)
            expect(admin.post("/v1/namespaces", json={"name": "other"}), 201)
            key = {"name": "k", "grants": [{"role": "publish"}]}
            stranger = expect(admin.post("/v1/namespaces/other/keys", json=key), 201)["token"]
            url = "/v1/namespaces/acme/publish"
            message = {"subject": "events.a", "payload": "x"}
            expect(admin.post(url, json=message), 200)
            refused = admin.post(url, json=message)
            error = expect_error(refused, 429, "rate_limited")
            assert error["message"] == (
                "namespace 'acme' is over its publish rate (publish_messages_per_second)"
            )
            assert int(refused.headers["retry-after"]) >= 1
            hidden = admin.post(url, json=message, headers={"Authorization": f"Bearer {stranger}"})
            expect_error(hidden, 404, "namespace_not_found")
            anonymous = httpx.post(server.base_url + url, json=message)
            expect_error(anonymous, 401, "unauthenticated")
            metrics = admin.get("/metrics").text
        assert 'route="/v1/namespaces/{namespace}/publish",status="429"' in metrics
    finally:
        server.stop()
    assert server.unexpected_errors == 0
