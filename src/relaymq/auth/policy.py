"""RBAC: the one place that decides whether a principal may do an action.

Every adapter asks :func:`decide` (or :func:`enforce`, which raises) with a
(principal, action, namespace, resource) tuple; nothing else in RelayMQ
compares roles. The rules:

* a role is a fixed set of actions (:data:`ROLE_ACTIONS`);
* a grant applies in its namespace (``*``: every namespace) and to the
  resources its patterns cover;
* a principal holding no grant at all in a namespace does not see it: the
  answer is :attr:`Decision.HIDDEN`, which adapters turn into exactly the error
  a nonexistent namespace gets (so other tenants are not even confirmed to exist);
* holding some grant there, but none allowing this action on this resource, is
  :attr:`Decision.DENY` (403);
* server-wide actions (``namespace`` is ``None``: creating namespaces, global
  keys, the audit log, metrics) need a grant on ``*``;
* every member of a namespace may describe it (list its streams and so on):
  resource patterns restrict what one does to a resource, not seeing its name.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from relaymq.auth.principal import Grant, Principal, Resource, ResourceKind, Role
from relaymq.broker.names import validate_name
from relaymq.errors import NamespaceNotFound, PermissionDenied


class Action(enum.StrEnum):
    """What a request does, as far as authorization goes."""

    DESCRIBE = "describe"  # see definitions, counters, statistics
    READ = "read"  # read a stream's log: replay, Server-Sent Events, dead letters
    PUBLISH = "publish"
    CONSUME = "consume"  # fetch, ack, nack, extend, term, seek; subscribe to a topic
    MANAGE = "manage"  # create, change, purge, delete streams and subscriptions; redrive
    ADMINISTER = "administer"  # keys, grants, quotas, audit log, namespaces


class Decision(enum.Enum):
    """The outcome of :func:`decide`."""

    ALLOW = "allow"
    DENY = "deny"
    HIDDEN = "hidden"


ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.READ: frozenset({Action.DESCRIBE, Action.READ}),
    Role.CONSUME: frozenset({Action.DESCRIBE, Action.CONSUME}),
    Role.PUBLISH: frozenset({Action.DESCRIBE, Action.PUBLISH}),
    Role.MANAGE: frozenset(
        {Action.DESCRIBE, Action.READ, Action.PUBLISH, Action.CONSUME, Action.MANAGE}
    ),
    Role.ADMIN: frozenset(Action),
}


def decide(
    principal: Principal, action: Action, namespace: str | None, resource: Resource
) -> Decision:
    """Whether ``principal`` may do ``action`` on ``resource`` in ``namespace``
    (``None``: server-wide)."""
    if namespace is None:
        grants = principal.global_grants()
        return Decision.ALLOW if allows(grants, action, resource) else Decision.DENY
    grants = principal.grants_in(namespace)
    if not grants:
        return Decision.HIDDEN
    if action is Action.DESCRIBE and resource.kind is ResourceKind.NAMESPACE:
        return Decision.ALLOW
    return Decision.ALLOW if allows(grants, action, resource) else Decision.DENY


def allows(grants: Sequence[Grant], action: Action, resource: Resource) -> bool:
    """Whether one of ``grants`` gives ``action`` on ``resource``."""
    return any(action in ROLE_ACTIONS[grant.role] and grant.covers(resource) for grant in grants)


def can_see(principal: Principal, namespace: str) -> bool:
    """Whether the namespace is visible to the principal at all (lists filter by it)."""
    return decide(principal, Action.DESCRIBE, namespace, Resource.namespace()) is Decision.ALLOW


def enforce(
    principal: Principal, action: Action, namespace: str | None, resource: Resource
) -> None:
    """Raise unless allowed: :class:`PermissionDenied`, or for a hidden namespace
    the very error a nonexistent one gets."""
    decision = decide(principal, action, namespace, resource)
    if decision is Decision.ALLOW:
        return
    if decision is Decision.HIDDEN:
        assert namespace is not None
        raise hidden_namespace(namespace)
    raise PermissionDenied(
        f"{action.value} on {describe(resource)} is not allowed",
        action=action.value,
        namespace=namespace,
    )


def enforce_any(principal: Principal, action: Action, namespace: str | None) -> None:
    """Raise as :func:`enforce` unless the principal may do ``action`` on *some*
    resource there (a route whose resources are only known per item, such as a
    publish by subject, checks each item with :func:`enforce` later)."""
    if namespace is None:
        grants = principal.global_grants()
    else:
        grants = principal.grants_in(namespace)
        if not grants:
            raise hidden_namespace(namespace)
    if not any(action in ROLE_ACTIONS[grant.role] for grant in grants):
        raise PermissionDenied(
            f"{action.value} is not allowed here", action=action.value, namespace=namespace
        )


def hidden_namespace(namespace: str) -> NamespaceNotFound:
    """Exactly what the broker answers for a namespace that does not exist."""
    validate_name("namespace", namespace)
    return NamespaceNotFound(f"namespace {namespace!r} not found", namespace=namespace)


def describe(resource: Resource) -> str:
    """A resource for an error message."""
    if resource.kind is ResourceKind.NAMESPACE:
        return "the namespace" if not resource.name else f"namespace {resource.name!r}"
    return f"{resource.kind.value} {resource.name!r}"
