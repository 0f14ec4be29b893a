"""The HTTP face of the error tree: the one mapping of errors to HTTP status codes.

Every error response of the REST API has the body ``{"error": {"code",
"message", "details"}}``. :data:`STATUS_BY_ERROR` maps a :class:`RelayError`
class to a status; :func:`status_for` walks the class's MRO, so a subclass
inherits its parent's status unless it has its own entry. The handlers below
translate everything else that can go wrong in a request (validation errors,
unknown routes, oversize bodies) into the same body, and a last-resort handler
turns any unexpected exception into a logged ``500`` without a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from relaymq import errors

logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_SECONDS = 1


class MethodNotAllowed(errors.InvalidArgument):
    """The route exists but not with this HTTP method."""

    code = "method_not_allowed"


class InvalidRequest(errors.InvalidArgument):
    """The request did not match the operation's schema (body, query or path)."""

    code = "invalid_request"


class RequestTooLarge(errors.PayloadTooLarge):
    """The HTTP request body exceeds ``max_request_bytes``."""

    code = "request_too_large"


class InternalError(errors.RelayError):
    """A bug: an exception nothing else handled. Logged; never expected."""

    code = "internal"


STATUS_BY_ERROR: dict[type[errors.RelayError], int] = {
    errors.RelayError: 400,
    errors.InvalidArgument: 400,
    InvalidRequest: 422,
    MethodNotAllowed: 405,
    errors.SchemaViolation: 422,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.LimitExceeded: 400,
    errors.PayloadTooLarge: 413,
    errors.BatchTooLarge: 413,
    errors.HeadersTooLarge: 413,
    errors.TooManyConnections: 503,
    errors.RateLimited: 429,
    errors.StorageFull: 507,
    errors.Unavailable: 503,
    errors.CorruptRecord: 503,
    errors.StorageFailed: 507,
    InternalError: 500,
}

RETRYABLE_STATUSES = frozenset({429, 503})

STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid argument: a bad name, subject, receipt, cursor or value.",
    401: "Unauthenticated: no or invalid credentials.",
    403: "Permission denied.",
    404: "Not found: the namespace, stream, subscription, partition or route does not exist.",
    409: "Conflict: already exists, not empty, subject overlap, offset out of range.",
    413: "Too large: request body, payload, batch or headers over the limit.",
    422: "Request validation failed, or a payload broke the stream's JSON Schema.",
    429: "Rate limited; retry after the Retry-After header.",
    503: "Unavailable (starting, shutting down, overloaded); retry after Retry-After.",
    507: "Storage full (the disk or the stream's byte limit), or failed (storage_failed).",
}


class ErrorInfo(BaseModel):
    """What went wrong: a stable ``code``, a readable ``message``, JSON ``details``."""

    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="Human-readable explanation.")
    details: dict[str, Any] = Field(default_factory=dict, description="Extra facts.")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting error statuses with :class:`ErrorBody`."""
    return {
        status: {"model": ErrorBody, "description": STATUS_DESCRIPTIONS[status]}
        for status in statuses
    }


API_ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 503, 507)
"""The statuses any ``/v1`` operation may return (documented on each of them)."""


def status_for(error: errors.RelayError) -> int:
    """The HTTP status of an error: the entry of the nearest class in its MRO."""
    for cls in type(error).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


def retry_after_seconds(error: errors.RelayError, status: int) -> int | None:
    """The Retry-After value for a retryable error, else ``None``."""
    if status not in RETRYABLE_STATUSES:
        return None
    value = error.details.get("retry_after_seconds", DEFAULT_RETRY_AFTER_SECONDS)
    try:
        return max(1, round(float(value)))
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS


def error_response(error: errors.RelayError) -> JSONResponse:
    """The JSON response for an error, with Retry-After where it applies."""
    status = status_for(error)
    headers = {}
    retry_after = retry_after_seconds(error, status)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = {
        "error": {"code": error.code, "message": error.message, "details": json_safe(error.details)}
    }
    return JSONResponse(body, status_code=status, headers=headers)


JSON_SCALARS = (str, int, float, bool, type(None))


def json_safe(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` made JSON-encodable; anything that resists becomes its ``str``."""
    if all(isinstance(item, JSON_SCALARS) for item in value.values()):
        return value  # most details are; the encoder's walk was a third of a 429's cost
    try:
        return jsonable_encoder(value)
    except (TypeError, ValueError):
        return {key: str(item) for key, item in value.items()}


async def handle_relay_error(request: Request, error: Exception) -> JSONResponse:
    """A :class:`RelayError` raised by a handler or the broker."""
    assert isinstance(error, errors.RelayError)
    return error_response(error)


async def handle_validation_error(request: Request, error: Exception) -> JSONResponse:
    """A request that did not match its operation's schema: 422 with each problem."""
    assert isinstance(error, RequestValidationError)
    problems = [describe_problem(problem) for problem in error.errors()]
    summary = "; ".join(f"{item['location']}: {item['message']}" for item in problems[:5])
    return error_response(InvalidRequest(f"invalid request: {summary}", errors=problems))


def describe_problem(problem: dict[str, Any]) -> dict[str, Any]:
    """One validation problem as plain JSON: where, what, and its pydantic type."""
    location = ".".join(str(part) for part in problem.get("loc", ()))
    return {"location": location, "message": str(problem.get("msg", "")), "type": problem["type"]}


async def handle_http_exception(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method, oversize body) in our body."""
    assert isinstance(error, StarletteHTTPException)
    relay_error = translate_http_exception(request, error)
    response = error_response(relay_error)
    if error.status_code == 405 and error.headers:
        response.headers.update(error.headers)
    return response


def translate_http_exception(request: Request, error: StarletteHTTPException) -> errors.RelayError:
    """The :class:`RelayError` that stands for a Starlette HTTP exception."""
    path = request.url.path
    if error.status_code == 404:
        return errors.NotFound(f"no route {request.method} {path}", path=path)
    if error.status_code == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {path}", path=path)
    if error.status_code == 413:
        return RequestTooLarge(str(error.detail), **(getattr(error, "details", None) or {}))
    return errors.InvalidArgument(str(error.detail))


async def handle_unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """Last resort: log the bug, count it, answer 500 in our body without a traceback."""
    logger.error(
        "unhandled error in %s %s",
        request.method,
        request.url.path,
        exc_info=(type(error), error, error.__traceback__),
    )
    request.app.state.unexpected_errors += 1
    return error_response(InternalError("internal error; the server log has the details"))


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler above on the app."""
    app.state.unexpected_errors = 0
    app.add_exception_handler(errors.RelayError, handle_relay_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(Exception, handle_unexpected_error)
