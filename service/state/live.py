"""The live state's operations: read, apply a rule from `service.state.rules`, compare-and-set.

Each operation reads the documents its rule needs, lets the rule compute the transaction,
and commits it; on a conflict (another replica wrote one of those documents meanwhile) it
reads again. Writes carry an op key, so a caller that saw an unclear outcome
(`StoreError.ambiguous`) repeats the call with the same key and gets the truth. Time comes
in as `now`; nothing here reads a clock or holds policy of its own.
"""

from __future__ import annotations

from service.state.candidates import Candidates
from service.state.core import (
    MAINTENANCE_BATCH,
    PENDING_LIMIT,
    RECENT_SWAPS,
    LabelResult,
    LiveCore,
    RoundNotKeptError,
    new_op,
)
from service.state.leases import Leases
from service.state.rounds import Rounds


class LiveState(Leases, Rounds, Candidates, LiveCore):
    """Every operation on the live state: `core` (reads, commits, observing, upkeep),
    `leases` (leases and labels), `rounds` (rounds, budgets, swaps, history) and
    `candidates` (candidates changed at run time)."""


__all__ = ["MAINTENANCE_BATCH", "PENDING_LIMIT", "RECENT_SWAPS", "LabelResult", "LiveState",
           "RoundNotKeptError", "new_op"]  # fmt: skip
