"""The picker's decisions for live items: whom to ask for a label, which model to serve.

This is the part a serving system calls: a batch of items seen at consecutive steps is
scored against the current losses (labels are delayed, so L is fixed within the batch
while t advances), the coins are drawn with an injected generator, and the round's label
budget caps the queries. Formulas: `picker.modelpicker` (Karimi et al., AISTATS 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from picker.modelpicker import (
    BoolArray,
    FloatArray,
    IntArray,
    draw_queries,
    learning_rates,
    posterior,
    query_probability,
)
from picker.state import PickerState, observe, record_queries

# The one default of the query scale, for the picker and the service alike: chosen by
# replaying the demo pool (README, "The service").
DEFAULT_GAMMA = 1.0


@dataclass(frozen=True)
class PickerConfig:
    """Knobs of the query rule and of switching, validated on construction.

    gamma: scales how many labels are asked for (calibrate it on recorded predictions).
    budget: hard cap of queries per round (None: only gamma limits them).
    switch_margin: the served model changes only when the best model's posterior weight
        exceeds the served model's by more than this (0: follow the best exactly).
    """

    gamma: float = DEFAULT_GAMMA
    budget: int | None = None
    switch_margin: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma}")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"budget must be >= 0, got {self.budget}")
        if not 0.0 <= self.switch_margin < 1.0:
            raise ValueError(f"switch_margin must be in [0, 1), got {self.switch_margin}")


@dataclass(frozen=True)
class QueryDecisions:
    """Per item of a batch: its step t, eta_t, query probability q_t and the coin."""

    steps: IntArray
    eta: FloatArray
    q: FloatArray
    query: BoolArray


def decide_queries(
    losses: FloatArray,
    first_step: int,
    predictions: npt.ArrayLike,
    gamma: float,
    queries_left: int | None,
    rng: np.random.Generator,
) -> QueryDecisions:
    """Score items seen at steps first_step, first_step + 1, ... against losses L."""
    preds = np.atleast_2d(np.asarray(predictions, dtype=np.int64))
    steps = first_step + np.arange(preds.shape[0], dtype=np.int64)
    eta = learning_rates(steps, preds.shape[1])
    weights = posterior(np.asarray(losses, dtype=np.float64), eta)
    q = query_probability(preds, weights, gamma, eta)
    query = cap_queries(draw_queries(q, rng), queries_left)
    return QueryDecisions(steps=steps, eta=eta, q=q, query=query)


def cap_queries(query: BoolArray, queries_left: int | None) -> BoolArray:
    """The round's label budget: keep the first `queries_left` queries of a batch, in order."""
    if queries_left is None:
        return query
    capped: BoolArray = query & (np.cumsum(query) <= queries_left)
    return capped


def decide(
    state: PickerState, config: PickerConfig, predictions: npt.ArrayLike, rng: np.random.Generator
) -> tuple[PickerState, QueryDecisions]:
    """Observe a batch of items; return the advanced state and the decisions."""
    preds = np.atleast_2d(np.asarray(predictions, dtype=np.int64))
    if preds.shape[1] != state.n_models:
        raise ValueError(f"expected {state.n_models} predictions per item, got {preds.shape[1]}")
    decisions = decide_queries(
        state.loss_array, state.step + 1, preds, config.gamma, state.queries_left, rng
    )
    advanced = record_queries(observe(state, preds.shape[0]), int(decisions.query.sum()))
    return advanced, decisions


def served_model(weights: FloatArray, current: int | None, margin: float = 0.0) -> int:
    """The model to serve: the posterior's best, unless the current one is within margin.

    Ties keep the current model, so equal weights (as at the start of a round) never swap.
    """
    weights = np.asarray(weights, dtype=np.float64)
    best = int(np.argmax(weights))
    if current is None:
        return best
    if weights[best] - weights[current] > margin:
        return best
    return current
