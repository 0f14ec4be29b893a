"""Fixtures for black-box server tests: a real RelayMQ server on a real socket.

:func:`start_server` runs :class:`relaymq.server.Server` (the same class
``relaymq serve`` runs) in a background thread with its own uvloop event loop,
on an ephemeral port, with a temporary data directory. Tests talk to it with
real ``httpx`` clients. Each test gets its own namespace, so tests share one
server without seeing each other's resources.

Servers run with authentication required, as in production: they install
:data:`ADMIN_TOKEN` as their admin key, and the clients here send it
(:data:`AUTH_HEADERS`), so every existing test also exercises authentication.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from relaymq.config import Settings
from relaymq.server import Server, run_event_loop

KIBIBYTE = 1024
ADMIN_TOKEN = "rmq_0123456789abcdef_" + "A" * 43
"""The server-wide admin API key every test server installs (``admin_key``)."""
AUTH_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
START_TIMEOUT_SECONDS = 15
STOP_TIMEOUT_SECONDS = 15

TEST_LIMITS: dict[str, Any] = {
    "max_request_bytes": 256 * KIBIBYTE,
    "max_payload_bytes": 64 * KIBIBYTE,
    "max_batch_messages": 100,
    "max_headers_bytes": 1 * KIBIBYTE,
    "max_fetch_messages": 500,
    "max_wait_ms": 10_000,
}
"""Small limits, so every limit can be crossed cheaply."""

_namespace_numbers = itertools.count(1)


@dataclass
class RunningServer:
    """A server running in a background thread."""

    server: Server
    thread: threading.Thread
    base_url: str
    data_dir: Path

    def stop(self) -> None:
        """Shut down gracefully and wait for the thread."""
        self.server.request_shutdown()
        self.thread.join(STOP_TIMEOUT_SECONDS)
        assert not self.thread.is_alive(), "server did not stop"

    @property
    def unexpected_errors(self) -> int:
        """How often the last-resort 500 handler ran (must stay 0)."""
        assert self.server.app is not None
        return self.server.app.state.unexpected_errors


def listening_socket() -> socket.socket:
    """A TCP socket bound to an ephemeral port on the loopback interface."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def start_server(data_dir: Path, **overrides: Any) -> RunningServer:
    """Start a server on an ephemeral port and wait until it accepts requests
    (``tls_cert`` given: HTTPS, and ``base_url`` says so)."""
    settings = Settings(data_dir=data_dir, **{**TEST_LIMITS, "admin_key": ADMIN_TOKEN, **overrides})
    server = Server(settings)
    sock = listening_socket()
    port = sock.getsockname()[1]
    thread = threading.Thread(
        target=run_event_loop, args=(server.serve(sockets=[sock]),), daemon=True
    )
    thread.start()
    if not server.started.wait(START_TIMEOUT_SECONDS):
        server.request_shutdown()
        raise RuntimeError("server did not start")
    scheme = "https" if settings.tls_cert is not None else "http"
    return RunningServer(server, thread, f"{scheme}://127.0.0.1:{port}", data_dir)


@pytest.fixture(scope="session")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the whole session; it must never answer with its 500 handler."""
    running = start_server(tmp_path_factory.mktemp("relaymq-data"))
    yield running
    unexpected = running.unexpected_errors
    running.stop()
    assert unexpected == 0, "the last-resort error handler ran"


@pytest.fixture
def http(running_server: RunningServer) -> Iterator[httpx.Client]:
    """A client of the server's root (``/healthz``, ``/v1/...``)."""
    with httpx.Client(base_url=running_server.base_url, timeout=30, headers=AUTH_HEADERS) as client:
        yield client


class Api:
    """A client bound to one namespace: paths are relative to ``/v1/namespaces/{ns}``."""

    def __init__(self, client: httpx.Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.prefix = f"/v1/namespaces/{namespace}"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request to a path under the namespace."""
        return self.client.request(method, self.prefix + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET under the namespace."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST under the namespace."""
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        """PATCH under the namespace."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        """DELETE under the namespace."""
        return self.request("DELETE", path, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """Send a request, assert its status, return its JSON body (or None)."""
        response = self.request(method, path, **kwargs)
        return expect(response, status)


def expect(response: httpx.Response, status: int) -> Any:
    """Assert the status (showing the body when it differs); return the JSON body."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, "
        f"got {response.status_code}: {response.text}"
    )
    return response.json() if response.content else None


def expect_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an error response in our body format; return its ``error`` object."""
    body = expect(response, status)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert "Traceback" not in response.text
    return error


@pytest.fixture
def api(http: httpx.Client) -> Api:
    """A fresh namespace of its own for this test."""
    namespace = f"test-{next(_namespace_numbers)}"
    expect(http.post("/v1/namespaces", json={"name": namespace}), 201)
    return Api(http, namespace)
