"""Fsync pass timings: counted by bucket, none dropped between scrapes."""

from __future__ import annotations

import math

from relaymq.broker.fsync_timings import FsyncTimings


def test_every_pass_is_counted_in_its_bucket() -> None:
    timings = FsyncTimings((0.001, 0.01))
    for _ in range(25_000):  # more than any per-scrape buffer would have kept
        timings.observe(0.0004)
    timings.observe(0.001)  # a bound is inclusive
    timings.observe(0.002)
    timings.observe(3.0)
    assert timings.counts == [25_001, 1, 1]
    assert math.isclose(timings.sum_seconds, 25_000 * 0.0004 + 0.001 + 0.002 + 3.0)
