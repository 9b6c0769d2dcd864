"""The state store: one small interface for everything pickserve must not lose.

Picker state (losses, step, queries, labels, round, budget), the served model and its
version, the label queue with leases, the swap log, and metric counters. Every method is
one atomic step, so any number of replicas can share a store: the picker's math stays in
`picker/`, and the store only adds the numbers it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from picker import PickerState

CommitOutcome = Literal["accepted", "duplicate", "unknown"]


# Swap records returned with a selection: the most recent ones (the full log stays stored).
RECENT_SWAPS = 200
# How long an item's record is kept (past the query TTL, so late labels read "duplicate").
ITEM_RETENTION_S = 60 * 86_400


class StoreError(RuntimeError):
    """The store failed or refused (unreachable, or holding another pool's state)."""


@dataclass(frozen=True)
class QueuedItem:
    """An item the picker chose for labeling, with what a labeler and the update need."""

    item_id: str
    round: int
    q: float
    predictions: list[int]
    instance: list[float]
    created_at: float
    status: str = "pending"
    lease_expires_at: float = 0.0

    def payload(self) -> dict[str, Any]:
        return {"round": self.round, "q": self.q, "predictions": self.predictions,
                "instance": self.instance, "created_at": self.created_at}  # fmt: skip


@dataclass(frozen=True)
class StoredSelection:
    picker: PickerState
    served: int
    version: int
    model_names: list[str]
    swaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> int:
        """The posterior's best model: argmax w = argmin L (the first one on ties)."""
        return int(np.argmin(self.picker.loss_array))


class StateStore(Protocol):
    def initialise(self, model_names: Sequence[str], served: int, budget: int | None) -> None:
        """Create the state if absent; refuse state that belongs to another pool."""

    def selection(self) -> StoredSelection:
        """Picker state, served model, version and the RECENT_SWAPS latest swaps."""

    def advance(self, n_items: int) -> PickerState:
        """t += n_items atomically; returns the state as it was *before* (t = first - 1)."""

    def enqueue(self, round_number: int, items: Sequence[QueuedItem], budget: int | None) -> int:
        """Queue items of `round_number` while the budget allows; returns how many."""

    def lease(self, limit: int, now: float, lease_s: float, ttl_s: float) -> list[QueuedItem]:
        """Hand out up to `limit` unexpired queued items nobody holds, for `lease_s`."""

    def item(self, item_id: str) -> QueuedItem | None: ...

    def commit_label(
        self, item_id: str, round_number: int, increments: Sequence[float], now: float, ttl_s: float
    ) -> CommitOutcome:
        """Apply one label's loss increments once, if the item is still pending."""

    def swap(self, expected_version: int, to_model: int, record: Mapping[str, Any]) -> bool:
        """Serve `to_model` if the version is still `expected_version` (compare-and-set)."""

    def start_round(self, budget: int | None) -> int: ...

    def set_budget(self, budget: int | None) -> None: ...

    def queue_depth(self, now: float, ttl_s: float) -> int: ...

    def add_counters(self, deltas: Mapping[str, float]) -> None: ...

    def counters(self) -> dict[str, float]: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def check_pool(stored: Sequence[str], wanted: Sequence[str], where: str) -> None:
    if list(stored) != list(wanted):
        raise StoreError(
            f"{where} holds state for the pool {list(stored)}, not {list(wanted)}: "
            "use another store namespace (PICKSERVE_STORE_NAMESPACE) or remove that state"
        )
