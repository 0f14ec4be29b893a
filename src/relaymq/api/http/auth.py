"""The HTTP face of security: one dependency that authenticates every request and
asks the policy about it, the table mapping each route to its action and
resource, and the audit middleware.

:func:`authorize` runs in front of every ``/v1`` route, the SSE route and
``/metrics`` (``create_app`` attaches it at router level): it reads
``Authorization: Bearer <API key or JWT>``, finds the route's :class:`Rule`
in :data:`RULES` (a route without one is refused: fail closed, and
:func:`check_rules` stops the app from starting with one), and calls
:func:`relaymq.auth.policy.enforce`. The principal is left on
``request.state.principal`` for the few handlers that authorize per item
(publish by subject) or filter lists (namespaces).

The WebSocket adapter uses :func:`authenticate_websocket` at the handshake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relaymq.auth.policy import Action, can_see, enforce, enforce_any, hidden_namespace
from relaymq.auth.principal import Principal, Resource, ResourceKind
from relaymq.auth.security import Security
from relaymq.errors import PermissionDenied

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`rmq_...`) or a JSON Web Token.",
)

NAMESPACE = ResourceKind.NAMESPACE
STREAM = ResourceKind.STREAM
SUBSCRIPTION = ResourceKind.SUBSCRIPTION
SUBJECT = ResourceKind.SUBJECT


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route does: the action, the kind of resource it names and the path
    parameter holding its name. ``scoped`` is false for server-wide routes;
    ``any_resource`` defers the resource check to the handler (per subject)."""

    action: Action
    kind: ResourceKind = NAMESPACE
    parameter: str | None = None
    scoped: bool = True
    any_resource: bool = False

    def resource(self, path_parameters: dict[str, Any]) -> Resource:
        """The resource a request names."""
        if self.parameter is None:
            return Resource(self.kind)
        return Resource(self.kind, str(path_parameters.get(self.parameter, "")))

    @property
    def audited(self) -> bool:
        """Administrative actions are written to the audit log."""
        return self.action in (Action.MANAGE, Action.ADMINISTER)


def server(action: Action) -> Rule:
    """A server-wide rule."""
    return Rule(action, scoped=False)


def on(action: Action, kind: ResourceKind, parameter: str) -> Rule:
    """A rule on the resource named by a path parameter."""
    return Rule(action, kind, parameter)


def in_namespace(action: Action) -> Rule:
    """A rule on the namespace itself."""
    return Rule(action)


D, R, P, C, M, A = (
    Action.DESCRIBE,
    Action.READ,
    Action.PUBLISH,
    Action.CONSUME,
    Action.MANAGE,
    Action.ADMINISTER,
)
NS = "/v1/namespaces/{namespace}"
STREAM_PATH = NS + "/streams/{stream}"
SUBSCRIPTION_PATH = NS + "/subscriptions/{subscription}"
QUEUE_PATH = NS + "/queues/{queue}"
TOPIC_PATH = NS + "/topics/{topic}"
SETTLE_OPERATIONS = ("fetch", "ack", "nack", "extend", "term")

