"""How long the store's fsync passes took, counted by bucket since the broker opened.

Owns :class:`FsyncTimings`: the store calls :meth:`FsyncTimings.observe` once per
pass (hundreds of times a second under load), so it only bumps a bucket; the
metrics exporter reads the counts as a cumulative Prometheus histogram. Nothing
is kept per pass, so nothing is dropped however long between two scrapes.
"""

from __future__ import annotations

import bisect

FSYNC_BUCKETS_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


class FsyncTimings:
    """Pass counts per duration bucket (upper bounds inclusive; the last count is
    above every bound) and the total time."""

    def __init__(self, bounds_seconds: tuple[float, ...] = FSYNC_BUCKETS_SECONDS) -> None:
        self.bounds_seconds = bounds_seconds
        self.counts = [0] * (len(bounds_seconds) + 1)
        self.sum_seconds = 0.0

    def observe(self, seconds: float) -> None:
        """Count one pass of ``seconds``."""
        self.counts[bisect.bisect_left(self.bounds_seconds, seconds)] += 1
        self.sum_seconds += seconds
