"""The router every REST resource module uses, and its strict JSON request parsing.

:func:`resource_router` builds an :class:`APIRouter` whose routes document the
shared error responses and parse JSON bodies strictly (:class:`StrictJsonRequest`):
a lone UTF-16 surrogate, ``NaN`` or ``Infinity`` is a 422, never a string that
cannot be encoded further down.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from relaymq.api.http.errors import API_ERROR_STATUSES, error_responses


class StrictJsonRequest(Request):
    """A request whose JSON body is parsed by a strict RFC 8259 parser."""

    async def json(self) -> Any:
        """The parsed body; a malformed body raises :class:`json.JSONDecodeError`."""
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def parse_json(body: bytes) -> Any:
    """Parse strict JSON (no lone surrogates, no NaN), raising ``JSONDecodeError``."""
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as error:
        raise json.JSONDecodeError(str(error), body.decode("utf-8", "replace"), 0) from error


class StrictJsonRoute(APIRoute):
    """An API route that hands its endpoint a :class:`StrictJsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The default handler, fed the strict request."""
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler


def resource_router(tag: str) -> APIRouter:
    """A router for one REST resource: strict JSON and the shared error responses."""
    return APIRouter(
        prefix="/v1",
        tags=[tag],
        route_class=StrictJsonRoute,
        responses=error_responses(*API_ERROR_STATUSES),
    )
