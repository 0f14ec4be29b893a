"""API keys: format, hashing, verification, expiry, revocation, persistence."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from relaymq.auth.keys import GRANTS_CHANGED, REVOKED, ApiKeys, parse_token, secret_digest
from relaymq.auth.principal import Grant
from relaymq.auth.store import AuthStore
from relaymq.errors import Unauthenticated


class Clock:
    """Milliseconds the test moves by hand."""

    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def store(tmp_path: Path) -> AuthStore:
    """A fresh auth store."""
    return AuthStore(tmp_path / "auth.db")


async def test_keys_authenticate_until_revoked_and_survive_a_restart(store: AuthStore) -> None:
    clock = Clock()
    keys = ApiKeys(store, clock)
    key, token = await keys.create("acme", "ci", [Grant.build("acme", "read")], "key:admin")
    assert parse_token(token) == (key.key_id, token[len("rmq_") + 17 :])
    assert secret_digest(key.salt, token[len("rmq_") + 17 :]) == key.digest
    assert keys.authenticate(token).grants == key.grants
    reopened = ApiKeys(store, clock)
    assert reopened.authenticate(token).id == f"key:{key.key_id}"
    await reopened.revoke("acme", key.key_id)
    with pytest.raises(Unauthenticated):
        reopened.authenticate(token)
    assert ApiKeys(store, clock).by_id[key.key_id].revoked_at_ms == clock.now_ms


async def test_expired_wrong_and_malformed_keys_fail_alike(store: AuthStore) -> None:
    clock = Clock()
    keys = ApiKeys(store, clock)
    _, token = await keys.create("acme", "short", [], "test", expires_at_ms=clock.now_ms + 10)
    keys.authenticate(token)
    clock.now_ms += 10
    wrong_secret = token[:-1] + ("A" if token[-1] != "A" else "B")
    messages = set()
    for candidate in (token, wrong_secret, "rmq_0000000000000000_" + "A" * 43, "rmq_x", ""):
        with pytest.raises(Unauthenticated) as refused:
            keys.authenticate(candidate)
        messages.add(refused.value.message)
    assert len(messages) == 1


def test_the_store_file_is_private(store: AuthStore) -> None:
    assert store.path.stat().st_mode & 0o077 == 0


async def test_a_key_change_is_announced_once_and_outdates_its_principals(
    store: AuthStore,
) -> None:
    changes: list[tuple[str, str]] = []
    keys = ApiKeys(store, Clock(), lambda principal, reason: changes.append((principal, reason)))
    key, token = await keys.create("acme", "ci", [Grant.build("acme", "read")], "key:admin")
    before = keys.authenticate(token)
    assert keys.outdated(before) is None
    await keys.set_grants("acme", key.key_id, [Grant.build("acme", "read")])  # the same
    assert changes == []
    await keys.set_grants("acme", key.key_id, [Grant.build("acme", "publish")])
    assert keys.outdated(before) == GRANTS_CHANGED
    after = keys.authenticate(token)
    assert keys.outdated(after) is None
    await keys.revoke("acme", key.key_id)
    await keys.revoke("acme", key.key_id)
    assert keys.outdated(after) == REVOKED
    principal_id = f"key:{key.key_id}"
    assert changes == [(principal_id, GRANTS_CHANGED), (principal_id, REVOKED)]


async def test_a_revoke_racing_a_grant_change_stays_revoked(
    store: AuthStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ApiKeys(store, Clock())
    key, token = await keys.create("acme", "ci", [Grant.build("acme", "read")], "key:admin")
    save = store.save_key

    def slow_save(saved: object) -> None:
        time.sleep(0.05)  # both changes read the key before either saved it, unlocked
        save(saved)

    monkeypatch.setattr(store, "save_key", slow_save)
    await asyncio.gather(
        keys.revoke("acme", key.key_id),
        keys.set_grants("acme", key.key_id, [Grant.build("acme", "publish")]),
    )
    with pytest.raises(Unauthenticated):
        keys.authenticate(token)
    assert ApiKeys(store, Clock()).by_id[key.key_id].revoked_at_ms is not None