RULES: dict[tuple[str, str], Rule] = {
    # namespaces: creating and deleting tenants is a server-wide power
    ("POST", "/v1/namespaces"): server(A),
    ("GET", "/v1/namespaces"): server(D),  # any principal; the list is filtered
    ("GET", NS): in_namespace(D),
    ("DELETE", NS): server(A),
    ("GET", NS + "/stats"): in_namespace(D),
    # streams
    ("POST", NS + "/streams"): in_namespace(M),
    ("GET", NS + "/streams"): in_namespace(D),
    ("GET", STREAM_PATH): on(D, STREAM, "stream"),
    ("PATCH", STREAM_PATH): on(M, STREAM, "stream"),
    ("DELETE", STREAM_PATH): on(M, STREAM, "stream"),
    ("POST", STREAM_PATH + "/purge"): on(M, STREAM, "stream"),
    ("GET", STREAM_PATH + "/messages"): on(R, STREAM, "stream"),
    ("GET", STREAM_PATH + "/events"): on(R, STREAM, "stream"),
    ("POST", STREAM_PATH + "/messages"): on(P, STREAM, "stream"),
    ("POST", NS + "/publish"): Rule(P, SUBJECT, any_resource=True),
    # subscriptions
    ("POST", NS + "/subscriptions"): in_namespace(M),
    ("GET", NS + "/subscriptions"): in_namespace(D),
    ("GET", SUBSCRIPTION_PATH): on(D, SUBSCRIPTION, "subscription"),
    ("PATCH", SUBSCRIPTION_PATH): on(M, SUBSCRIPTION, "subscription"),
    ("DELETE", SUBSCRIPTION_PATH): on(M, SUBSCRIPTION, "subscription"),
    ("POST", SUBSCRIPTION_PATH + "/purge"): on(M, SUBSCRIPTION, "subscription"),
    ("GET", SUBSCRIPTION_PATH + "/dead-letters"): on(R, SUBSCRIPTION, "subscription"),
    ("POST", SUBSCRIPTION_PATH + "/dead-letters/redrive"): on(M, SUBSCRIPTION, "subscription"),
    ("POST", SUBSCRIPTION_PATH + "/seek"): on(C, SUBSCRIPTION, "subscription"),
    **{
        ("POST", f"{SUBSCRIPTION_PATH}/{operation}"): on(C, SUBSCRIPTION, "subscription")
        for operation in SETTLE_OPERATIONS
    },
    # queues: the stream and the subscription share the queue's name
    ("POST", NS + "/queues"): in_namespace(M),
    ("GET", NS + "/queues"): in_namespace(D),
    ("GET", QUEUE_PATH): on(D, STREAM, "queue"),
    ("DELETE", QUEUE_PATH): on(M, STREAM, "queue"),
    ("POST", QUEUE_PATH + "/purge"): on(M, STREAM, "queue"),
    ("POST", QUEUE_PATH + "/messages"): on(P, STREAM, "queue"),
    ("GET", QUEUE_PATH + "/dead-letters"): on(R, SUBSCRIPTION, "queue"),
    ("POST", QUEUE_PATH + "/dead-letters/redrive"): on(M, SUBSCRIPTION, "queue"),
    **{
        ("POST", f"{QUEUE_PATH}/{operation}"): on(C, SUBSCRIPTION, "queue")
        for operation in SETTLE_OPERATIONS
    },
    # topics: subscribing is what a consumer does
    ("POST", NS + "/topics"): in_namespace(M),
    ("GET", NS + "/topics"): in_namespace(D),
    ("GET", TOPIC_PATH): on(D, STREAM, "topic"),
    ("DELETE", TOPIC_PATH): on(M, STREAM, "topic"),
    ("POST", TOPIC_PATH + "/subscriptions"): on(C, STREAM, "topic"),
    ("POST", TOPIC_PATH + "/messages"): on(P, STREAM, "topic"),
    # security administration (relaymq.api.http.admin)
    ("GET", "/v1/auth/whoami"): server(D),  # any principal: it describes itself
    ("POST", "/v1/keys"): server(A),
    ("GET", "/v1/keys"): server(A),
    ("GET", "/v1/keys/{key_id}"): server(A),
    ("DELETE", "/v1/keys/{key_id}"): server(A),
    ("PUT", "/v1/keys/{key_id}/grants"): server(A),
    ("POST", NS + "/keys"): in_namespace(A),
    ("GET", NS + "/keys"): in_namespace(A),
    ("GET", NS + "/keys/{key_id}"): in_namespace(A),
    ("DELETE", NS + "/keys/{key_id}"): in_namespace(A),
    ("PUT", NS + "/keys/{key_id}/grants"): in_namespace(A),
    ("GET", NS + "/quota"): in_namespace(D),
    ("PUT", NS + "/quota"): server(A),  # a tenant never raises its own quota
    ("GET", "/v1/audit"): server(A),
    ("GET", NS + "/audit"): in_namespace(A),
    # operations
    ("GET", "/metrics"): server(D),
}
"""Every protected route: (method, path template) -> rule."""

OPEN_TO_EVERY_PRINCIPAL = {("GET", "/v1/namespaces"), ("GET", "/v1/auth/whoami")}


def security_of(connection: HTTPConnection) -> Security:
    """The server's security services."""
    return connection.app.state.security


def route_key(request: Request) -> tuple[str, str]:
    """``(method, path template)`` of the matched route."""
    route = request.scope.get("route")
    return request.method, getattr(route, "path", "")


QUERY_TOKEN_PARAMETER = "access_token"
# Only the listen-only Server-Sent Events route takes a token in its URL: a browser's
# EventSource cannot send headers. Everywhere else a URL token would just leak into
# logs and histories. (The WebSocket handshake takes one too: authenticate_websocket.)
QUERY_TOKEN_ROUTES = frozenset({("GET", "/v1/namespaces/{namespace}/streams/{stream}/events")})


