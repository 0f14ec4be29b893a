"""REST resource: security administration — API keys and their grants, namespace
quotas, the audit log, and ``whoami``.

Keys live in a namespace (``/v1/namespaces/{namespace}/keys``: grants only in
that namespace, managed by its ``admin`` role) or server-wide (``/v1/keys``:
any grants, managed by a server-wide ``admin``). A key's token is in the
answer to its creation and nowhere else, ever. Who may call what is in
:data:`relaymq.api.http.auth.RULES`; every call here is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from relaymq.api.http.auth import principal_of, security_of
from relaymq.api.http.dependencies import BrokerDependency, NamespacePath
from relaymq.api.http.routing import resource_router
from relaymq.auth.keys import ApiKey
from relaymq.auth.principal import ALL_NAMESPACES, Grant, Role
from relaymq.auth.quotas import Quota
from relaymq.broker import Broker
from relaymq.broker.names import validate_name
from relaymq.errors import InvalidArgument, NamespaceNotFound

router = resource_router("security")

MAX_KEY_LIFETIME_SECONDS = 10 * 365 * 24 * 3600
KeyIdPath = Annotated[str, Path(max_length=64, description="Key id.")]


class GrantIn(BaseModel):
    """A role on resource patterns in a namespace (``*``: every namespace)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(
        None,
        max_length=64,
        description="Namespace, or * (server-wide keys only); default: the key's.",
    )
    role: Role = Field(description="admin, manage, publish, consume or read.")
    resources: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=32,
        description="*, stream:GLOB, subscription:GLOB or subject:FILTER.",
    )


class GrantOut(BaseModel):
    """A grant as stored."""

    namespace: str
    role: str
    resources: list[str]


class KeyCreate(BaseModel):
    """A new API key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="What the key is for.")
    grants: list[GrantIn] = Field(default_factory=list, max_length=64)
    expires_in_seconds: int | None = Field(
        None, ge=1, le=MAX_KEY_LIFETIME_SECONDS, description="Lifetime (default: no expiry)."
    )


class GrantsPut(BaseModel):
    """The complete new grant list of a key."""

    model_config = ConfigDict(extra="forbid")

    grants: list[GrantIn] = Field(max_length=64)


class KeyOut(BaseModel):
    """An API key (never its secret)."""

    id: str
    namespace: str
    name: str
    grants: list[GrantOut]
    created_ms: int
    created_by: str
    expires_at_ms: int | None
    revoked_at_ms: int | None
    active: bool


class KeyCreated(KeyOut):
    """A new key, with its token: shown this once and never again."""

    token: str = Field(description="The bearer token. Store it now: it is not kept.")


class KeyPage(BaseModel):
    """A list of keys."""

    items: list[KeyOut]


class QuotaBody(BaseModel):
    """A namespace's quota (0: unlimited)."""

    model_config = ConfigDict(extra="forbid")

    max_streams: int | None = Field(None, ge=0, le=2**53 - 1)
    max_stored_bytes: int | None = Field(None, ge=0, le=2**53 - 1)
    publish_messages_per_second: float | None = Field(None, ge=0, le=1e12)
    publish_bytes_per_second: float | None = Field(None, ge=0, le=1e15)
    max_connections: int | None = Field(None, ge=0, le=2**53 - 1)


class QuotaOut(BaseModel):
    """The quota in force for a namespace."""

    namespace: str
    max_streams: int
    max_stored_bytes: int
    publish_messages_per_second: float
    publish_bytes_per_second: float
    max_connections: int


class AuditRecordOut(BaseModel):
    """One audit record."""

    time_ms: int
    actor: str
    action: str
    namespace: str | None
    target: str | None
    result: str
    status: int | None
    client: str | None


class AuditPage(BaseModel):
    """The most recent audit records, oldest first."""

    items: list[AuditRecordOut]


class WhoAmI(BaseModel):
    """The caller as the server sees it."""

    id: str
    kind: str
    grants: list[GrantOut]


AuditLimitQuery = Annotated[int, Query(ge=1, le=10_000, description="Most records.")]


def key_out(key: ApiKey, now_ms: int) -> dict[str, Any]:
    """A key's public fields."""
    return {**key.to_public_dict(), "active": key.is_active(now_ms)}


