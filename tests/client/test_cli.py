"""The ``relaymq`` client commands, run for real against the real server.

Most run in-process through click's runner on the real command group; one
runs the installed ``relaymq`` executable to pipe ``pub`` into ``sub``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from relaymq.cli.main import relaymq
from tests.client.conftest import TOKEN

RELAYMQ = Path(sys.executable).with_name("relaymq")


@pytest.fixture
def target(server_url: str, namespace: str) -> list[str]:
    """The connection options of the test's namespace."""
    options = ["--url", server_url, "--namespace", namespace]
    return options + (["--token", TOKEN] if TOKEN else [])


def invoke(*arguments: str, input: str | None = None) -> str:
    """Run a command; assert it succeeded; its stdout."""
    result = CliRunner().invoke(relaymq, list(arguments), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_queue_lifecycle_with_json(target: list[str]) -> None:
    created = json.loads(
        invoke("queues", "create", "jobs", "--max-deliveries", "3", "--json", *target)
    )
    assert created["name"] == "jobs" and created["max_deliveries"] == 3
    names = [row["name"] for row in json.loads(invoke("queues", "ls", "--json", *target))]
    assert names == ["jobs", "jobs-dlq"]
    assert "jobs" in invoke("queues", "ls", *target)  # the table
    published = json.loads(invoke("pub", "jobs", "job {n}", "--count", "5", "--json", *target))
    assert published["published"] == 5 and published["duplicates"] == 0
    info = json.loads(invoke("queues", "info", "jobs", "--json", *target))
    assert info["depth"] == 5
    lines = invoke("sub", "jobs", "--max", "3", "--timeout", "5", *target).splitlines()
    assert lines == ["job 0", "job 1", "job 2"]
    rows = invoke("sub", "jobs", "--json", "--ack", "none", "--timeout", "1", *target)
    assert [json.loads(line)["payload"] for line in rows.splitlines()] == ["job 3", "job 4"]
    invoke("queues", "purge", "jobs", *target)
    assert json.loads(invoke("queues", "info", "jobs", "--json", *target))["depth"] == 0
    assert json.loads(invoke("queues", "rm", "jobs", "--json", *target)) == {
        "ok": True,
        "deleted": "jobs",
    }


def test_streams_subscriptions_topics(target: list[str]) -> None:
    invoke("streams", "create", "clicks", "--subject", "clicks.>", "--partitions", "2", *target)
    invoke("subs", "create", "audit", "--stream", "clicks", "--mode", "ordered", *target)
    invoke("pub", "clicks.home", "--key", "u1", "--header", "trace=abc", *target, input="a\nb\n")
    stream = json.loads(invoke("streams", "info", "clicks", "--json", *target))
    assert stream["messages"] == 2 and len(stream["partitions"]) == 2
    (audit,) = json.loads(invoke("subs", "ls", "--json", *target))
    assert audit["name"] == "audit" and audit["mode"] == "ordered"
    message = json.loads(invoke("sub", "audit", "--json", "--max", "1", "--timeout", "5", *target))
    assert message["headers"] == {"trace": "abc"} and message["key"] == "u1"
    invoke("topics", "create", "events", *target)
    assert [row["name"] for row in json.loads(invoke("topics", "ls", "--json", *target))] == [
        "events"
    ]
    invoke("subs", "rm", "audit", *target)
    invoke("streams", "rm", "clicks", *target)
    streams = json.loads(invoke("streams", "ls", "--json", *target))
    assert [row["name"] for row in streams] == ["events"]


def test_dead_letters_list_and_redrive(target: list[str]) -> None:
    invoke("queues", "create", "work", *target)
    invoke("pub", "work", "poison", *target)
    manual = CliRunner().invoke(
        relaymq, ["sub", "work", "--ack", "manual", "--max", "1", *target], input="t\n"
    )
    assert manual.exit_code == 0 and "poison" in manual.stdout
    (dead,) = json.loads(invoke("dlq", "ls", "work", "--json", *target))
    assert dead["payload"] == "poison"
    assert dead["headers"]["relaymq-dead-letter-reason"]
    assert json.loads(invoke("dlq", "redrive", "work", "--json", *target))["redriven"] == 1
    assert invoke("sub", "work", "--max", "1", "--timeout", "5", *target).strip() == "poison"


def test_errors_exit_1_with_the_code(target: list[str]) -> None:
    result = CliRunner().invoke(relaymq, ["streams", "info", "nope", "--json", *target])
    assert result.exit_code == 1
    assert json.loads(result.stderr)["error"]["code"] == "stream_not_found"


def test_profiles_hold_url_token_and_namespace(
    tmp_path: Path, server_url: str, namespace: str
) -> None:
    profiles = str(tmp_path / "profiles.toml")
    arguments = ["--url", server_url, "-n", namespace, "--profiles-file", profiles]
    invoke("profiles", "set", "test", *arguments, *(["--token", TOKEN] if TOKEN else []))
    listed = json.loads(invoke("profiles", "ls", "--json", "--profiles-file", profiles))
    assert listed[0]["profile"] == "test" and listed[0]["url"] == server_url
    assert TOKEN is None or listed[0]["token"] == "***"
    result = CliRunner(env={"RELAYMQ_PROFILES": profiles, "RELAYMQ_PROFILE": "test"}).invoke(
        relaymq, ["queues", "create", "viaprofile", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["namespace"] == namespace


def test_pub_piped_into_sub_with_the_real_executable(target: list[str]) -> None:
    invoke("queues", "create", "pipe", *target)
    lines = "".join(f"line {number}\n" for number in range(100))
    subprocess.run(
        [str(RELAYMQ), "pub", "pipe", *target], input=lines, text=True, check=True, timeout=60
    )
    received = subprocess.run(
        [str(RELAYMQ), "sub", "pipe", "--max", "100", "--timeout", "5", *target],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert received == lines
