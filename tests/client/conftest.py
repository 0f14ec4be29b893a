"""Fixtures for SDK and CLI tests: the real server on a real socket.

The in-process server and its per-test namespaces come from
``tests/server/conftest.py`` (imported, so both suites share one way of
starting it). :class:`ServeProcess` runs ``relaymq serve`` as a subprocess on
a fixed port and data directory, for the tests that SIGKILL and restart it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

import relaymq
import tests.server.conftest as server_conftest
from tests.server.conftest import Api, RunningServer, api, http, running_server

__all__ = ["TOKEN", "Api", "RunningServer", "api", "http", "running_server"]

TOKEN: str | None = getattr(server_conftest, "ADMIN_TOKEN", None)
"""The admin API key the test servers install (``None`` on a server without auth)."""

RELAYMQ = Path(sys.executable).with_name("relaymq")
START_TIMEOUT_SECONDS = 20


@pytest.fixture
def namespace(api: Api) -> str:
    """A fresh namespace for this test."""
    return api.namespace


@pytest.fixture
def server_url(running_server: RunningServer) -> str:
    """The base URL of the shared test server."""
    return running_server.base_url


@pytest.fixture
async def client(server_url: str, namespace: str) -> AsyncIterator[relaymq.AsyncClient]:
    """An ``AsyncClient`` of the test's namespace, closed afterwards."""
    async with relaymq.AsyncClient(server_url, namespace=namespace, token=TOKEN) as connected:
        yield connected


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """``relaymq serve`` as a subprocess on a fixed port and data directory."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it is ready."""
        command = [
            str(RELAYMQ),
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "warning",
        ]
        environment = dict(os.environ)
        if TOKEN is not None:
            environment["RELAYMQ_ADMIN_KEY"] = TOKEN
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=environment)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "relaymq serve exited"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("relaymq serve did not become ready")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown at all) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM the server and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[ServeProcess]:
    """A ``relaymq serve`` subprocess (started by the test), stopped afterwards."""
    served = ServeProcess(tmp_path / "data")
    yield served
    served.stop()