def query_token(request: Request, key: tuple[str, str]) -> str | None:
    """The ``?access_token=`` credential, on the routes that accept one."""
    if key not in QUERY_TOKEN_ROUTES:
        return None
    return request.query_params.get(QUERY_TOKEN_PARAMETER) or None


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Authenticate the request and enforce the policy for its route."""
    key = route_key(request)
    rule = RULES.get(key)
    namespace = request.path_params.get("namespace")
    if rule is not None and rule.audited:
        request.state.audit = AuditContext(f"{key[0]} {key[1]}", namespace, target_of(request))
    security = security_of(request)
    token = credentials.credentials if credentials else query_token(request, key)
    principal = await security.authenticate(token)
    request.state.principal = principal
    check_access(principal, key, request.path_params)
    if rule is not None and rule.action is Action.PUBLISH and namespace is not None:
        security.quotas.check_publish_room(namespace)  # before the body is read
    return principal


def check_access(
    principal: Principal, key: tuple[str, str], path_parameters: dict[str, Any]
) -> None:
    """Raise unless the policy lets ``principal`` do what the route ``key``
    (method, path template) does to the resource its path parameters name. The
    rate gate (:mod:`relaymq.api.http.rate_gate`) asks this too, so both answer alike."""
    rule = RULES.get(key)
    if rule is None:
        raise PermissionDenied("this route has no authorization rule", route=key[1])
    if key in OPEN_TO_EVERY_PRINCIPAL:
        return
    namespace = path_parameters.get("namespace")
    if namespace is not None and not can_see(principal, namespace):
        raise hidden_namespace(namespace)  # before any other answer, as if it did not exist
    scope_namespace = namespace if rule.scoped else None
    if rule.any_resource:
        enforce_any(principal, rule.action, scope_namespace)
    else:
        enforce(principal, rule.action, scope_namespace, rule.resource(path_parameters))


def bearer_token(header: str | None) -> str | None:
    """The credential of an ``Authorization`` header, read exactly as :data:`bearer`
    reads it (``None``: none, or another scheme)."""
    scheme, credentials = get_authorization_scheme_param(header)
    if not (header and scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


AuthorizedPrincipal = Annotated[Principal, Depends(authorize)]
AUTHORIZED = [Depends(authorize)]
"""The dependency list ``create_app`` attaches to every protected router."""


def principal_of(request: Request) -> Principal:
    """The principal :func:`authorize` found for this request."""
    return request.state.principal


def authorize_subjects(request: Request, namespace: str, subjects: Iterable[str]) -> None:
    """Enforce ``publish`` on each subject of a publish-by-subject request."""
    principal = principal_of(request)
    for subject in set(subjects):
        enforce(principal, Action.PUBLISH, namespace, Resource(SUBJECT, subject))


def visible_namespaces(request: Request, names: list[str]) -> list[str]:
    """The namespaces of ``names`` the caller may see."""
    principal = principal_of(request)
    return [name for name in names if can_see(principal, name)]


def target_of(request: Request) -> str | None:
    """The resource a path names, for the audit log (the last path parameter)."""
    values = [str(value) for name, value in request.path_params.items() if name != "namespace"]
    return values[-1] if values else None


def check_rules(routes: Iterable[BaseRoute], public_paths: Iterable[str]) -> None:
    """Refuse to build an app with a route that is neither public nor ruled.

    Takes the routes themselves (the app's own and those of each included router):
    FastAPI wraps an included router into one opaque route of the app.
    """
    public = set(public_paths)
    for route in routes:
        if not isinstance(route, APIRoute) or route.path in public:
            continue
        for method in route.methods or ():
            if method != "HEAD" and (method, route.path) not in RULES:
                raise RuntimeError(f"route {method} {route.path} has no authorization rule")


# -- the WebSocket handshake ------------------------------------------------------------


async def authenticate_websocket(connection: HTTPConnection) -> Principal:
    """The principal of a WebSocket handshake: ``Authorization: Bearer``, or for a
    browser (whose WebSocket API cannot set headers) ``?access_token=``."""
    header = connection.headers.get("authorization")
    token = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    if token is None:
        token = connection.query_params.get(QUERY_TOKEN_PARAMETER) or None
    return await security_of(connection).authenticate(token)


def origin_allowed(connection: HTTPConnection, allowed_origins: list[str]) -> bool:
    """Whether a WebSocket's ``Origin`` may connect: clients that send none (not
    browsers), the server's own origin, and the configured ``allowed_origins``."""
    origin = connection.headers.get("origin")
    if origin is None or "*" in allowed_origins or origin in allowed_origins:
        return True
    host = connection.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


# -- connection quotas of long-lived responses ------------------------------------------


def counted_connection(
    body: AsyncIterator[bytes], connection: HTTPConnection, namespace: str
) -> AsyncIterator[bytes]:
    """``body``, counted against the namespace's ``max_connections`` while it
    runs; :class:`QuotaExceeded` at once (before the response starts) when full."""
    security = security_of(connection)
    security.quotas.check_connection(namespace)
    return counting(body, security, namespace)


async def counting(
    body: AsyncIterator[bytes], security: Security, namespace: str
) -> AsyncIterator[bytes]:
    """Count the connection from its first chunk to its end."""
    security.quotas.open_connection(namespace)
    try:
        async for chunk in body:
            yield chunk
    finally:
        security.quotas.close_connection(namespace)


# -- the audit middleware -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditContext:
    """What :func:`authorize` notes about an administrative request."""

    action: str
    namespace: str | None
    target: str | None


RESULT_BY_STATUS = {
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
}


def result_of(status: int) -> str:
    """The audit result of a response status."""
    if status < 400:
        return "ok"
    return RESULT_BY_STATUS.get(status, "error")


class AuditTrail:
    """ASGI middleware: writes an audit record for every administrative request
    once its status is known (denied attempts included)."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, then record it if it was administrative."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        status = {"code": 500}

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.write(state, status["code"], scope)

    def write(self, state: dict[str, Any], status: int, scope: Scope) -> None:
        """The audit record of one finished request, if it needs one."""
        context: AuditContext | None = state.get("audit")
        if context is None:
            return
        principal: Principal | None = state.get("principal")
        client = scope.get("client")
        self.security.audit.record(
            principal.id if principal else "unauthenticated",
            context.action,
            result_of(status),
            namespace=context.namespace,
            target=context.target,
            status=status,
            client=client[0] if client else None,
        )
