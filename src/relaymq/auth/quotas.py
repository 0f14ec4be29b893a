"""Namespace quotas: publish rate (token buckets), streams, stored bytes, connections.

Each namespace has a :class:`Quota` (server defaults from the settings,
overridden per namespace through the admin API and persisted in the auth
store) and its own :class:`TokenBucket` per rate, so one tenant's flood
drains only its own buckets. Checks are O(1) and never wait: over a quota the
caller gets :class:`RateLimited` (rates) or :class:`QuotaExceeded` (counts)
at once, with ``retry_after_seconds``, which HTTP sends as ``Retry-After``.
``0`` means no quota.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaymq.errors import InvalidArgument, QuotaExceeded, RateLimited

if TYPE_CHECKING:
    from relaymq.auth.store import AuthStore

BURST_SECONDS = 1.0
STORAGE_RETRY_SECONDS = 5.0
COUNT_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Quota:
    """A namespace's limits (0: unlimited). Rates per second, sizes in bytes."""

    max_streams: int = 0
    max_stored_bytes: int = 0
    publish_messages_per_second: float = 0.0
    publish_bytes_per_second: float = 0.0
    max_connections: int = 0

    def merged(self, changes: dict[str, Any]) -> Quota:
        """This quota with ``changes`` (field -> value) applied and checked."""
        unknown = set(changes) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise InvalidArgument(
                f"unknown quota fields: {sorted(unknown)}", fields=sorted(unknown)
            )
        quota = dataclasses.replace(self, **changes)
        for name, value in dataclasses.asdict(quota).items():
            if not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
                raise InvalidArgument(f"quota {name} must be a number >= 0", field=name)
        return quota

    def to_dict(self) -> dict[str, Any]:
        """The quota as JSON."""
        return dataclasses.asdict(self)


class TokenBucket:
    """``rate_per_second`` tokens a second, holding at most ``BURST_SECONDS`` worth.

    A take larger than the bucket passes when the bucket is full and leaves it
    in debt, so a batch bigger than one second's allowance is possible but
    paid for by waiting afterwards."""

    def __init__(self, rate_per_second: float, clock: Callable[[], float]) -> None:
        self.rate_per_second = rate_per_second
        self.capacity = rate_per_second * BURST_SECONDS
        self.tokens = self.capacity
        self.clock = clock
        self.updated_seconds = clock()

    def refill(self) -> None:
        """Add the tokens earned since the last call."""
        now_seconds = self.clock()
        earned = (now_seconds - self.updated_seconds) * self.rate_per_second
        self.tokens = min(self.capacity, self.tokens + earned)
        self.updated_seconds = now_seconds

    def shortfall_seconds(self, amount: float) -> float:
        """0 if ``amount`` may be taken now, else how long until it may."""
        self.refill()
        needed = min(amount, self.capacity)
        if self.tokens >= needed:
            return 0.0
        return (needed - self.tokens) / self.rate_per_second

    def take(self, amount: float) -> None:
        """Take ``amount`` (call only after ``shortfall_seconds`` said 0)."""
        self.tokens -= amount


class NamespaceMeter:
    """The live state of one namespace's quota: buckets and connection count."""

    def __init__(self, quota: Quota, clock: Callable[[], float]) -> None:
        self.quota = quota
        self.messages = bucket_for(quota.publish_messages_per_second, clock)
        self.bytes = bucket_for(quota.publish_bytes_per_second, clock)
        # Whether publishes are charged at all (a new meter replaces this one when the
        # quota changes): without a rate, a publish need not even be measured.
        self.limits_publish_rate = self.messages is not None or self.bytes is not None
        self.connections = 0


def bucket_for(rate_per_second: float, clock: Callable[[], float]) -> TokenBucket | None:
    """A bucket for a rate, or ``None`` for no limit."""
    return TokenBucket(rate_per_second, clock) if rate_per_second > 0 else None


