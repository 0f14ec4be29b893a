"""The server's fsync passes during a bench run's measured window.

Owns reading the server's ``relaymq_fsync_duration_seconds`` histogram (``GET
/metrics`` with the bench's token, prometheus-client's text parser) into an
:class:`FsyncReading`, and :class:`FsyncWindow`: readings taken just before each
phase's clock starts and just after it stops, the passes in between added up
and summarized (:func:`summarize`) as the figures the report prints. ``None``
(JSON ``null``) means unknown: ``/metrics`` unreadable or refused, a server
without the metric, a restarted server. A server that made no fsync pass in the
window (``--fsync never``, or nothing written) reports ``passes`` 0, a
measurement, not an unknown.

What the server counts: one observation per group-commit fsync pass, from the
pass's start until the event loop processed its completion. A slow disk shows
here; so does a busy event loop, a little (the hand-back waits for it).

Why only at phase boundaries, never during a phase: a scrape costs the server a
few milliseconds of event-loop time, which would itself show up in a latency
run's tail.

Why the quantiles are upper bounds: the histogram only says how many passes fell
in each bucket (0.1 ms ... 10 s, then +Inf), so "p99 at most 25 ms" is all it
can tell: at least 99 % of the passes took no longer than that bucket's upper
edge. A quantile in the +Inf bucket has no bound (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

FSYNC_METRIC = "relaymq_fsync_duration_seconds"
SCRAPE_TIMEOUT_SECONDS = 5
QUANTILES_PER_MILLE = {"p50": 500, "p99": 990, "p99_9": 999}
SLOW_THRESHOLDS_SECONDS = {"over_10ms": 0.01, "over_100ms": 0.1}


@dataclass(frozen=True)
class FsyncReading:
    """A cumulative fsync histogram: ``cumulative[i]`` passes took at most
    ``bounds_seconds[i]``; the last count (+Inf) is every pass."""

    bounds_seconds: tuple[float, ...]  # the finite upper edges, ascending
    cumulative: tuple[int, ...]  # one more than the bounds: the +Inf bucket
    sum_seconds: float

    @property
    def passes(self) -> int:
        """Every pass counted."""
        return self.cumulative[-1]

    def since(self, earlier: FsyncReading) -> FsyncReading | None:
        """The passes between ``earlier`` and this reading (``None`` when the two do
        not line up: other buckets, or counts that went down, a restarted server)."""
        if earlier.bounds_seconds != self.bounds_seconds:
            return None
        cumulative = tuple(
            now - then for now, then in zip(self.cumulative, earlier.cumulative, strict=True)
        )
        per_bucket = bucket_counts(cumulative)
        if any(count < 0 for count in per_bucket):
            return None
        return FsyncReading(
            self.bounds_seconds, cumulative, max(self.sum_seconds - earlier.sum_seconds, 0.0)
        )

    def plus(self, other: FsyncReading) -> FsyncReading:
        """Both windows' passes together (same buckets: one server's readings)."""
        cumulative = tuple(a + b for a, b in zip(self.cumulative, other.cumulative, strict=True))
        return FsyncReading(self.bounds_seconds, cumulative, self.sum_seconds + other.sum_seconds)


@dataclass(frozen=True)
class FsyncSummary:
    """The passes of a window: how many, their mean, bucket-bounded quantiles in
    milliseconds (``None``: no passes, or above the last finite bucket), the slow
    ones, and the passes per bucket (``at_most_ms`` ``None``: the +Inf bucket)."""

    passes: int
    mean_ms: float | None
    p50_at_most_ms: float | None
    p99_at_most_ms: float | None
    p99_9_at_most_ms: float | None
    over_10ms: int | None  # None: the server's buckets have no 10 ms edge
    over_100ms: int | None
    buckets: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures."""
        return asdict(self)


