"""``relaymq keys``, ``relaymq grants`` and ``relaymq namespaces``: security
administration over the REST API (``docs/security.md``).

Connection and credentials come from the shared client options (``--url``,
``--token`` / ``RELAYMQ_TOKEN``, ``--profile``, ``-n``). Keys are the
namespace's (``-n``) unless ``--global`` picks the server-wide ones. A grant
is written ``[NAMESPACE/]ROLE[=PATTERN,...]``: ``publish``,
``consume=subscription:work-*``, ``*/read`` (server-wide keys only).
"""

from __future__ import annotations

from typing import Any

import click
import httpx

from relaymq.cli.output import Output
from relaymq.cli.profiles import Target, client_options
from relaymq.errors import RelayError, Unavailable

TIMEOUT_SECONDS = 30.0
KEY_COLUMNS = ["id", "name", "grants", "active", "expires_at_ms", "created_by"]
QUOTA_FIELDS = (
    "max_streams",
    "max_stored_bytes",
    "publish_messages_per_second",
    "publish_bytes_per_second",
    "max_connections",
)


class ApiError(RelayError):
    """An error answer of the server, carrying its code and message."""

    def __init__(self, body: dict[str, Any], status: int) -> None:
        error = body.get("error") or {}
        super().__init__(error.get("message", f"HTTP {status}"), **error.get("details", {}))
        self.code = error.get("code", "error")


def call(target: Target, method: str, path: str, body: Any = None) -> Any:
    """One REST call; the answer's JSON, or :class:`ApiError`."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    try:
        response = httpx.request(
            method,
            target.url.rstrip("/") + path,
            json=body,
            headers=headers,
            timeout=TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as error:
        raise Unavailable(f"cannot reach {target.url}: {error}") from error
    payload = response.json() if response.content else None
    if response.is_error:
        raise ApiError(payload or {}, response.status_code)
    return payload


def run(output: Output, action: Any) -> None:
    """Run a command body, turning errors into a message and exit status 1."""
    try:
        action()
    except RelayError as error:
        output.error(error)
        raise SystemExit(1) from None


def parse_grant(text: str) -> dict[str, Any]:
    """A grant from ``[NAMESPACE/]ROLE[=PATTERN,...]``."""
    scope, _, patterns = text.partition("=")
    namespace, _, role = scope.rpartition("/")
    grant: dict[str, Any] = {"role": role}
    if namespace:
        grant["namespace"] = namespace
    if patterns:
        grant["resources"] = patterns.split(",")
    return grant


def keys_path(target: Target, server_wide: bool) -> str:
    """The keys collection: the namespace's, or the server-wide one."""
    return "/v1/keys" if server_wide else f"/v1/namespaces/{target.namespace}/keys"


