"""The authorization matrix, generated from the server's own OpenAPI document.

Every operation of ``/openapi.json`` (plus the two routes kept out of it: the
Server-Sent Events tail and ``/metrics``) is sent by a key of every role —
``admin``, ``manage``, ``publish``, ``consume``, ``read``, each granted on a
namespace of its own — and without credentials, against three targets:

* **own**: the same resources in the key's own namespace: allowed exactly
  when :data:`EXPECTED` says the role may, else ``403 permission_denied``;
* **other**: the same resources, existing, in another tenant's namespace;
* **nonexistent**: a namespace that does not exist.

*other* and *nonexistent* must answer identically (status, code, message
and details, up to the namespace's name), and nothing may ever succeed
across tenants. :data:`EXPECTED` is written here, from the documented
roles, independently of the server's rule table; an operation missing from it
fails the test, so a new endpoint cannot ship unclassified.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import AUTH_HEADERS, RunningServer, expect, start_server

ROLES = ("admin", "manage", "publish", "consume", "read")
ANONYMOUS = "anonymous"
OTHER = "other-tenant"
GHOST = "ghost-tenant"
HIDDEN_CODE = "namespace_not_found"

EVERY_ROLE = frozenset(ROLES)
DESCRIBE = EVERY_ROLE
READ = frozenset({"read", "manage", "admin"})
PUBLISH = frozenset({"publish", "manage", "admin"})
CONSUME = frozenset({"consume", "manage", "admin"})
MANAGE = frozenset({"manage", "admin"})
ADMIN = frozenset({"admin"})
SERVER_ONLY: frozenset[str] = frozenset()  # server-wide admins only: no namespace role

NS = "/v1/namespaces/{namespace}"
STREAM = NS + "/streams/{stream}"
SUBSCRIPTION = NS + "/subscriptions/{subscription}"
QUEUE = NS + "/queues/{queue}"
TOPIC = NS + "/topics/{topic}"
SETTLE = ("ack", "nack", "extend", "term")

EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/namespaces"): SERVER_ONLY,
    ("GET", "/v1/namespaces"): EVERY_ROLE,
    ("GET", NS): DESCRIBE,
    ("DELETE", NS): SERVER_ONLY,
    ("GET", NS + "/stats"): DESCRIBE,
    ("POST", NS + "/streams"): MANAGE,
    ("GET", NS + "/streams"): DESCRIBE,
    ("GET", STREAM): DESCRIBE,
    ("PATCH", STREAM): MANAGE,
    ("DELETE", STREAM): MANAGE,
    ("POST", STREAM + "/purge"): MANAGE,
    ("GET", STREAM + "/messages"): READ,
    ("GET", STREAM + "/events"): READ,
    ("POST", STREAM + "/messages"): PUBLISH,
    ("POST", NS + "/publish"): PUBLISH,
    ("POST", NS + "/subscriptions"): MANAGE,
    ("GET", NS + "/subscriptions"): DESCRIBE,
    ("GET", SUBSCRIPTION): DESCRIBE,
    ("PATCH", SUBSCRIPTION): MANAGE,
    ("DELETE", SUBSCRIPTION): MANAGE,
    ("POST", SUBSCRIPTION + "/purge"): MANAGE,
    ("GET", SUBSCRIPTION + "/dead-letters"): READ,
    ("POST", SUBSCRIPTION + "/dead-letters/redrive"): MANAGE,
    ("POST", SUBSCRIPTION + "/fetch"): CONSUME,
    ("POST", SUBSCRIPTION + "/seek"): CONSUME,
    **{("POST", f"{SUBSCRIPTION}/{operation}"): CONSUME for operation in SETTLE},
    ("POST", NS + "/queues"): MANAGE,
    ("GET", NS + "/queues"): DESCRIBE,
    ("GET", QUEUE): DESCRIBE,
    ("DELETE", QUEUE): MANAGE,
    ("POST", QUEUE + "/purge"): MANAGE,
    ("POST", QUEUE + "/messages"): PUBLISH,
    ("POST", QUEUE + "/fetch"): CONSUME,
    **{("POST", f"{QUEUE}/{operation}"): CONSUME for operation in SETTLE},
    ("GET", QUEUE + "/dead-letters"): READ,
    ("POST", QUEUE + "/dead-letters/redrive"): MANAGE,
    ("POST", NS + "/topics"): MANAGE,
    ("GET", NS + "/topics"): DESCRIBE,
    ("GET", TOPIC): DESCRIBE,
    ("DELETE", TOPIC): MANAGE,
    ("POST", TOPIC + "/subscriptions"): CONSUME,
    ("POST", TOPIC + "/messages"): PUBLISH,
    ("GET", "/v1/auth/whoami"): EVERY_ROLE,
    ("POST", "/v1/keys"): SERVER_ONLY,
    ("GET", "/v1/keys"): SERVER_ONLY,
    ("GET", "/v1/keys/{key_id}"): SERVER_ONLY,
    ("DELETE", "/v1/keys/{key_id}"): SERVER_ONLY,
    ("PUT", "/v1/keys/{key_id}/grants"): SERVER_ONLY,
    ("POST", NS + "/keys"): ADMIN,
    ("GET", NS + "/keys"): ADMIN,
    ("GET", NS + "/keys/{key_id}"): ADMIN,
    ("DELETE", NS + "/keys/{key_id}"): ADMIN,
    ("PUT", NS + "/keys/{key_id}/grants"): ADMIN,
    ("GET", NS + "/quota"): DESCRIBE,
    ("PUT", NS + "/quota"): SERVER_ONLY,
    ("GET", "/v1/audit"): SERVER_ONLY,
    ("GET", NS + "/audit"): ADMIN,
    ("GET", "/metrics"): SERVER_ONLY,
}
"""Who may call each operation in their own namespace (independent of the server's table)."""

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
UNDOCUMENTED = [("GET", STREAM + "/events"), ("GET", "/metrics")]

_unique = itertools.count(1)


def body_for(method: str, path: str) -> dict[str, Any] | None:
    """A valid request body for an operation (fresh names where it creates one)."""
    name = f"made-{next(_unique)}"
    last = path.rsplit("/", 1)[-1]
    bodies: dict[str, Any] = {
        "namespaces": {"name": name},
        "streams": {"name": name, "subjects": [f"{name}.>"]},
        "subscriptions": {"name": name, "stream": "s"},
        "queues": {"name": name},
        "topics": {"name": name},
        "publish": {"subject": "s.matrix", "payload": "x"},
        "fetch": {"max_messages": 1},
        "seek": {"offset": 0},
        "redrive": {"max_messages": 1},
        "keys": {"name": name, "grants": [{"role": "read"}]},
        "grants": {"grants": [{"role": "read"}]},
        "quota": {"max_streams": 1000},
    }
    if method in ("GET", "DELETE"):
        return None
    if last in SETTLE:
        return {"receipts": ["0.0.0000000000000000000000000001"]}
    if last == "messages":
        return {"subject": "s.matrix", "payload": "x"} if "/streams/" in path else {"payload": "x"}
    if path.endswith("/topics/{topic}/subscriptions"):
        return {"name": name}
    if method == "PATCH":
        return {"description": "changed"}
    return bodies.get(last, {})


def operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document, plus the undocumented routes."""
    found = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    return sorted({*found, *UNDOCUMENTED} - PUBLIC, key=order)


def order(operation: tuple[str, str]) -> tuple[int, str, str]:
    """Deletes last (subscriptions, keys, then streams), so the rest finds its resources."""
    method, path = operation
    rank = 0
    if method == "DELETE":
        rank = 1 if "subscriptions" in path or "keys" in path else 2
    return rank, path, method


class Tenants:
    """The matrix's world: per role a namespace and a key; one other tenant."""

    def __init__(self, server: RunningServer) -> None:
        self.admin = httpx.Client(base_url=server.base_url, headers=AUTH_HEADERS, timeout=30)
        self.base_url = server.base_url
        self.client = httpx.Client(timeout=30)
        self.tokens: dict[str, str] = {}
        self.spare_keys: dict[str, str] = {}
        for role in ROLES:
            namespace = own(role)
            self.seed(namespace)
            self.tokens[role] = self.mint(namespace, role)
        self.seed(OTHER)
        self.global_spare = expect(
            self.admin.post("/v1/keys", json={"name": "spare", "grants": []}), 201
        )["id"]

    def seed(self, namespace: str) -> None:
        """A namespace holding every kind of resource the routes name."""
        root = f"/v1/namespaces/{namespace}"
        expect(self.admin.post("/v1/namespaces", json={"name": namespace}), 201)
        stream = {"name": "s", "subjects": ["s.>"]}
        expect(self.admin.post(root + "/streams", json=stream), 201)
        expect(self.admin.post(root + "/queues", json={"name": "q"}), 201)
        expect(self.admin.post(root + "/topics", json={"name": "t"}), 201)
        subscription = {"name": "sub", "stream": "s", "dead_letter_stream": "q-dlq"}
        expect(self.admin.post(root + "/subscriptions", json=subscription), 201)
        expect(self.admin.post(root + "/publish", json={"subject": "s.seed", "payload": "1"}), 200)
        spare = {"name": "spare", "grants": [{"role": "read"}]}
        self.spare_keys[namespace] = expect(self.admin.post(root + "/keys", json=spare), 201)["id"]

    def mint(self, namespace: str, role: str) -> str:
        """A namespace key with ``role`` on everything in it."""
        body = {"name": role, "grants": [{"role": role}]}
        created = expect(self.admin.post(f"/v1/namespaces/{namespace}/keys", json=body), 201)
        return created["token"]

    def path(self, template: str, namespace: str) -> str:
        """A concrete path for ``namespace``."""
        key_id = (
            self.global_spare
            if not template.startswith(NS)
            else self.spare_keys.get(namespace, "0123456789abcdef")
        )
        values = {
            "namespace": namespace,
            "stream": "s",
            "subscription": "sub",
            "queue": "q",
            "topic": "t",
            "key_id": key_id,
        }
        return template.format(**values)

    def send(self, role: str, method: str, template: str, namespace: str) -> httpx.Response:
        """One request of the matrix."""
        headers = {} if role == ANONYMOUS else {"Authorization": f"Bearer {self.tokens[role]}"}
        body = body_for(method, template)
        url = self.base_url + self.path(template, namespace)
        if template.endswith("/events"):
            return self.open_events(url, headers)
        return self.client.request(method, url, json=body, headers=headers)

    def open_events(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """Open an SSE stream and close it after its first bytes (or its error)."""
        with self.client.stream("GET", url, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                return response
            first = next(response.iter_bytes())
            return httpx.Response(response.status_code, content=first)


def own(role: str) -> str:
    """The namespace a role's key is granted on."""
    return f"own-{role}"


@pytest.fixture(scope="module")
def matrix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own: the matrix deletes what it is allowed to."""
    running = start_server(Path(tmp_path_factory.mktemp("matrix")))
    yield running
    unexpected = running.unexpected_errors
    running.stop()
    assert unexpected == 0


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error object of a response (empty when it is not one)."""
    try:
        return response.json().get("error") or {}
    except (json.JSONDecodeError, AttributeError):
        return {}


def normalized(response: httpx.Response, namespace: str) -> tuple[int, str]:
    """Status and body with the namespace's name replaced, for comparing answers."""
    return response.status_code, response.text.replace(namespace, "NAMESPACE")


def test_authorization_matrix(matrix_server: RunningServer) -> None:
    tenants = Tenants(matrix_server)
    document = expect(httpx.get(matrix_server.base_url + "/openapi.json"), 200)
    every = operations(document)
    unclassified = [operation for operation in every if operation not in EXPECTED]
    assert not unclassified, f"classify these operations in EXPECTED: {unclassified}"
    tally: Counter[str] = Counter()
    failures: list[str] = []
    for role in (*ROLES, ANONYMOUS):
        for method, template in every:
            check_cell(tenants, role, method, template, tally, failures)
    print_summary(len(every), tally)
    assert tally["cross-tenant success"] == 0
    assert not failures, "\n".join(failures[:40])


def check_cell(
    tenants: Tenants,
    role: str,
    method: str,
    template: str,
    tally: Counter[str],
    failures: list[str],
) -> None:
    """One operation by one role against own, other and nonexistent namespaces."""
    label = f"{role:9} {method:6} {template}"
    scoped = template.startswith(NS)
    own_response = tenants.send(role, method, template, own(role) if role in ROLES else OTHER)
    tally["requests"] += 1
    expected = expected_outcome(role, method, template)
    problem = judge(own_response, expected)
    tally[f"own {expected}"] += 1
    if problem:
        failures.append(f"{label} own: {problem}")
    if expected == "allow" and own_response.is_success:
        tally["own allow answered 2xx"] += 1
    if not scoped:
        return
    other = tenants.send(role, method, template, OTHER)
    ghost = tenants.send(role, method, template, GHOST)
    tally["requests"] += 2
    if other.is_success:
        tally["cross-tenant success"] += 1
    if normalized(other, OTHER) != normalized(ghost, GHOST):
        failures.append(f"{label}: other {other.text} != nonexistent {ghost.text}")
    wanted = (401, "unauthenticated") if role == ANONYMOUS else (404, HIDDEN_CODE)
    if (other.status_code, error_of(other).get("code")) != wanted:
        failures.append(f"{label} other: {other.status_code} {other.text}")
    tally["other/nonexistent identical"] += 1


def expected_outcome(role: str, method: str, template: str) -> str:
    """``allow``, ``deny`` or ``unauthenticated`` for a role on its own namespace."""
    if role == ANONYMOUS:
        return "unauthenticated"
    return "allow" if role in EXPECTED[(method, template)] else "deny"


def judge(response: httpx.Response, expected: str) -> str | None:
    """What is wrong with an answer, if anything."""
    code = error_of(response).get("code")
    status = response.status_code
    if expected == "unauthenticated":
        return None if (status, code) == (401, "unauthenticated") else f"{status} {response.text}"
    if expected == "deny":
        ok = (status, code) == (403, "permission_denied")
        return None if ok else f"expected 403, got {status} {response.text}"
    if status in (401, 403) or code == HIDDEN_CODE or status >= 500:
        return f"expected allowed, got {status} {response.text}"
    return None


def print_summary(operation_count: int, tally: Counter[str]) -> None:
    """The matrix's size and outcome (visible with ``pytest -s``)."""
    print(f"\nauthorization matrix: {operation_count} operations x {len(ROLES) + 1} principals")
    for name, count in sorted(tally.items()):
        print(f"  {name}: {count}")
