"""The examples run to completion against a real server (subprocess, timeout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import TOKEN

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("example", ["job_queue.py", "fan_out.py", "replay.py", "request_reply.py"])
def test_example_runs_to_completion(server_url: str, namespace: str, example: str) -> None:
    command = [
        sys.executable,
        str(EXAMPLES / example),
        "--url",
        server_url,
        "--namespace",
        namespace,
    ]
    if TOKEN is not None:
        command += ["--token", TOKEN]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
