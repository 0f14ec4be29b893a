"""``relaymq keys``, ``grants`` and ``namespaces`` against a real server."""

from __future__ import annotations

import json
from typing import Any

import httpx
from click.testing import CliRunner

from relaymq.cli.main import relaymq
from relaymq.cli.security import parse_grant
from tests.server.conftest import ADMIN_TOKEN, RunningServer, expect


def cli(server: RunningServer, *arguments: str, token: str = ADMIN_TOKEN) -> Any:
    """Run a command with ``--json``; its parsed output (exit status must be 0)."""
    connection = ["--url", server.base_url, "--token", token, "--json"]
    result = CliRunner().invoke(relaymq, [*arguments, *connection], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def test_grant_syntax() -> None:
    assert parse_grant("publish") == {"role": "publish"}
    assert parse_grant("acme/consume=subscription:a-*,subject:x.>") == {
        "namespace": "acme",
        "role": "consume",
        "resources": ["subscription:a-*", "subject:x.>"],
    }
    assert parse_grant("*/read") == {"namespace": "*", "role": "read"}


def test_namespaces_keys_grants_and_quotas(running_server: RunningServer) -> None:
    cli(running_server, "namespaces", "create", "cli-tenant")
    names = [item["name"] for item in cli(running_server, "namespaces", "ls")]
    assert "cli-tenant" in names
    quota = cli(running_server, "namespaces", "quota", "cli-tenant", "--max-streams", "5")
    assert quota["max_streams"] == 5
    assert cli(running_server, "namespaces", "quota", "cli-tenant")["max_streams"] == 5

    created = cli(
        running_server, "keys", "create", "ci", "-n", "cli-tenant", "--grant", "publish=subject:a.>"
    )
    token = created["token"]
    assert token.startswith("rmq_")
    listed = cli(running_server, "keys", "ls", "-n", "cli-tenant")
    assert [key["id"] for key in listed] == [created["id"]]
    assert listed[0]["grants"] == ["cli-tenant/publish=subject:a.>"]
    assert "token" not in listed[0]
    # the new key sees only its own namespace
    assert [item["name"] for item in cli(running_server, "namespaces", "ls", token=token)] == [
        "cli-tenant"
    ]

    grants = cli(
        running_server, "grants", "set", created["id"], "-n", "cli-tenant", "--grant", "read"
    )
    assert grants == [{"namespace": "cli-tenant", "role": "read", "resources": ["*"]}]
    assert cli(running_server, "grants", "ls", created["id"], "-n", "cli-tenant") == grants

    cli(running_server, "keys", "revoke", created["id"], "-n", "cli-tenant")
    response = httpx.get(
        running_server.base_url + "/v1/namespaces", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    cli(running_server, "namespaces", "rm", "cli-tenant")


def test_server_wide_keys_and_errors(running_server: RunningServer) -> None:
    created = cli(running_server, "keys", "create", "monitor", "--global", "--grant", "*/read")
    listed = cli(running_server, "keys", "ls", "--global")
    assert created["id"] in [key["id"] for key in listed]
    cli(running_server, "keys", "revoke", created["id"], "--global")
    connection = ["--url", running_server.base_url, "--token", "rmq_nope", "--json"]
    result = CliRunner().invoke(relaymq, ["keys", "ls", *connection])
    assert result.exit_code == 1
    assert json.loads(result.output.strip().splitlines()[-1])["error"]["code"] == "unauthenticated"
    expect(httpx.get(running_server.base_url + "/healthz"), 200)