def key_rows(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keys with their grants written the CLI's way."""
    return [{**key, "grants": [format_grant(grant) for grant in key["grants"]]} for key in keys]


def format_grant(grant: dict[str, Any]) -> str:
    """``NAMESPACE/ROLE=PATTERNS``."""
    return f"{grant['namespace']}/{grant['role']}={','.join(grant['resources'])}"


global_option = click.option(
    "--global", "server_wide", is_flag=True, help="Server-wide keys instead of the namespace's."
)
grant_option = click.option(
    "--grant",
    "grants",
    multiple=True,
    help="[NAMESPACE/]ROLE[=PATTERN,...]; repeatable (roles: admin manage publish consume read).",
)


# -- keys ----------------------------------------------------------------------------------


@click.group(name="keys")
def keys() -> None:
    """API keys: create (the token is shown once), list, revoke."""


@keys.command(name="create")
@click.argument("name")
@grant_option
@click.option("--expires-in-seconds", type=int, help="Lifetime (default: no expiry).")
@global_option
@client_options
def create_key(
    target: Target,
    output: Output,
    name: str,
    grants: tuple[str, ...],
    expires_in_seconds: int | None,
    server_wide: bool,
) -> None:
    """Create a key NAME and print its token (shown this once)."""

    def action() -> None:
        body = {"name": name, "grants": [parse_grant(text) for text in grants]}
        if expires_in_seconds:
            body["expires_in_seconds"] = expires_in_seconds
        created = call(target, "POST", keys_path(target, server_wide), body)
        if output.as_json:
            output.json(created)
            return
        click.echo(f"key {created['id']} created; its token (shown once, store it now):")
        click.echo(created["token"])

    run(output, action)


@keys.command(name="ls")
@global_option
@client_options
def list_keys(target: Target, output: Output, server_wide: bool) -> None:
    """List keys (never their tokens)."""
    run(
        output,
        lambda: output.table(
            key_rows(call(target, "GET", keys_path(target, server_wide))["items"]), KEY_COLUMNS
        ),
    )


@keys.command(name="revoke")
@click.argument("key_id")
@global_option
@client_options
def revoke_key(target: Target, output: Output, key_id: str, server_wide: bool) -> None:
    """Revoke key KEY_ID: it never authenticates again."""

    def action() -> None:
        call(target, "DELETE", f"{keys_path(target, server_wide)}/{key_id}")
        output.done(f"key {key_id} revoked", key_id=key_id)

    run(output, action)


# -- grants --------------------------------------------------------------------------------


@click.group(name="grants")
def grants() -> None:
    """The grants (roles on resource patterns) of API keys."""


@grants.command(name="ls")
@click.argument("key_id")
@global_option
@client_options
def list_grants(target: Target, output: Output, key_id: str, server_wide: bool) -> None:
    """Show the grants of key KEY_ID."""

    def action() -> None:
        key = call(target, "GET", f"{keys_path(target, server_wide)}/{key_id}")
        output.table(key["grants"], ["namespace", "role", "resources"])

    run(output, action)


@grants.command(name="set")
@click.argument("key_id")
@grant_option
@global_option
@client_options
def set_grants(
    target: Target, output: Output, key_id: str, grants: tuple[str, ...], server_wide: bool
) -> None:
    """Replace the grants of key KEY_ID with the --grant options given (none: no access)."""

    def action() -> None:
        body = {"grants": [parse_grant(text) for text in grants]}
        key = call(target, "PUT", f"{keys_path(target, server_wide)}/{key_id}/grants", body)
        output.table(key["grants"], ["namespace", "role", "resources"])

    run(output, action)


# -- namespaces ----------------------------------------------------------------------------


@click.group(name="namespaces")
def namespaces() -> None:
    """Namespaces (tenants) and their quotas."""


@namespaces.command(name="create")
@click.argument("name")
@client_options
def create_namespace(target: Target, output: Output, name: str) -> None:
    """Create namespace NAME (server-wide admins only)."""

    def action() -> None:
        call(target, "POST", "/v1/namespaces", {"name": name})
        output.done(f"namespace {name} created", namespace=name)

    run(output, action)


@namespaces.command(name="ls")
@client_options
def list_namespaces(target: Target, output: Output) -> None:
    """List the namespaces this token can see."""
    columns = ["name", "streams", "subscriptions"]
    run(
        output,
        lambda: output.table(call(target, "GET", "/v1/namespaces?limit=1000")["items"], columns),
    )


@namespaces.command(name="rm")
@click.argument("name")
@client_options
def remove_namespace(target: Target, output: Output, name: str) -> None:
    """Delete the empty namespace NAME (server-wide admins only)."""

    def action() -> None:
        call(target, "DELETE", f"/v1/namespaces/{name}")
        output.done(f"namespace {name} deleted", namespace=name)

    run(output, action)


@namespaces.command(name="quota")
@click.argument("name")
@click.option("--max-streams", type=int)
@click.option("--max-stored-bytes", type=int)
@click.option("--publish-messages-per-second", type=float)
@click.option("--publish-bytes-per-second", type=float)
@click.option("--max-connections", type=int)
@client_options
def quota(target: Target, output: Output, name: str, **limits: Any) -> None:
    """Show the quota of namespace NAME, or change the limits given (0: none)."""

    def action() -> None:
        changes = {field: limits[field] for field in QUOTA_FIELDS if limits[field] is not None}
        path = f"/v1/namespaces/{name}/quota"
        current = call(target, "PUT", path, changes) if changes else call(target, "GET", path)
        output.record(current)

    run(output, action)


SECURITY_COMMANDS: tuple[click.Command, ...] = (keys, grants, namespaces)
"""The command groups of this module (registered in :mod:`relaymq.cli.main`)."""