class FsyncProbe:
    """Reads the server's fsync histogram; ``None`` whenever it cannot (no
    endpoint, no permission, an old server without the metric)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def read(self) -> FsyncReading | None:
        """One scrape of ``GET /metrics``."""
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url, headers=self.headers, timeout=SCRAPE_TIMEOUT_SECONDS
            ) as client:
                response = await client.get("/metrics")
                response.raise_for_status()
        except httpx.HTTPError:
            return None
        return parse_fsync_histogram(response.text)


@dataclass
class FsyncWindow:
    """The passes inside the phases' clocks: the readings at each phase's start
    and end, their differences added up (passes between two phases, while
    connections open or acks are confirmed, are not counted). One reading that
    failed or did not line up makes the whole window unknown."""

    total: FsyncReading | None = None
    started: FsyncReading | None = None
    unknown: bool = False

    def start(self, reading: FsyncReading | None) -> None:
        """A phase's clock starts (``reading``: the histogram just before)."""
        self.started = reading
        self.unknown = self.unknown or reading is None

    def stop(self, reading: FsyncReading | None) -> None:
        """A phase's clock stopped (``reading``: the histogram just after)."""
        passes = None if reading is None or self.started is None else reading.since(self.started)
        if passes is None:
            self.unknown = True
            return
        self.total = passes if self.total is None else self.total.plus(passes)

    def figures(self) -> dict[str, Any] | None:
        """The window's passes as JSON-able figures, ``None`` when unknown."""
        if self.unknown or self.total is None:
            return None
        return summarize(self.total).to_dict()


def parse_fsync_histogram(text: str) -> FsyncReading | None:
    """The fsync histogram of a Prometheus text exposition (``None``: absent or unreadable)."""
    try:
        for family in text_string_to_metric_families(text):
            if family.name == FSYNC_METRIC and family.type == "histogram":
                return reading_of(family.samples)
    except (ValueError, KeyError, IndexError):  # what the parser raises on bad input
        return None
    return None


def reading_of(samples: Iterable[Sample]) -> FsyncReading | None:
    """The buckets and sum of a histogram family's samples (series of any other
    labels are added together); ``None`` without a +Inf bucket."""
    counts: dict[float, float] = {}
    sum_seconds = 0.0
    for sample in samples:
        if sample.name == f"{FSYNC_METRIC}_bucket":
            edge = float(sample.labels["le"])  # "+Inf" reads as inf
            counts[edge] = counts.get(edge, 0.0) + sample.value
        elif sample.name == f"{FSYNC_METRIC}_sum":
            sum_seconds += sample.value
    if math.inf not in counts:
        return None
    edges = sorted(counts)
    return FsyncReading(tuple(edges[:-1]), tuple(int(counts[edge]) for edge in edges), sum_seconds)


def bucket_counts(cumulative: tuple[int, ...]) -> list[int]:
    """Passes in each bucket of a cumulative histogram."""
    return [
        count - previous for previous, count in zip((0, *cumulative[:-1]), cumulative, strict=True)
    ]


def summarize(window: FsyncReading) -> FsyncSummary:
    """Passes, mean, bucket-bounded quantiles and slow passes of a window."""
    passes = window.passes
    quantiles = {
        name: at_most_ms(window, per_mille) for name, per_mille in QUANTILES_PER_MILLE.items()
    }
    slow = {name: slower_than(window, seconds) for name, seconds in SLOW_THRESHOLDS_SECONDS.items()}
    edges = (*window.bounds_seconds, math.inf)
    return FsyncSummary(
        passes=passes,
        mean_ms=round(window.sum_seconds / passes * 1000, 3) if passes else None,
        p50_at_most_ms=quantiles["p50"],
        p99_at_most_ms=quantiles["p99"],
        p99_9_at_most_ms=quantiles["p99_9"],
        over_10ms=slow["over_10ms"],
        over_100ms=slow["over_100ms"],
        buckets=[
            {"at_most_ms": edge_ms(edge), "passes": count}
            for edge, count in zip(edges, bucket_counts(window.cumulative), strict=True)
        ],
    )


def at_most_ms(window: FsyncReading, per_mille: int) -> float | None:
    """The upper edge (ms) of the first bucket holding at least ``per_mille`` / 1000
    of the passes: that quantile took at most this long. ``None``: no passes, or
    the quantile lies in the +Inf bucket (no bound)."""
    if window.passes == 0:
        return None
    for edge, cumulative in zip((*window.bounds_seconds, math.inf), window.cumulative, strict=True):
        if cumulative * 1000 >= per_mille * window.passes:  # integers: no rounding at p99.9
            return edge_ms(edge)
    return None  # not reached: the +Inf bucket holds every pass


def slower_than(window: FsyncReading, seconds: float) -> int | None:
    """Passes that took longer than ``seconds``, which must be a bucket edge (``None``
    when the server's buckets have no such edge)."""
    for edge, cumulative in zip(window.bounds_seconds, window.cumulative, strict=False):
        if math.isclose(edge, seconds):
            return window.passes - cumulative
    return None


def edge_ms(edge_seconds: float) -> float | None:
    """A bucket edge in milliseconds (``None`` for +Inf)."""
    return None if math.isinf(edge_seconds) else round(edge_seconds * 1000, 6)
