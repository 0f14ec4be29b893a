"""Translation of foreign failures into the one error tree, at the SDK's edge.

Owns two mappings and nothing else:

* an error body from the server (``{"code", "message", "details"}`` in an HTTP
  response or a WebSocket ``error`` frame) to the :class:`~relaymq.errors.RelayError`
  subclass with that ``code``, found by walking the subclasses of the root;
  an unknown code falls back to the parent class of its HTTP status and keeps
  its code on the instance;
* httpx, websockets and ``OSError`` exceptions to
  :class:`~relaymq.errors.ConnectionLost`, :class:`~relaymq.errors.RequestTimeout`
  or :class:`~relaymq.errors.Unavailable`.

No other module of the SDK lets a foreign exception through.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI, WebSocketException

from relaymq import errors

FALLBACK_BY_STATUS: dict[int, type[errors.RelayError]] = {
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    405: errors.InvalidArgument,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.InvalidArgument,
    429: errors.RateLimited,
    503: errors.Unavailable,
    507: errors.StorageFull,
}
"""The class of an unknown code, by HTTP status (the parents the server maps)."""


def error_classes() -> dict[str, type[errors.RelayError]]:
    """Every class of the tree by its ``code`` (walked on each call, so classes
    defined after import, in the server or by plug-ins, are found too)."""
    found: dict[str, type[errors.RelayError]] = {}
    pending: list[type[errors.RelayError]] = [errors.RelayError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_body(body: Any, status: int | None = None) -> errors.RelayError:
    """The error an error body describes: the class of its ``code``, else the
    parent for ``status``; the instance always carries the server's code."""
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or "error")
    message = str(body.get("message") or code)
    details = body.get("details")
    details = details if isinstance(details, dict) else {}
    cls = error_classes().get(code) or fallback_class(status)
    error = cls(message, **{str(key): value for key, value in details.items()})
    if error.code != code:
        error.code = code  # an unknown (newer) code: keep it, typed as its parent
    return error


def fallback_class(status: int | None) -> type[errors.RelayError]:
    """The parent class for a code this SDK does not know."""
    if status is None:
        return errors.RelayError
    if status in FALLBACK_BY_STATUS:
        return FALLBACK_BY_STATUS[status]
    if status >= 500:
        return errors.Unavailable if status != 500 else errors.RelayError
    return errors.InvalidArgument if status >= 400 else errors.RelayError


def error_from_response(response: httpx.Response) -> errors.RelayError:
    """The error of a non-2xx HTTP response (our error body, or anything else)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return error_from_body(body["error"], response.status_code)
    text = response.text[:200] or response.reason_phrase
    cls = fallback_class(response.status_code)
    return cls(f"HTTP {response.status_code}: {text}", status=response.status_code)


def translate(exception: BaseException) -> errors.RelayError:
    """The tree's error for a foreign transport exception."""
    if isinstance(exception, errors.RelayError):
        return exception
    description = f"{type(exception).__name__}: {exception}".rstrip(": ")
    if isinstance(exception, httpx.TimeoutException | TimeoutError):
        return errors.RequestTimeout(f"the server did not answer in time ({description})")
    if isinstance(exception, InvalidURI | httpx.InvalidURL | httpx.UnsupportedProtocol):
        return errors.InvalidArgument(f"bad server URL ({description})")
    if isinstance(exception, InvalidStatus):
        return handshake_error(exception)
    if isinstance(exception, httpx.TransportError | OSError | WebSocketException):
        return errors.ConnectionLost(f"cannot reach the server ({description})")
    return errors.Unavailable(description)


def handshake_error(exception: InvalidStatus) -> errors.RelayError:
    """The error of a refused WebSocket handshake (an HTTP error response)."""
    response = exception.response
    body: Any = None
    with contextlib.suppress(ValueError):  # not JSON (or no body): the status decides
        body = json.loads(response.body or b"null")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return error_from_body(body["error"], response.status_code)
    return fallback_class(response.status_code)(
        f"WebSocket handshake refused with HTTP {response.status_code}"
    )


TRANSPORT_ERRORS = (httpx.HTTPError, OSError, WebSocketException, InvalidHandshake, TimeoutError)
"""The foreign exceptions :func:`translating` turns into the tree."""


@contextlib.contextmanager
def translating() -> Iterator[None]:
    """Re-raise any transport exception of the block as the tree's error."""
    try:
        yield
    except TRANSPORT_ERRORS as exception:
        raise translate(exception) from exception
