"""The SDK's HTTP transport: one ``httpx.AsyncClient`` for the admin REST calls.

Owns the base URL, the bearer token, timeouts, retries of requests the server
never received (connection refused while it restarts, 503), and the
translation of every httpx failure and error response into the error tree.
Returns plain JSON values; :mod:`relaymq.client.admin` gives them types.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx

from relaymq import errors
from relaymq.client.errors import error_from_response, translate
from relaymq.client.retry import RetryPolicy

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})
USER_AGENT = "relaymq-python"


def base_url_of(url: str) -> str:
    """The HTTP base URL of a server URL (``ws://`` and ``wss://`` accepted too)."""
    url = url.strip().rstrip("/")
    if url.startswith("ws://"):
        url = "http://" + url.removeprefix("ws://")
    elif url.startswith("wss://"):
        url = "https://" + url.removeprefix("wss://")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def segment(name: str) -> str:
    """A resource name made safe as one URL path segment."""
    return quote(name, safe="")


class HttpTransport:
    """JSON requests to one server, retried while the server cannot receive them."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        timeout_seconds: float,
        retry: RetryPolicy,
    ) -> None:
        self.base_url = base_url_of(url)
        self.retry = retry
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.headers = headers
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_seconds
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> Any:
        """Send a request; the decoded JSON body (``None`` when empty) or the tree's error."""
        backoff = self.retry.start()
        while True:
            try:
                return await self._attempt(method, path, json, params, timeout_seconds)
            except errors.RelayError as error:
                if not self._retryable(method, error):
                    raise
                delay = backoff.next_delay_seconds()
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def _attempt(
        self,
        method: str,
        path: str,
        json: Any,
        params: dict[str, Any] | None,
        timeout_seconds: float | None,
    ) -> Any:
        """One try: the body, or the tree's error (marked unsent when it never left)."""
        options: dict[str, Any] = {}
        if timeout_seconds is not None:
            options["timeout"] = timeout_seconds
        if params:
            params = {key: value for key, value in params.items() if value is not None}
        try:
            response = await self._client.request(method, path, json=json, params=params, **options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exception:
            error = translate(exception)
            error.details["unsent"] = True
            raise error from exception
        except httpx.HTTPError as exception:
            raise translate(exception) from exception
        if response.status_code >= 400:
            error = error_from_response(response)
            error.details.setdefault("status", response.status_code)
            raise error
        return response.json() if response.content else None

    @staticmethod
    def _retryable(method: str, error: errors.RelayError) -> bool:
        """Whether retrying cannot apply the request twice."""
        if error.details.get("unsent"):
            return True
        if isinstance(error, errors.RateLimited):
            return False
        if error.details.get("status") in RETRYABLE_STATUSES:
            return True
        return method in IDEMPOTENT_METHODS and isinstance(error, errors.Unavailable)
