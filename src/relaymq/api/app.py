"""The ASGI application: every HTTP-borne adapter mounted on one FastAPI app.

:func:`create_app` wires the REST resources (``/v1``), the health probes, the
error handlers, the request body limit, and the WebSocket, SSE and metrics
endpoints around an already open broker. It owns no lifecycle: the server
opens the broker before and closes it after.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from relaymq import __version__
from relaymq.api import metrics, sse, websocket
from relaymq.api.http import (
    admin,
    consume,
    health,
    namespaces,
    publish,
    queues,
    streams,
    subscriptions,
    topics,
)
from relaymq.api.http.auth import AUTHORIZED, AuditTrail, check_rules
from relaymq.api.http.draining import install_draining
from relaymq.api.http.errors import install_error_handlers
from relaymq.api.http.limits import BodySizeLimit
from relaymq.api.http.rate_gate import RateGate
from relaymq.auth.gate import QuotaGate
from relaymq.auth.security import Security
from relaymq.broker import Broker
from relaymq.config import Settings

DESCRIPTION = """Durable queues, pub/sub topics and replayable event streams.

Every resource lives in a namespace (`default` always exists). Every error has
the body `{"error": {"code", "message", "details"}}` with a stable `code`.
"""

PUBLIC_PATHS = ("/healthz", "/readyz")
"""Routes served without credentials (the probes; the OpenAPI document and docs too)."""

ROUTERS = (
    namespaces.router,
    streams.router,
    publish.router,
    subscriptions.router,
    consume.router,
    queues.router,
    topics.router,
    admin.router,
)
"""The protected REST resources: every route passes :func:`relaymq.api.http.auth.authorize`."""


def create_app(broker: Broker, settings: Settings, security: Security) -> FastAPI:
    """The FastAPI app serving ``broker`` with the limits in ``settings``; adapters
    see the broker behind ``security``'s quotas, and every route but the probes
    is authenticated and authorized."""
    app = FastAPI(
        title="RelayMQ",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    gated = QuotaGate(broker, security.quotas)
    app.state.broker = gated
    app.state.settings = settings
    app.state.security = security
    install_error_handlers(app)
    install_draining(app)
    app.add_middleware(BodySizeLimit, max_request_bytes=settings.max_request_bytes)
    app.add_middleware(AuditTrail, security=security)
    app.add_middleware(RateGate, security=security)  # outside the audit: publishes are not audited
    app.include_router(health.router)
    for router in ROUTERS:
        app.include_router(router, dependencies=AUTHORIZED)
    websocket.install(app, gated, settings)  # type: ignore[arg-type]
    sse.install(app, gated, settings)  # type: ignore[arg-type]
    metrics.install(app, broker, settings)
    check_rules(
        [*app.routes, *(route for router in ROUTERS for route in router.routes)], PUBLIC_PATHS
    )
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, built once, with the publish body models in its components."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        add_component_schemas(document, publish.OPENAPI_BODY_MODELS)
        app.openapi_schema = document
    return app.openapi_schema


def add_component_schemas(document: dict[str, Any], models: tuple[type[BaseModel], ...]) -> None:
    """Add models that routes reference by hand (``openapi_extra``) to the components."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in definitions.get("$defs", {}).items():
        schemas.setdefault(name, schema)
