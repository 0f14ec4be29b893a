"""The authenticated identity: who is calling, and what was granted to them.

A :class:`Principal` holds :class:`Grant` values: a role in a namespace (or in
every namespace, ``*``) on resource patterns. This module only *describes*
identities and matches resources against patterns; deciding whether an action
is allowed is :mod:`relaymq.auth.policy`'s job alone.

Resource patterns (``Grant.resources``):

* ``*`` — everything in the namespace, the namespace itself included;
* ``stream:GLOB`` — streams (queues and topics are streams) whose name matches
  the glob (``*`` any run of characters, ``?`` one);
* ``subscription:GLOB`` — subscriptions by name;
* ``subject:FILTER`` — subjects a publish-by-subject may use (``orders.>``).
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from relaymq.core.subjects import SubjectFilter, validate_filter
from relaymq.errors import InvalidArgument, InvalidSubject

ALL_NAMESPACES = "*"
ALL_RESOURCES = "*"
MAX_GRANTS = 64
MAX_PATTERN_CHARS = 256


class Role(enum.StrEnum):
    """What a grant lets its holder do (the actions are in :mod:`relaymq.auth.policy`)."""

    ADMIN = "admin"
    MANAGE = "manage"
    PUBLISH = "publish"
    CONSUME = "consume"
    READ = "read"


class ResourceKind(enum.StrEnum):
    """The kinds of resource an action can name."""

    NAMESPACE = "namespace"
    STREAM = "stream"
    SUBSCRIPTION = "subscription"
    SUBJECT = "subject"


PATTERN_KINDS = (ResourceKind.STREAM, ResourceKind.SUBSCRIPTION, ResourceKind.SUBJECT)


@dataclass(frozen=True, slots=True)
class Resource:
    """One thing an action touches: the namespace itself, a stream, a subscription
    or a subject."""

    kind: ResourceKind
    name: str = ""

    @classmethod
    def namespace(cls) -> Resource:
        """The namespace itself (its collections: list, create)."""
        return cls(ResourceKind.NAMESPACE)


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    """A parsed resource pattern (see the module docstring)."""

    text: str
    kind: ResourceKind | None  # None: every resource
    glob: str = ""
    subject_filter: SubjectFilter | None = None

    @classmethod
    def parse(cls, text: str) -> ResourcePattern:
        """Parse a pattern; :class:`InvalidArgument` when malformed."""
        if text == ALL_RESOURCES:
            return cls(text, None)
        kind_text, separator, body = text.partition(":")
        if not separator or not body or len(text) > MAX_PATTERN_CHARS:
            raise invalid_pattern(text)
        try:
            kind = ResourceKind(kind_text)
        except ValueError:
            raise invalid_pattern(text) from None
        if kind not in PATTERN_KINDS:
            raise invalid_pattern(text)
        if kind is ResourceKind.SUBJECT:
            return cls(text, kind, subject_filter=parse_subject_filter(text, body))
        return cls(text, kind, glob=body)

    def matches(self, resource: Resource) -> bool:
        """Whether this pattern covers ``resource``."""
        if self.kind is None:
            return True
        if resource.kind is not self.kind:
            return False
        if self.subject_filter is not None:
            return self.subject_filter(resource.name)
        return fnmatch.fnmatchcase(resource.name, self.glob)


def parse_subject_filter(text: str, body: str) -> SubjectFilter:
    """The subject filter of a ``subject:`` pattern."""
    try:
        validate_filter(body)
    except InvalidSubject:
        raise invalid_pattern(text) from None
    return SubjectFilter(body)


def invalid_pattern(text: str) -> InvalidArgument:
    """The error for a malformed resource pattern."""
    return InvalidArgument(
        f"invalid resource pattern {text[:MAX_PATTERN_CHARS]!r}: use *, stream:GLOB, "
        "subscription:GLOB or subject:FILTER",
        field="resources",
    )


@dataclass(frozen=True, slots=True)
class Grant:
    """A role in one namespace (or ``*``: every namespace) on resource patterns."""

    namespace: str
    role: Role
    resources: tuple[ResourcePattern, ...] = (ResourcePattern(ALL_RESOURCES, None),)

    @classmethod
    def build(cls, namespace: str, role: str, resources: list[str] | None = None) -> Grant:
        """A grant from plain values; :class:`InvalidArgument` when one is wrong."""
        try:
            parsed_role = Role(role)
        except ValueError:
            roles = ", ".join(member.value for member in Role)
            raise InvalidArgument(f"unknown role {role!r}: use {roles}", field="role") from None
        patterns = tuple(ResourcePattern.parse(text) for text in (resources or [ALL_RESOURCES]))
        return cls(namespace, parsed_role, patterns)

    @property
    def is_global(self) -> bool:
        """Whether the grant covers every namespace."""
        return self.namespace == ALL_NAMESPACES

    def covers_namespace(self, namespace: str) -> bool:
        """Whether the grant applies in ``namespace``."""
        return self.is_global or self.namespace == namespace

    def covers(self, resource: Resource) -> bool:
        """Whether one of the grant's patterns covers ``resource``."""
        return any(pattern.matches(resource) for pattern in self.resources)

    def to_dict(self) -> dict[str, Any]:
        """The grant as JSON (``{"namespace", "role", "resources"}``)."""
        return {
            "namespace": self.namespace,
            "role": self.role.value,
            "resources": [pattern.text for pattern in self.resources],
        }


def grants_from_json(items: list[dict[str, Any]]) -> tuple[Grant, ...]:
    """Grants from their JSON form (stored keys, JWT claims)."""
    if len(items) > MAX_GRANTS:
        raise InvalidArgument(f"at most {MAX_GRANTS} grants", field="grants")
    return tuple(
        Grant.build(str(item["namespace"]), str(item["role"]), item.get("resources"))
        for item in items
    )


class PrincipalKind(enum.StrEnum):
    """How a principal authenticated."""

    API_KEY = "api_key"
    JWT = "jwt"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: an id for the audit log and its grants."""

    id: str
    kind: PrincipalKind
    grants: tuple[Grant, ...] = field(default=())
    # When the credential stops holding (ms since the epoch); None: never on its own.
    expires_at_ms: int | None = None

    def grants_in(self, namespace: str) -> list[Grant]:
        """The grants that apply in ``namespace``."""
        return [grant for grant in self.grants if grant.covers_namespace(namespace)]

    def global_grants(self) -> list[Grant]:
        """The grants that apply in every namespace (server-wide powers)."""
        return [grant for grant in self.grants if grant.is_global]

    def to_dict(self) -> dict[str, Any]:
        """The principal as JSON (``whoami``)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "grants": [grant.to_dict() for grant in self.grants],
        }


ANONYMOUS = Principal("anonymous", PrincipalKind.ANONYMOUS, (Grant(ALL_NAMESPACES, Role.ADMIN),))
"""Who a request without credentials is when ``auth_mode`` is ``anonymous``."""
