"""Token buckets and quota checks with a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymq.auth.quotas import Quota, Quotas, TokenBucket
from relaymq.auth.store import AuthStore
from relaymq.errors import InvalidArgument, QuotaExceeded, RateLimited


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_seconds = 100.0

    def __call__(self) -> float:
        return self.now_seconds


def test_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock)
    assert bucket.shortfall_seconds(10) == 0
    bucket.take(10)
    assert bucket.shortfall_seconds(1) == pytest.approx(0.1)
    clock.now_seconds += 0.5
    assert bucket.shortfall_seconds(5) == 0
    bucket.take(5)
    assert bucket.shortfall_seconds(1) == pytest.approx(0.1)


def test_a_batch_larger_than_the_bucket_passes_when_full_then_owes() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock)
    assert bucket.shortfall_seconds(25) == 0
    bucket.take(25)
    assert bucket.shortfall_seconds(1) == pytest.approx(1.6)


@pytest.fixture
def quotas(tmp_path: Path) -> Quotas:
    """Quotas with a default rate of 10 messages/s and 100 bytes/s."""
    defaults = Quota(publish_messages_per_second=10, publish_bytes_per_second=100)
    return Quotas(defaults, AuthStore(tmp_path / "auth.db"), Clock())


def test_rates_are_per_namespace(quotas: Quotas) -> None:
    for _ in range(10):
        quotas.charge_publish("a", 1, 1)
    with pytest.raises(RateLimited) as limited:
        quotas.charge_publish("a", 1, 1)
    assert limited.value.details["retry_after_seconds"] == pytest.approx(0.1)
    quotas.charge_publish("b", 10, 1)  # another tenant's buckets are untouched
    quotas.charge_publish("c", 1, 100)
    with pytest.raises(RateLimited, match="bytes"):
        quotas.charge_publish("c", 1, 1)


async def test_overrides_persist_and_validate(quotas: Quotas, tmp_path: Path) -> None:
    quota = await quotas.update("a", {"max_streams": 3, "max_connections": 1})
    assert quota.max_streams == 3 and quota.publish_messages_per_second == 10
    reopened = Quotas(Quota(), AuthStore(tmp_path / "auth.db"), Clock())
    assert reopened.quota("a").max_streams == 3
    with pytest.raises(InvalidArgument):
        await quotas.update("a", {"max_streams": -1})
    with pytest.raises(InvalidArgument):
        await quotas.update("a", {"unknown": 1})


async def test_count_quotas(quotas: Quotas) -> None:
    await quotas.update("a", {"max_streams": 2, "max_stored_bytes": 10, "max_connections": 1})
    quotas.check_streams("a", 1, 1)
    with pytest.raises(QuotaExceeded):
        quotas.check_streams("a", 1, 2)
    with pytest.raises(QuotaExceeded):
        quotas.check_storage("a", 10)
    quotas.check_connection("a")
    quotas.open_connection("a")
    with pytest.raises(QuotaExceeded) as full:
        quotas.check_connection("a")
    assert full.value.details["retry_after_seconds"] > 0
    quotas.close_connection("a")
    quotas.check_connection("a")