def require_namespace(broker: Broker, namespace: str) -> None:
    """Raise :class:`NamespaceNotFound` unless ``namespace`` exists."""
    if namespace not in broker.list_namespaces():
        raise NamespaceNotFound(f"namespace {namespace!r} not found", namespace=namespace)


def build_grants(items: list[GrantIn], key_namespace: str) -> list[Grant]:
    """Grants for a key of ``key_namespace`` (``*``: server-wide, any namespace)."""
    grants = []
    for item in items:
        namespace = item.namespace or key_namespace
        if key_namespace != ALL_NAMESPACES and namespace != key_namespace:
            raise InvalidArgument(
                f"a key of namespace {key_namespace!r} can only hold grants in it",
                field="grants",
            )
        if namespace != ALL_NAMESPACES:
            validate_name("namespace", namespace)
        grants.append(Grant.build(namespace, item.role.value, item.resources))
    return grants


async def create_key(request: Request, namespace: str, body: KeyCreate) -> dict[str, Any]:
    """Mint a key of ``namespace`` (``*``: server-wide)."""
    security = security_of(request)
    grants = build_grants(body.grants, namespace)
    now_ms = security.keys.clock_ms()
    expires_at_ms = now_ms + body.expires_in_seconds * 1000 if body.expires_in_seconds else None
    creator = principal_of(request).id
    key, token = await security.keys.create(namespace, body.name, grants, creator, expires_at_ms)
    return {**key_out(key, now_ms), "token": token}


def list_keys(request: Request, namespace: str) -> dict[str, Any]:
    """The keys of ``namespace``."""
    keys = security_of(request).keys
    now_ms = keys.clock_ms()
    return {"items": [key_out(key, now_ms) for key in keys.list(namespace)]}


def get_key(request: Request, namespace: str, key_id: str) -> dict[str, Any]:
    """One key of ``namespace``."""
    keys = security_of(request).keys
    return key_out(keys.find(namespace, key_id), keys.clock_ms())


async def revoke_key(request: Request, namespace: str, key_id: str) -> dict[str, Any]:
    """Revoke a key of ``namespace``."""
    keys = security_of(request).keys
    return key_out(await keys.revoke(namespace, key_id), keys.clock_ms())


async def put_grants(
    request: Request, namespace: str, key_id: str, body: GrantsPut
) -> dict[str, Any]:
    """Replace the grants of a key of ``namespace``."""
    keys = security_of(request).keys
    key = await keys.set_grants(namespace, key_id, build_grants(body.grants, namespace))
    return key_out(key, keys.clock_ms())


# -- who am I ------------------------------------------------------------------------------


@router.get("/auth/whoami", summary="Who am I", response_model=WhoAmI)
async def whoami(request: Request) -> dict[str, Any]:
    """The caller's identity and grants."""
    return principal_of(request).to_dict()


# -- server-wide keys ----------------------------------------------------------------------


@router.post(
    "/keys", status_code=201, summary="Create a server-wide key", response_model=KeyCreated
)
async def create_global_key(request: Request, body: KeyCreate) -> dict[str, Any]:
    """Mint a key whose grants may name any namespace or ``*``. The token is in
    this answer only."""
    return await create_key(request, ALL_NAMESPACES, body)


@router.get("/keys", summary="List server-wide keys", response_model=KeyPage)
async def list_global_keys(request: Request) -> dict[str, Any]:
    """Server-wide keys, revoked and expired ones included."""
    return list_keys(request, ALL_NAMESPACES)


@router.get("/keys/{key_id}", summary="Get a server-wide key", response_model=KeyOut)
async def get_global_key(request: Request, key_id: KeyIdPath) -> dict[str, Any]:
    """One server-wide key."""
    return get_key(request, ALL_NAMESPACES, key_id)


@router.delete("/keys/{key_id}", summary="Revoke a server-wide key", response_model=KeyOut)
async def revoke_global_key(request: Request, key_id: KeyIdPath) -> dict[str, Any]:
    """Revoke a key: it never authenticates again."""
    return await revoke_key(request, ALL_NAMESPACES, key_id)


@router.put(
    "/keys/{key_id}/grants", summary="Set a server-wide key's grants", response_model=KeyOut
)
async def put_global_grants(request: Request, key_id: KeyIdPath, body: GrantsPut) -> dict[str, Any]:
    """Replace the key's grants."""
    return await put_grants(request, ALL_NAMESPACES, key_id, body)


