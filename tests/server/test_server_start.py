"""The server's start-up: the hook ``relaymq serve`` tunes the garbage collector in
runs once the broker is open and the app is built, before the server listens."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from relaymq.config import Settings
from relaymq.server import Server, run_event_loop
from tests.server.conftest import ADMIN_TOKEN, TEST_LIMITS, listening_socket


def test_the_built_hook_runs_once_with_the_app_before_the_server_listens(
    tmp_path: Path,
) -> None:
    seen: list[tuple[bool, bool]] = []

    def on_built() -> None:
        seen.append((server.app is not None, server.started.is_set()))

    server = Server(
        Settings(data_dir=tmp_path, **{**TEST_LIMITS, "admin_key": ADMIN_TOKEN}),
        on_built=on_built,
    )
    sock = listening_socket()
    port = sock.getsockname()[1]
    thread = threading.Thread(
        target=run_event_loop, args=(server.serve(sockets=[sock]),), daemon=True
    )
    thread.start()
    try:
        assert server.started.wait(20)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    finally:
        server.request_shutdown()
        thread.join(20)
    assert not thread.is_alive()
    assert seen == [(True, False)]
