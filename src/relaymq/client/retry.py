"""The SDK's reconnect and retry policy: exponential backoff with jitter, bounded.

Owns :class:`RetryPolicy` (the settings) and :class:`Backoff` (one run of
attempts under a policy). The WebSocket session uses it to reconnect; the
HTTP transport uses it to retry a request the server never received.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from relaymq import errors


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry after a transient failure.

    The delay before attempt ``n`` (1-based) is ``initial_delay_ms *
    multiplier ** (n - 1)``, at most ``max_delay_ms``, spread by +/- ``jitter``
    (a fraction). Retrying stops after ``max_attempts`` attempts (0: no limit)
    or once ``timeout_seconds`` have passed since the failure, whichever
    comes first; the caller then sees :class:`~relaymq.errors.ConnectionLost`.
    """

    initial_delay_ms: int = 50
    max_delay_ms: int = 2_000
    multiplier: float = 2.0
    jitter: float = 0.2
    timeout_seconds: float = 60.0
    max_attempts: int = 0

    def __post_init__(self) -> None:
        if self.initial_delay_ms < 0 or self.max_delay_ms < self.initial_delay_ms:
            raise errors.InvalidArgument("need 0 <= initial_delay_ms <= max_delay_ms")
        if self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise errors.InvalidArgument("need multiplier >= 1 and 0 <= jitter <= 1")
        if self.timeout_seconds < 0 or self.max_attempts < 0:
            raise errors.InvalidArgument("need timeout_seconds >= 0 and max_attempts >= 0")

    def delay_seconds(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (1-based), jitter included."""
        base_ms = min(self.max_delay_ms, self.initial_delay_ms * self.multiplier ** (attempt - 1))
        spread = 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, base_ms * spread / 1000)

    def start(self) -> Backoff:
        """A fresh run of attempts, its clock starting now."""
        return Backoff(self)


NO_RETRY = RetryPolicy(timeout_seconds=0, max_attempts=1)
"""Fail at the first transient error."""


class Backoff:
    """One run of attempts: counts them and says how long to pause before the next."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempts = 0
        self.started_seconds = time.monotonic()

    def next_delay_seconds(self) -> float | None:
        """The pause before the next attempt, or ``None`` when the policy is spent."""
        self.attempts += 1
        policy = self.policy
        if policy.max_attempts and self.attempts >= policy.max_attempts:
            return None
        delay = policy.delay_seconds(self.attempts)
        elapsed = time.monotonic() - self.started_seconds
        if elapsed + delay > policy.timeout_seconds:
            remaining = policy.timeout_seconds - elapsed
            return remaining if remaining > 0.01 else None
        return delay