# -- namespace keys ------------------------------------------------------------------------

NAMESPACE_KEYS = "/namespaces/{namespace}/keys"


@router.post(NAMESPACE_KEYS, status_code=201, summary="Create a key", response_model=KeyCreated)
async def create_namespace_key(
    request: Request, namespace: NamespacePath, body: KeyCreate, broker: BrokerDependency
) -> dict[str, Any]:
    """Mint a key with grants in this namespace. The token is in this answer only."""
    require_namespace(broker, namespace)
    return await create_key(request, namespace, body)


@router.get(NAMESPACE_KEYS, summary="List keys", response_model=KeyPage)
async def list_namespace_keys(
    request: Request, namespace: NamespacePath, broker: BrokerDependency
) -> dict[str, Any]:
    """The namespace's keys, revoked and expired ones included."""
    require_namespace(broker, namespace)
    return list_keys(request, namespace)


@router.get(NAMESPACE_KEYS + "/{key_id}", summary="Get a key", response_model=KeyOut)
async def get_namespace_key(
    request: Request, namespace: NamespacePath, key_id: KeyIdPath, broker: BrokerDependency
) -> dict[str, Any]:
    """One key of the namespace."""
    require_namespace(broker, namespace)
    return get_key(request, namespace, key_id)


@router.delete(NAMESPACE_KEYS + "/{key_id}", summary="Revoke a key", response_model=KeyOut)
async def revoke_namespace_key(
    request: Request, namespace: NamespacePath, key_id: KeyIdPath, broker: BrokerDependency
) -> dict[str, Any]:
    """Revoke a key of the namespace: it never authenticates again."""
    require_namespace(broker, namespace)
    return await revoke_key(request, namespace, key_id)


@router.put(
    NAMESPACE_KEYS + "/{key_id}/grants", summary="Set a key's grants", response_model=KeyOut
)
async def put_namespace_grants(
    request: Request,
    namespace: NamespacePath,
    key_id: KeyIdPath,
    body: GrantsPut,
    broker: BrokerDependency,
) -> dict[str, Any]:
    """Replace the key's grants (all in this namespace)."""
    require_namespace(broker, namespace)
    return await put_grants(request, namespace, key_id, body)


# -- quotas --------------------------------------------------------------------------------


def quota_out(namespace: str, quota: Quota) -> dict[str, Any]:
    """A quota as the API shows it."""
    return {"namespace": namespace, **quota.to_dict()}


@router.get("/namespaces/{namespace}/quota", summary="Get a quota", response_model=QuotaOut)
async def get_quota(
    request: Request, namespace: NamespacePath, broker: BrokerDependency
) -> dict[str, Any]:
    """The quota in force for the namespace."""
    require_namespace(broker, namespace)
    return quota_out(namespace, security_of(request).quotas.quota(namespace))


@router.put("/namespaces/{namespace}/quota", summary="Change a quota", response_model=QuotaOut)
async def put_quota(
    request: Request, namespace: NamespacePath, body: QuotaBody, broker: BrokerDependency
) -> dict[str, Any]:
    """Override the fields given (server-wide admins only); the rest keep their value."""
    require_namespace(broker, namespace)
    changes = body.model_dump(exclude_none=True)
    quota = await security_of(request).quotas.update(namespace, changes)
    return quota_out(namespace, quota)


# -- audit ---------------------------------------------------------------------------------


@router.get("/audit", summary="Read the audit log", response_model=AuditPage)
async def read_audit(request: Request, limit: AuditLimitQuery = 100) -> dict[str, Any]:
    """The most recent administrative actions of the whole server."""
    records = security_of(request).audit.records(limit=limit)
    return {"items": [record.to_dict() for record in records]}


@router.get(
    "/namespaces/{namespace}/audit",
    summary="Read a namespace's audit log",
    response_model=AuditPage,
)
async def read_namespace_audit(
    request: Request,
    namespace: NamespacePath,
    broker: BrokerDependency,
    limit: AuditLimitQuery = 100,
) -> dict[str, Any]:
    """The most recent administrative actions in the namespace."""
    require_namespace(broker, namespace)
    records = security_of(request).audit.records(namespace=namespace, limit=limit)
    return {"items": [record.to_dict() for record in records]}
