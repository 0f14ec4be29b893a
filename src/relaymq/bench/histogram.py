"""End-to-end latency: recorded cheaply during a run, summarized as an HDR histogram after.

Owns :class:`LatencyRecorder`. On the hot path a latency is one append to an
``array`` of microseconds (no Python-level histogram arithmetic per message);
:meth:`LatencyRecorder.summary` folds them into an ``hdrhistogram``
(3 significant digits, 1 us to 1 h) once the measured window is over and
reads the percentiles the report prints. A paced run's schedule lag (how late
its producers sent, :class:`relaymq.bench.pacing.Pacer`) is kept in one too.
"""

from __future__ import annotations

import collections
from array import array
from dataclasses import asdict, dataclass

from hdrh.histogram import HdrHistogram

LOWEST_MICROSECONDS = 1
HIGHEST_MICROSECONDS = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of end-to-end latency, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p99_9_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-able figures."""
        return asdict(self)


class LatencyRecorder:
    """Latencies of one run, in microseconds."""

    def __init__(self) -> None:
        self.values_us = array("q")

    def record(self, latency_us: int) -> None:
        """Keep one latency (negative values, clock noise, count as 0)."""
        self.values_us.append(latency_us if latency_us > 0 else 0)

    def histogram(self) -> HdrHistogram:
        """The recorded latencies as an HDR histogram (equal values recorded at once)."""
        histogram = HdrHistogram(LOWEST_MICROSECONDS, HIGHEST_MICROSECONDS, SIGNIFICANT_DIGITS)
        for value_us, count in collections.Counter(self.values_us).items():
            bounded = min(max(value_us, LOWEST_MICROSECONDS), HIGHEST_MICROSECONDS)
            histogram.record_value(bounded, count)
        return histogram

    def summary(self) -> LatencySummary | None:
        """Percentiles, or ``None`` when nothing was recorded."""
        if not self.values_us:
            return None
        histogram = self.histogram()
        max_ms = max(self.values_us) / 1000
        # A percentile is its bucket's highest equivalent value (3 significant digits),
        # which may lie just above the exact maximum: never report more than that.
        percentiles = {
            name: min(histogram.get_value_at_percentile(percentile) / 1000, max_ms)
            for name, percentile in PERCENTILES.items()
        }
        return LatencySummary(
            count=len(self.values_us),
            mean_ms=histogram.get_mean_value() / 1000,
            p50_ms=percentiles["p50"],
            p90_ms=percentiles["p90"],
            p99_ms=percentiles["p99"],
            p99_9_ms=percentiles["p99_9"],
            max_ms=max_ms,
        )
