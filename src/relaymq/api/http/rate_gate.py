"""The publish rate gate: a publish the namespace's rate quota refuses is answered
``429`` in front of routing, without running FastAPI.

:class:`RateGate` is ASGI middleware. For a ``POST`` to one of the publish
routes it reads the namespace from the path and asks the namespace's message
bucket whether one more message fits. Only when it does not (the request would
be refused anyway) does the gate do what :func:`~relaymq.api.http.auth.authorize`
does before its quota check: authenticate the bearer credential and ask the
policy (:func:`~relaymq.api.http.auth.check_access`). When both pass, it answers
the very ``429 rate_limited`` the route would (:func:`~relaymq.api.http.errors.error_response`,
with ``Retry-After``). Everything else passes through untouched: a namespace with
room, a credential that fails, a caller the policy does not allow there, so
those get the full stack's usual answer (401, 404 for a hidden namespace, 403)
and a flood can never learn more from the gate than from the route.

Why: under a flood at ten times the quota nearly every request is refused, and
each refusal used to pay routing, dependency resolution and exception handling
(the profile in ``docs/security.md``); the gate keeps that work off the event
loop the neighbours share.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from relaymq.api.http.auth import NS, bearer_token, check_access
from relaymq.api.http.errors import error_response
from relaymq.auth.security import Security
from relaymq.errors import RateLimited, RelayError

PUBLISH_TEMPLATES: dict[str, tuple[str, str | None]] = {
    "publish": (NS + "/publish", None),
    "streams": (NS + "/streams/{stream}/messages", "stream"),
    "queues": (NS + "/queues/{queue}/messages", "queue"),
    "topics": (NS + "/topics/{topic}/messages", "topic"),
}
"""Last path segment (``publish``) or collection (``streams``) -> (route template,
name of its resource parameter)."""


@dataclass(frozen=True, slots=True)
class MatchedRoute:
    """What routing would have left on the scope, as far as request metrics read it."""

    path: str


def publish_target(path: str) -> tuple[str, dict[str, str]] | None:
    """``(route template, path parameters)`` of a publish route's path, else ``None``."""
    parts = path.split("/")
    if len(parts) < 5 or parts[1] != "v1" or parts[2] != "namespaces" or not parts[3]:
        return None
    if len(parts) == 5 and parts[4] == "publish":
        return PUBLISH_TEMPLATES["publish"][0], {"namespace": parts[3]}
    if len(parts) == 7 and parts[6] == "messages" and parts[5]:
        known = PUBLISH_TEMPLATES.get(parts[4])
        if known is not None and known[1] is not None:
            return known[0], {"namespace": parts[3], known[1]: parts[5]}
    return None


class RateGate:
    """ASGI middleware refusing publishes over the namespace's rate before routing."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a refused publish at once; pass everything else on."""
        if scope["type"] == "http" and scope["method"] == "POST":
            refusal = await self.refusal(scope)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def refusal(self, scope: Scope) -> RateLimited | None:
        """The error the route would answer with for a publish over the rate, else
        ``None`` (the request then goes through the full stack)."""
        target = publish_target(scope["path"])
        if target is None:
            return None
        template, path_parameters = target
        namespace = path_parameters["namespace"]
        quotas = self.security.quotas
        if not quotas.publish_refused(namespace):
            return None  # the common case costs a path split and a bucket refill
        try:
            principal = await self.security.authenticate(bearer_token(header_of(scope)))
            check_access(principal, ("POST", template), path_parameters)
            quotas.check_publish_room(namespace)
        except RateLimited as error:
            scope["route"] = MatchedRoute(template)  # request metrics label by template
            return error
        except RelayError:
            return None  # the route gives the proper answer (401, 403, 404)
        return None  # the bucket refilled in the meantime


def header_of(scope: Scope) -> str | None:
    """The ``Authorization`` header of a request, if any."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None