class Quotas:
    """Every namespace's quota and meter."""

    def __init__(
        self,
        defaults: Quota,
        store: AuthStore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.defaults = defaults
        self.store = store
        self.clock = clock
        self.overrides: dict[str, dict[str, Any]] = store.load_quotas()
        self.meters: dict[str, NamespaceMeter] = {}

    def quota(self, namespace: str) -> Quota:
        """The quota in force for ``namespace``."""
        return self.defaults.merged(self.overrides.get(namespace, {}))

    def meter(self, namespace: str) -> NamespaceMeter:
        """The meter of ``namespace`` (created on first use)."""
        meter = self.meters.get(namespace)
        if meter is None:
            meter = self.meters[namespace] = NamespaceMeter(self.quota(namespace), self.clock)
        return meter

    async def update(self, namespace: str, changes: dict[str, Any]) -> Quota:
        """Override some of a namespace's limits (persisted); returns the new quota."""
        overrides = {**self.overrides.get(namespace, {}), **changes}
        quota = self.defaults.merged(overrides)
        await asyncio.to_thread(self.store.save_quota, namespace, overrides)
        self.overrides[namespace] = overrides
        previous = self.meters.get(namespace)
        if previous is not None:
            meter = self.meters[namespace] = NamespaceMeter(quota, self.clock)
            meter.connections = previous.connections
        return quota

    # -- checks ------------------------------------------------------------------------------

    def charge_publish(self, namespace: str, messages: int, size_bytes: int) -> None:
        """Take a publish from the namespace's rate buckets, or raise :class:`RateLimited`."""
        meter = self.meter(namespace)
        if not meter.limits_publish_rate:
            return
        waits = [
            (bucket.shortfall_seconds(amount), unit)
            for bucket, amount, unit in (
                (meter.messages, messages, "publish_messages_per_second"),
                (meter.bytes, size_bytes, "publish_bytes_per_second"),
            )
            if bucket is not None
        ]
        worst_seconds, unit = max(waits, default=(0.0, ""))
        if worst_seconds > 0:
            raise RateLimited(
                f"namespace {namespace!r} is over its publish rate ({unit})",
                namespace=namespace,
                quota=unit,
                retry_after_seconds=round(worst_seconds, 3),
            )
        for bucket, amount in ((meter.messages, messages), (meter.bytes, size_bytes)):
            if bucket is not None:
                bucket.take(amount)

    def check_publish_room(self, namespace: str) -> None:
        """Refuse a publish before its body is even read when the namespace's
        message bucket cannot pay for one message (so a flood is refused cheaply)."""
        bucket = self.meter(namespace).messages
        if bucket is not None:
            wait_seconds = bucket.shortfall_seconds(1)
            if wait_seconds > 0:
                raise RateLimited(
                    f"namespace {namespace!r} is over its publish rate "
                    "(publish_messages_per_second)",
                    namespace=namespace,
                    quota="publish_messages_per_second",
                    retry_after_seconds=round(wait_seconds, 3),
                )

    def publish_refused(self, namespace: str) -> bool:
        """Whether a one-message publish would be refused now. Never creates a meter
        (a namespace not metered yet has room), so it is safe on any path."""
        meter = self.meters.get(namespace)
        bucket = meter.messages if meter is not None else None
        return bucket is not None and bucket.shortfall_seconds(1) > 0

    def check_streams(self, namespace: str, current: int, adding: int) -> None:
        """Refuse creating ``adding`` streams beyond ``max_streams``."""
        limit = self.meter(namespace).quota.max_streams
        if limit and current + adding > limit:
            raise exceeded(namespace, "max_streams", limit, COUNT_RETRY_SECONDS)

    def check_storage(self, namespace: str, stored_bytes: int) -> None:
        """Refuse publishing once the namespace stores ``max_stored_bytes``."""
        limit = self.meter(namespace).quota.max_stored_bytes
        if limit and stored_bytes >= limit:
            raise exceeded(namespace, "max_stored_bytes", limit, STORAGE_RETRY_SECONDS)

    def check_connection(self, namespace: str) -> None:
        """Refuse a new WebSocket or SSE connection over ``max_connections``."""
        meter = self.meter(namespace)
        limit = meter.quota.max_connections
        if limit and meter.connections >= limit:
            raise exceeded(namespace, "max_connections", limit, COUNT_RETRY_SECONDS)

    def open_connection(self, namespace: str) -> None:
        """Count a connection (checked first by :meth:`check_connection`)."""
        self.meter(namespace).connections += 1

    def close_connection(self, namespace: str) -> None:
        """A counted connection ended."""
        self.meter(namespace).connections -= 1


def exceeded(namespace: str, quota: str, limit: int, retry_seconds: float) -> QuotaExceeded:
    """The error for a used-up count quota."""
    return QuotaExceeded(
        f"namespace {namespace!r} reached its {quota} quota ({limit})",
        namespace=namespace,
        quota=quota,
        limit=limit,
        retry_after_seconds=retry_seconds,
    )
