"""The acked-offsets set of one cursor: a floor plus sorted disjoint ranges above it.

Every offset below ``floor`` is done. Above it, done offsets are kept as
half-open ``[start, end)`` ranges in two parallel sorted lists (``starts`` and
``ends``), so membership is one bisect and the common case — acks arriving in
offset order — only moves the floor and never touches the lists.

::

    floor            ranges above the floor (never touching it, never touching each other)
      |
    ##########........[####)....[##)......
    0         ^ first not-done offset = floor

Invariant: ``floor < starts[0]``, ``ends[i] < starts[i + 1]`` (a range that would
touch the floor or its neighbour is merged into it).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from relaymq.errors import InvalidArgument


class AckedRanges:
    """A set of done offsets: everything below :attr:`floor`, plus ranges above it."""

    __slots__ = ("_ends", "_floor", "_starts")

    def __init__(self, floor: int = 0, ranges: Iterable[tuple[int, int]] = ()) -> None:
        if floor < 0:
            raise InvalidArgument("ack floor must not be negative", floor=floor)
        self._floor = floor
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add_range(start, end)

    @property
    def floor(self) -> int:
        """The lowest offset that is not done."""
        return self._floor

    @property
    def end(self) -> int:
        """One past the highest done offset: nothing at or above it is done."""
        ends = self._ends
        return ends[-1] if ends else self._floor

    def __len__(self) -> int:
        """How many ranges lie above the floor (a measure of ack fragmentation)."""
        return len(self._starts)

    def contains(self, offset: int) -> bool:
        """Whether ``offset`` is done."""
        if offset < self._floor:
            return True
        if not self._starts:
            return False
        index = bisect_right(self._starts, offset)
        return index > 0 and self._ends[index - 1] > offset

    def add(self, offset: int) -> bool:
        """Mark ``offset`` done; False if it already was."""
        if offset == self._floor:
            # The hot path (acks in offset order): inlined, one call per ack.
            floor = offset + 1
            starts = self._starts
            if starts and starts[0] == floor:
                floor = self._ends[0]
                del starts[0], self._ends[0]
            self._floor = floor
            return True
        if offset < self._floor:
            return False
        starts, ends = self._starts, self._ends
        index = bisect_right(starts, offset)
        if index and ends[index - 1] > offset:
            return False
        joins_left = index > 0 and ends[index - 1] == offset
        joins_right = index < len(starts) and starts[index] == offset + 1
        if joins_left and joins_right:
            ends[index - 1] = ends[index]
            del starts[index], ends[index]
        elif joins_left:
            ends[index - 1] = offset + 1
        elif joins_right:
            starts[index] = offset
        else:
            starts.insert(index, offset)
            ends.insert(index, offset + 1)
        return True

    def add_range(self, start: int, end: int) -> None:
        """Mark every offset of ``[start, end)`` done."""
        if end <= start:
            return
        if start <= self._floor:
            self.advance_floor(end)
            return
        starts, ends = self._starts, self._ends
        first = bisect_left(ends, start)  # first range ending at or after start: touches
        last = bisect_right(starts, end)  # ranges starting at or before end: touch
        if first < last:
            start = min(start, starts[first])
            end = max(end, ends[last - 1])
        starts[first:last] = [start]
        ends[first:last] = [end]

    def advance_floor(self, offset: int) -> None:
        """Mark every offset below ``offset`` done."""
        if offset <= self._floor:
            return
        self._floor = offset
        starts, ends = self._starts, self._ends
        below = bisect_right(ends, offset)  # ranges wholly at or below the new floor
        del starts[:below], ends[:below]
        if starts and starts[0] <= self._floor:
            self._floor = ends[0]
            del starts[0], ends[0]

    def ranges(self) -> tuple[tuple[int, int], ...]:
        """The ranges above the floor, in order."""
        return tuple(zip(self._starts, self._ends, strict=True))
