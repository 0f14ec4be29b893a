"""Every HTTP route of the app has an authorization rule, and a route without one is
refused when the app is built."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

from relaymq.api.app import PUBLIC_PATHS, ROUTERS
from relaymq.api.http.auth import check_rules


def test_every_route_of_every_router_is_ruled() -> None:
    routes = [route for router in ROUTERS for route in router.routes]
    assert sum(isinstance(route, APIRoute) for route in routes) > 50
    check_rules(routes, PUBLIC_PATHS)


def test_a_route_without_a_rule_is_refused() -> None:
    router = APIRouter()

    @router.post("/v1/namespaces/{namespace}/forgotten")
    async def forgotten() -> None:
        """A route someone added without a rule."""

    with pytest.raises(RuntimeError, match="no authorization rule"):
        check_rules(router.routes, PUBLIC_PATHS)
