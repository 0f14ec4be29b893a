"""Process-wide tuning of the Python runtime for a long-running server process.

Owns the garbage collector's settings. A busy broker holds hundreds of
thousands of long-lived objects (messages in cursor windows and in flight,
dedup entries, pending confirms). With CPython's default thresholds
(700, 10, 10) the collector walks them again every few thousand allocations;
under ``relaymq bench`` that was a third of the server's CPU
(``docs/performance.md``, "Profile findings"). Objects that survived start-up
are frozen out of the collector's sight, and collections are made rarer. Messages
are not tracked at all (``core/message.py``).
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
    freeze_start_up_objects()
    collect_less_often()


def collect_less_often() -> None:
    """Raise the collector's thresholds (a server sets them before it opens its
    store, so that recovering a large one runs few collections)."""
    gc.set_threshold(
        YOUNG_GENERATION_ALLOCATIONS, MIDDLE_GENERATION_COLLECTIONS, OLD_GENERATION_COLLECTIONS
    )


def freeze_start_up_objects() -> None:
    """Collect, then move every object alive now out of the collector's sight.

    A server calls this once its broker is open and its app is built: routes,
    validators and the recovered broker state are then never walked again. A
    frozen object that later becomes garbage is still freed by reference
    counting (a deleted stream is, ``tests/test_runtime.py``);
    only one caught in a reference cycle would stay until the process ends."""
    gc.collect()
    gc.freeze()
