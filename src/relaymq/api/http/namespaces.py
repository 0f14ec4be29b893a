"""REST resource: namespaces (``/v1/namespaces``) and their summary statistics.

A namespace is the tenant boundary; every other resource lives under
``/v1/namespaces/{namespace}``. ``default`` always exists.
"""

from __future__ import annotations

from fastapi import Request, Response

from relaymq.api.http.auth import visible_namespaces
from relaymq.api.http.dependencies import BrokerDependency, NamespacePath
from relaymq.api.http.pagination import CursorQuery, LimitQuery, paginate
from relaymq.api.http.routing import resource_router
from relaymq.api.http.schemas import NamespaceCreate, NamespaceOut, NamespaceStats, Page
from relaymq.broker import Broker
from relaymq.errors import NamespaceNotFound

router = resource_router("namespaces")


def require_namespace(broker: Broker, namespace: str) -> None:
    """Raise :class:`NamespaceNotFound` unless ``namespace`` exists."""
    if not broker.has_namespace(namespace):
        raise NamespaceNotFound(f"namespace {namespace!r} not found", namespace=namespace)


def namespace_out(broker: Broker, namespace: str) -> NamespaceOut:
    """A namespace with its resource counts."""
    return NamespaceOut(
        name=namespace,
        streams=len(broker.list_streams(namespace)),
        subscriptions=len(broker.list_subscriptions(namespace)),
    )


@router.post(
    "/namespaces",
    status_code=201,
    summary="Create a namespace",
    response_model=NamespaceOut,
)
async def create_namespace(body: NamespaceCreate, broker: BrokerDependency) -> NamespaceOut:
    """Create an empty namespace."""
    await broker.create_namespace(body.name)
    return namespace_out(broker, body.name)


@router.get("/namespaces", summary="List namespaces", response_model=Page[NamespaceOut])
async def list_namespaces(
    request: Request, broker: BrokerDependency, limit: LimitQuery = 100, cursor: CursorQuery = None
) -> Page[NamespaceOut]:
    """The namespaces the caller may see, by name, one page at a time."""
    visible = visible_namespaces(request, broker.list_namespaces())
    names, next_cursor = paginate(visible, str, limit, cursor)
    items = [namespace_out(broker, name) for name in names]
    return Page[NamespaceOut](items=items, next_cursor=next_cursor)


@router.get("/namespaces/{namespace}", summary="Get a namespace", response_model=NamespaceOut)
async def get_namespace(namespace: NamespacePath, broker: BrokerDependency) -> NamespaceOut:
    """A namespace and how many streams and subscriptions it holds."""
    require_namespace(broker, namespace)
    return namespace_out(broker, namespace)


@router.delete(
    "/namespaces/{namespace}",
    status_code=204,
    summary="Delete an empty namespace",
    response_class=Response,
)
async def delete_namespace(namespace: NamespacePath, broker: BrokerDependency) -> Response:
    """Delete a namespace; it must hold no streams (409 ``namespace_not_empty``)."""
    await broker.delete_namespace(namespace)
    return Response(status_code=204)


@router.get(
    "/namespaces/{namespace}/stats",
    summary="Namespace statistics",
    response_model=NamespaceStats,
)
async def namespace_stats(namespace: NamespacePath, broker: BrokerDependency) -> NamespaceStats:
    """Totals over the namespace's streams and subscriptions."""
    require_namespace(broker, namespace)
    streams = broker.list_streams(namespace)
    subscriptions = broker.list_subscriptions(namespace)
    return NamespaceStats(
        namespace=namespace,
        streams=len(streams),
        subscriptions=len(subscriptions),
        messages=sum(stream.messages for stream in streams),
        bytes=sum(stream.bytes for stream in streams),
        pending=sum(item.pending for item in subscriptions),
        in_flight=sum(item.in_flight for item in subscriptions),
        lag_messages=sum(item.lag_messages for item in subscriptions),
        dead_lettered=sum(item.dead_lettered for item in subscriptions),
    )
