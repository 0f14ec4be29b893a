"""The policy alone: roles, namespaces, resource patterns, hidden namespaces."""

from __future__ import annotations

import pytest

from relaymq.auth.policy import ROLE_ACTIONS, Action, Decision, decide, enforce, enforce_any
from relaymq.auth.principal import Grant, Principal, PrincipalKind, Resource, ResourceKind, Role
from relaymq.errors import InvalidArgument, NamespaceNotFound, PermissionDenied

NAMESPACE = Resource.namespace()


def principal(*grants: Grant) -> Principal:
    """A key principal holding ``grants``."""
    return Principal("key:test", PrincipalKind.API_KEY, grants)


def stream(name: str) -> Resource:
    """A stream resource."""
    return Resource(ResourceKind.STREAM, name)


@pytest.mark.parametrize("role", list(Role))
def test_each_role_allows_exactly_its_actions(role: Role) -> None:
    caller = principal(Grant.build("acme", role.value))
    for action in Action:
        if action is Action.DESCRIBE:
            continue
        expected = Decision.ALLOW if action in ROLE_ACTIONS[role] else Decision.DENY
        assert decide(caller, action, "acme", stream("orders")) is expected, action


def test_role_table_is_ordered_by_power() -> None:
    for role in Role:
        assert ROLE_ACTIONS[role] <= ROLE_ACTIONS[Role.ADMIN]
    for role in (Role.READ, Role.PUBLISH, Role.CONSUME):
        assert ROLE_ACTIONS[role] - {Action.READ} <= ROLE_ACTIONS[Role.MANAGE]
    assert Action.ADMINISTER not in ROLE_ACTIONS[Role.MANAGE]


def test_other_namespaces_are_hidden_and_raise_not_found() -> None:
    caller = principal(Grant.build("acme", "admin"))
    assert decide(caller, Action.DESCRIBE, "globex", NAMESPACE) is Decision.HIDDEN
    with pytest.raises(NamespaceNotFound) as hidden:
        enforce(caller, Action.READ, "globex", stream("orders"))
    assert hidden.value.message == "namespace 'globex' not found"
    assert hidden.value.details == {"namespace": "globex"}


def test_server_wide_actions_need_a_global_grant() -> None:
    tenant_admin = principal(Grant.build("acme", "admin"))
    server_admin = principal(Grant.build("*", "admin"))
    assert decide(tenant_admin, Action.ADMINISTER, None, NAMESPACE) is Decision.DENY
    assert decide(server_admin, Action.ADMINISTER, None, NAMESPACE) is Decision.ALLOW
    assert decide(server_admin, Action.MANAGE, "anything", stream("x")) is Decision.ALLOW


def test_resource_patterns() -> None:
    caller = principal(
        Grant.build("acme", "publish", ["stream:orders-*", "subject:orders.eu.>"]),
        Grant.build("acme", "consume", ["subscription:billing"]),
    )
    assert decide(caller, Action.PUBLISH, "acme", stream("orders-eu")) is Decision.ALLOW
    assert decide(caller, Action.PUBLISH, "acme", stream("payments")) is Decision.DENY
    subject = Resource(ResourceKind.SUBJECT, "orders.eu.created")
    assert decide(caller, Action.PUBLISH, "acme", subject) is Decision.ALLOW
    other_subject = Resource(ResourceKind.SUBJECT, "orders.us.created")
    assert decide(caller, Action.PUBLISH, "acme", other_subject) is Decision.DENY
    billing = Resource(ResourceKind.SUBSCRIPTION, "billing")
    assert decide(caller, Action.CONSUME, "acme", billing) is Decision.ALLOW
    assert decide(caller, Action.PUBLISH, "acme", billing) is Decision.DENY
    assert decide(caller, Action.MANAGE, "acme", NAMESPACE) is Decision.DENY
    assert decide(caller, Action.DESCRIBE, "acme", NAMESPACE) is Decision.ALLOW
    with pytest.raises(PermissionDenied):
        enforce(caller, Action.PUBLISH, "acme", other_subject)
    enforce_any(caller, Action.PUBLISH, "acme")
    with pytest.raises(PermissionDenied):
        enforce_any(caller, Action.MANAGE, "acme")


@pytest.mark.parametrize(
    "pattern", ["stream", "stream:", "queue:x", "subject:a..b", "namespace:x", "x" * 300]
)
def test_malformed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidArgument):
        Grant.build("acme", "read", [pattern])


def test_unknown_role_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown role"):
        Grant.build("acme", "root")
