"""Process-wide tuning of the Python runtime for a long-running server process.

Owns the garbage collector's settings. A busy broker holds hundreds of
thousands of long-lived objects (messages in cursor windows and in flight,
dedup entries, pending confirms). With CPython's default thresholds
(700, 10, 10) the collector walks them again every few thousand allocations;
under ``relaymq bench`` that was a third of the server's CPU
(``docs/performance.md``, "Profile findings"). Objects that survived start-up
are frozen out of the collector's sight, and collections are made rarer.
Reference cycles are still collected; they just wait a little longer.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_ALLOCATIONS = 50_000
"""Allocations (minus deallocations) between two young collections (CPython: 700)."""
MIDDLE_GENERATION_COLLECTIONS = 20
OLD_GENERATION_COLLECTIONS = 100


def tune_garbage_collector() -> None:
    """Freeze what exists now (start-up objects live forever) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(
        YOUNG_GENERATION_ALLOCATIONS, MIDDLE_GENERATION_COLLECTIONS, OLD_GENERATION_COLLECTIONS
    )
