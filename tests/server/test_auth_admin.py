"""Security administration over HTTP: keys and grants, tenant isolation of lists,
the audit log, the first-start admin key, and anonymous mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.server.conftest import (
    AUTH_HEADERS,
    Api,
    RunningServer,
    expect,
    expect_error,
    start_server,
)
from tests.server.test_serve_cli import (
    PRINTED,
    TOKEN_PATTERN,
    printed_token,
    relaymq_serve,
    terminate,
)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


def test_key_lifecycle_in_a_namespace(api: Api, http: httpx.Client) -> None:
    body = {"name": "ci", "grants": [{"role": "admin"}], "expires_in_seconds": 3600}
    created = api.ok("POST", "/keys", 201, json=body)
    assert created["token"].startswith("rmq_") and created["active"]
    assert created["grants"] == [{"namespace": api.namespace, "role": "admin", "resources": ["*"]}]
    listed = api.ok("GET", "/keys")["items"]
    assert [key["id"] for key in listed] == [created["id"]]
    assert "token" not in listed[0] and "digest" not in json.dumps(listed)
    tenant_admin = bearer(created["token"])
    # a tenant admin manages keys of its own namespace only, and grants only there
    reader = {"name": "reader", "grants": [{"role": "read"}]}
    expect(api.post("/keys", json=reader, headers=tenant_admin), 201)
    escalation = {"name": "x", "grants": [{"namespace": "*", "role": "admin"}]}
    expect_error(api.post("/keys", json=escalation, headers=tenant_admin), 400, "invalid_argument")
    expect_error(http.get("/v1/keys", headers=tenant_admin), 403, "permission_denied")
    grants = {"grants": [{"role": "consume", "resources": ["subscription:work-*"]}]}
    changed = api.ok("PUT", f"/keys/{created['id']}/grants", 200, json=grants)
    assert changed["grants"][0]["resources"] == ["subscription:work-*"]
    revoked = api.ok("DELETE", f"/keys/{created['id']}", 200)
    assert revoked["revoked_at_ms"] is not None
    expect_error(api.get("/keys", headers=tenant_admin), 401, "unauthenticated")
    expect_error(api.get("/keys/0123456789abcdef"), 404, "key_not_found")


def test_namespace_lists_show_only_visible_namespaces(api: Api, http: httpx.Client) -> None:
    token = api.ok("POST", "/keys", 201, json={"name": "r", "grants": [{"role": "read"}]})["token"]
    names = [
        item["name"]
        for item in expect(http.get("/v1/namespaces", headers=bearer(token)), 200)["items"]
    ]
    assert names == [api.namespace]
    whoami = expect(http.get("/v1/auth/whoami", headers=bearer(token)), 200)
    assert whoami["kind"] == "api_key" and whoami["grants"][0]["namespace"] == api.namespace


def test_admin_actions_are_audited(
    running_server: RunningServer, api: Api, http: httpx.Client
) -> None:
    api.ok("POST", "/streams", 201, json={"name": "audited"})
    token = api.ok("POST", "/keys", 201, json={"name": "r", "grants": [{"role": "read"}]})["token"]
    expect_error(api.delete("/streams/audited", headers=bearer(token)), 403, "permission_denied")
    records = api.ok("GET", "/audit")["items"]
    actions = [(record["action"], record["result"]) for record in records]
    assert ("POST /v1/namespaces/{namespace}/streams", "ok") in actions
    assert ("DELETE /v1/namespaces/{namespace}/streams/{stream}", "permission_denied") in actions
    log = (running_server.data_dir / "audit.log").read_text()
    assert token not in log and "rmq_" not in log
    line = json.loads(log.splitlines()[-1])
    assert {"time_ms", "actor", "action", "namespace", "target", "result", "status"} <= set(line)
    everything = expect(http.get("/v1/audit", params={"limit": 5}), 200)["items"]
    assert len(everything) == 5


def test_first_start_prints_an_admin_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with relaymq_serve(data_dir) as (process, base_url):
        token = printed_token(process)
        expect(httpx.get(base_url + "/v1/namespaces", headers=bearer(token)), 200)
        expect_error(httpx.get(base_url + "/v1/namespaces"), 401, "unauthenticated")
        log = terminate(process)
    assert token not in log
    secret = token[len("rmq_") + 17 :].encode()
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    with relaymq_serve(data_dir) as (process, base_url):
        expect(httpx.get(base_url + "/v1/namespaces", headers=bearer(token)), 200)
        terminate(process)
    assert not any(TOKEN_PATTERN.search(line) for line in PRINTED[process.pid])


def test_serve_listens_on_loopback_by_default() -> None:
    code = "from relaymq.config import load_settings; print(load_settings().host)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "127.0.0.1"


def test_anonymous_mode_is_explicit(tmp_path: Path) -> None:
    running = start_server(tmp_path / "data", auth_mode="anonymous")
    try:
        expect(httpx.get(running.base_url + "/v1/namespaces"), 200)
        wrong = bearer("rmq_0000000000000000_" + "C" * 43)
        expect_error(
            httpx.get(running.base_url + "/v1/namespaces", headers=wrong), 401, "unauthenticated"
        )
        expect(httpx.get(running.base_url + "/v1/namespaces", headers=AUTH_HEADERS), 200)
    finally:
        running.stop()
