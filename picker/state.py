"""The picker's explicit state and its stable, versioned serialised form.

A round's whole state is the cumulative importance-weighted losses L, the step t (items
seen), the queries issued and labels applied, the round number and its label budget.
Every transition returns a new state; a store may instead apply a label's per-model loss
increments (`picker.loss_increments`) atomically, in any order, and rebuild the state
with `PickerState.from_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from picker.modelpicker import FloatArray, best_model, learning_rate, posterior

STATE_VERSION = 1


@dataclass(frozen=True)
class PickerState:
    """One round of ModelPicker: L_i per model, t, queries, labels, round, budget."""

    losses: tuple[float, ...]
    step: int = 0
    queries: int = 0
    labels: int = 0
    round: int = 0
    budget: int | None = None

    def __post_init__(self) -> None:
        if len(self.losses) < 2:
            raise ValueError(f"a picker needs at least 2 models, got {len(self.losses)}")
        if not all(math.isfinite(x) and x >= 0.0 for x in self.losses):
            raise ValueError("losses must be finite and non-negative")
        for name in ("step", "queries", "labels", "round"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.budget is not None and self.budget < 0:
            raise ValueError("budget must be >= 0 or None")

    @property
    def n_models(self) -> int:
        return len(self.losses)

    @property
    def loss_array(self) -> FloatArray:
        return np.asarray(self.losses, dtype=np.float64)

    @property
    def queries_left(self) -> int | None:
        """Queries the budget still allows this round (None: no budget)."""
        return None if self.budget is None else max(0, self.budget - self.queries)

    def weights(self) -> FloatArray:
        """The posterior at the current step (uniform before the first item)."""
        return posterior(self.loss_array, learning_rate(max(self.step, 1), self.n_models))

    def best(self, rng: np.random.Generator) -> int:
        return int(best_model(self.loss_array, rng))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "losses": list(self.losses),
            "step": self.step,
            "queries": self.queries,
            "labels": self.labels,
            "round": self.round,
            "budget": self.budget,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PickerState:
        version = data.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"unsupported picker state version {version!r}")
        budget = data.get("budget")
        return cls(
            losses=tuple(float(x) for x in data["losses"]),
            step=int(data["step"]),
            queries=int(data["queries"]),
            labels=int(data["labels"]),
            round=int(data["round"]),
            budget=None if budget is None else int(budget),
        )


def initial_state(n_models: int, budget: int | None = None, round_number: int = 0) -> PickerState:
    return PickerState(losses=(0.0,) * n_models, round=round_number, budget=budget)


def observe(state: PickerState, n_items: int = 1) -> PickerState:
    """Count items the picker saw (queried or not): t advances with the stream."""
    return replace(state, step=state.step + n_items)


def record_queries(state: PickerState, n_queries: int = 1) -> PickerState:
    return replace(state, queries=state.queries + n_queries)


def apply_increments(state: PickerState, increments: Sequence[float] | FloatArray) -> PickerState:
    """Add one label's per-model loss increments; the label may arrive however late."""
    added = state.loss_array + np.asarray(increments, dtype=np.float64)
    return replace(state, losses=tuple(float(x) for x in added), labels=state.labels + 1)


def start_round(state: PickerState, budget: int | None = None) -> PickerState:
    """A fresh data period: L and t reset, the round number advances."""
    return initial_state(state.n_models, budget=budget, round_number=state.round + 1)
