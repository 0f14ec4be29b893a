"""``relaymq serve`` as users run it: a subprocess, the README tour, SIGTERM, restart.

The first start of a data directory prints an admin API key to stdout; the
tests read it from there (:func:`printed_token`), as a user would.

Also the settings precedence (flags > environment > TOML file > defaults) and
that the README's configuration reference lists every setting.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from relaymq.config import Settings, load_settings
from relaymq.errors import InvalidConfig
from tests.server.conftest import expect

RELAYMQ = Path(sys.executable).with_name("relaymq")
README = Path(__file__).resolve().parents[2] / "README.md"
START_TIMEOUT_SECONDS = 20
STOP_TIMEOUT_SECONDS = 20
TOKEN_PATTERN = re.compile(r"RELAYMQ_TOKEN=(rmq_\S+)")
PRINTED: dict[int, list[str]] = {}
"""What each running ``relaymq serve`` printed to stdout, by process id."""


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def relaymq_serve(
    data_dir: Path, *flags: str, **environment_overrides: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``relaymq serve`` until the block ends (killed if still running then)."""
    environment = {**os.environ, **environment_overrides}
    port = free_port()
    command = [str(RELAYMQ), "serve", "--port", str(port), "--data-dir", str(data_dir), *flags]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    collect_stdout(process)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, base_url)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def collect_stdout(process: subprocess.Popen[str]) -> None:
    """Read the server's stdout in the background into :data:`PRINTED`."""
    lines = PRINTED.setdefault(process.pid, [])

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()


def printed_token(process: subprocess.Popen[str]) -> str:
    """The admin API key a first start printed."""
    for line in PRINTED[process.pid]:
        match = TOKEN_PATTERN.search(line)
        if match:
            return match.group(1)
    raise AssertionError(f"no admin key printed: {PRINTED[process.pid]}")


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


def wait_until_ready(process: subprocess.Popen[str], base_url: str) -> None:
    """Poll ``/readyz`` until it answers 200."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("relaymq serve did not become ready")


def terminate(process: subprocess.Popen[str]) -> str:
    """SIGTERM the server, assert it exits cleanly, return its log."""
    process.send_signal(signal.SIGTERM)
    _, log = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
    assert process.returncode == 0, log
    return log


def readme_shell_blocks() -> str:
    """The shell code blocks of the README, in order."""
    return "\n".join(re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL))


def test_readme_tour_runs_against_relaymq_serve(tmp_path: Path) -> None:
    with relaymq_serve(tmp_path / "data") as (process, base_url):
        script = readme_shell_blocks().replace("http://127.0.0.1:8765", base_url)
        environment = {**os.environ, "RELAYMQ_TOKEN": printed_token(process)}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        terminate(process)
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(outputs) >= 15
    assert not [output for output in outputs if "error" in output]
    fetched = [output for output in outputs if isinstance(output.get("messages"), list)]
    queue, billing, audit, replay, _ = fetched
    assert [message["payload"] for message in queue["messages"]] == ["order #1"]
    assert [message["subject"] for message in billing["messages"]] == [
        "events.signup",
        "events.login",
    ]
    assert [message["subject"] for message in audit["messages"]] == ["events.signup"]
    assert [message["payload"] for message in replay["messages"]] == ["1", "2"]


def tour(base_url: str, token: str) -> None:
    """The README tour in Python, leaving one message unacked in the queue."""
    root = f"{base_url}/v1/namespaces/default"
    with httpx.Client(base_url=root, timeout=10, headers=bearer(token)) as client:
        expect(client.post("/queues", json={"name": "orders"}), 201)
        body = {"messages": [{"payload": "order #1"}, {"payload": "order #2"}]}
        expect(client.post("/queues/orders/messages", json=body), 200)
        [first] = expect(client.post("/queues/orders/fetch", json={"max_messages": 1}), 200)[
            "messages"
        ]
        expect(client.post("/queues/orders/ack", json={"receipts": [first["receipt"]]}), 200)

        expect(client.post("/topics", json={"name": "events"}), 201)
        for name in ("billing", "audit"):
            expect(client.post("/topics/events/subscriptions", json={"name": name}), 201)
        expect(client.post("/publish", json={"subject": "events.signup", "payload": "ada"}), 200)

        expect(client.post("/streams", json={"name": "clicks", "subjects": ["clicks.>"]}), 201)
        clicks = [{"subject": f"clicks.{page}", "payload": page} for page in ("home", "cart")]
        expect(client.post("/publish", json={"messages": clicks}), 200)


def check_after_restart(base_url: str, token: str) -> None:
    """What the tour left is all still there after a restart, acked work excluded."""
    root = f"{base_url}/v1/namespaces/default"
    with httpx.Client(base_url=root, timeout=10, headers=bearer(token)) as client:
        fetched = expect(client.post("/queues/orders/fetch", json={"max_messages": 10}), 200)
        assert [message["payload"] for message in fetched["messages"]] == ["order #2"]
        for name in ("billing", "audit"):
            response = client.post(f"/subscriptions/{name}/fetch", json={"max_messages": 10})
            assert [message["payload"] for message in expect(response, 200)["messages"]] == ["ada"]
        replay = expect(client.get("/streams/clicks/messages", params={"from_offset": 0}), 200)
        assert [message["payload"] for message in replay["messages"]] == ["home", "cart"]


def test_sigterm_exits_cleanly_and_messages_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with relaymq_serve(data_dir, "--log-format", "json") as (process, base_url):
        token = printed_token(process)
        tour(base_url, token)
        log = terminate(process)
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(record["message"] == "broker closed" for record in records)

    with relaymq_serve(data_dir) as (process, base_url):
        check_after_restart(base_url, token)
        terminate(process)
    assert not any(TOKEN_PATTERN.search(line) for line in PRINTED[process.pid])


def test_sigint_also_exits_cleanly(tmp_path: Path) -> None:
    with relaymq_serve(tmp_path / "data") as (process, _):
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
    assert process.returncode == 0, log
    assert "Traceback" not in log


def test_bad_settings_are_a_usage_error(tmp_path: Path) -> None:
    command = [str(RELAYMQ), "serve", "--port", "70000", "--data-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "port" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_serve() -> None:
    result = subprocess.run(
        [str(RELAYMQ), "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "serve" in result.stdout


def test_flags_override_env_override_file_override_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "relaymq.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nmax_wait_ms = 5\nlog_format = "json"\n')
    monkeypatch.setenv("RELAYMQ_CONFIG", str(config))
    monkeypatch.setenv("RELAYMQ_PORT", "9002")
    monkeypatch.setenv("RELAYMQ_MAX_WAIT_MS", "7")
    settings = load_settings(port=9003, host=None)
    assert settings.port == 9003
    assert settings.max_wait_ms == 7
    assert settings.host == "0.0.0.0"
    assert settings.log_format == "json"
    assert settings.max_payload_bytes == 1024 * 1024
    assert settings.broker_settings().max_wait_ms == 7


def test_config_file_problems_are_invalid_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidConfig, match="cannot read"):
        load_settings(config=tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = [")
    with pytest.raises(InvalidConfig, match="not valid TOML"):
        load_settings(config=broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(InvalidConfig, match="prot"):
        load_settings(config=unknown)
    monkeypatch.setenv("RELAYMQ_FSYNC", "sometimes")
    with pytest.raises(InvalidConfig, match="fsync"):
        load_settings()


def test_readme_documents_every_setting() -> None:
    readme = README.read_text()
    for name in Settings.model_fields:
        assert f"`RELAYMQ_{name.upper()}`" in readme, name
