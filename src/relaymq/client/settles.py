"""Receipts settled without ``confirm`` and not sent yet.

Owns :class:`SettleRuns`: one subscription's receipts in the order they were
settled, as runs of one op (and option) each, so that the frames made of them
keep that order. Grouping all acks of a subscription into one frame would let a
later ack overtake an earlier nack: in ``ordered`` mode an ack is cumulative,
and it would commit the nacked message before the nack rewinds it.
"""

from __future__ import annotations

from typing import Any


class SettleRuns:
    """One subscription's waiting receipts: ``runs`` of ``(op, option, receipts)``."""

    __slots__ = ("count", "runs")

    def __init__(self) -> None:
        self.runs: list[tuple[str, Any, list[str]]] = []
        self.count = 0

    def add(self, op: str, option: Any, receipt: str) -> int:
        """Append a receipt (to the last run if it has the same op and option);
        how many receipts of the subscription now wait."""
        self.count += 1
        runs = self.runs
        if runs:
            last_op, last_option, receipts = runs[-1]
            if last_op == op and last_option == option:
                receipts.append(receipt)
                return self.count
        runs.append((op, option, [receipt]))
        return self.count
