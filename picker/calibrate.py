"""Choose gamma so that a query rule asks for a given mean number of labels.

gamma is not a learning rate: it scales q and so the label count (Karimi et al., AISTATS
2021, Section 5 set it per budget). The mean label count over replays grows with gamma;
with the same seed for every trial (common random numbers) it is monotone enough for a
bisection on log gamma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from picker.data import PickerInputError, Pool, make_pool
from picker.modelpicker import IntArray
from picker.pool_replay import pool_replay
from picker.pooled import vote_counts
from picker.replay import Method, ReplayResult, replay

GAMMA_LOW = 1e-4
GAMMA_HIGH = 1e5


@dataclass(frozen=True)
class Calibration:
    method: str
    budget: float
    gamma: float
    labels: float
    identified: float
    runs: int

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "method": self.method,
            "budget": self.budget,
            "gamma": float(f"{self.gamma:.6g}"),
            "labels": round(self.labels, 3),
            "identified": round(self.identified, 4),
            "runs": self.runs,
        }


def calibrate_gamma(
    pool: Pool,
    budget: float,
    stream_size: int,
    runs: int,
    seed: int,
    method: Method = "modelpicker",
    relative_tolerance: float = 0.01,
    max_trials: int = 40,
) -> Calibration:
    """Bisect log gamma until the mean labels are within the tolerance of `budget`."""
    if method == "random":
        raise PickerInputError(
            "random sampling takes its budget directly; calibrate modelpicker or entropy"
        )
    if not (math.isfinite(budget) and budget > 0):
        raise PickerInputError(f"budget must be a number > 0, got {budget}")

    def trial(gamma: float) -> Calibration:
        result = replay(pool, method, gamma, stream_size, runs, np.random.default_rng(seed))
        return Calibration(method, budget, gamma, result.labels, result.identified, runs)

    low, high = trial(GAMMA_LOW), trial(GAMMA_HIGH)
    if budget < low.labels:
        raise PickerInputError(
            f"budget {budget:g} is below the fewest labels {method} asks for on this stream "
            f"({low.labels:.1f} at gamma={GAMMA_LOW:g})"
        )
    if budget > high.labels:
        raise PickerInputError(
            f"budget {budget:g} is above the most labels {method} asks for on this stream "
            f"({high.labels:.1f}: every item on which the models disagree)"
        )
    best = min((low, high), key=lambda c: abs(c.labels - budget))
    for _ in range(max_trials):
        if abs(best.labels - budget) <= relative_tolerance * budget:
            break
        middle = trial(math.sqrt(low.gamma * high.gamma))
        low, high = (middle, high) if middle.labels < budget else (low, middle)
        best = min((best, middle), key=lambda c: abs(c.labels - budget))
    return best


def replay_at_labels(
    pool: Pool,
    method: Method,
    labels: float,
    stream_size: int,
    runs: int,
    seed: int,
    calibration_runs: int = 100,
) -> ReplayResult:
    """Replay `method` at a mean label count: gamma calibrated first (on another seed)
    for modelpicker and entropy; random sampling takes the label count as its budget."""
    param = labels
    if method != "random":
        param = calibrate_gamma(pool, labels, stream_size, calibration_runs, seed + 1, method).gamma
    return replay(pool, method, param, stream_size, runs, np.random.default_rng(seed))


# Model Selector's authors tune eps on this grid against the models' majority vote.
EPS_GRID = tuple(round(0.35 + 0.01 * i, 2) for i in range(15))


def majority_vote(predictions: IntArray) -> IntArray:
    """The class most models predict on each item (the smallest such class on a tie)."""
    result: IntArray = vote_counts(predictions, int(predictions.max()) + 1).argmax(axis=1)
    return result


def calibrate_pool(
    pool: Pool, method: str, budget: int, stream_size: int, runs: int, seed: int
) -> dict[str, Any]:
    """A pool method's setting and forecast from the predictions alone, no labels.

    The majority vote stands in for the labels. model-selector: eps from EPS_GRID with the
    highest identification averaged over budgets 1..budget (its authors' grid search);
    coda and pool-based have no setting to choose here (pool-based fits its calibration
    from the labels as they come), so calibrate forecasts their identification at `budget`.
    """
    if budget < 1:
        raise PickerInputError(f"budget must be >= 1 label, got {budget}")
    pseudo = make_pool(pool.predictions, majority_vote(pool.predictions))
    if method == "model-selector":
        steps = list(range(1, budget + 1))
        scores = {}
        for eps in EPS_GRID:
            curve = pool_replay(
                pseudo, method, steps, stream_size, runs, np.random.default_rng(seed), eps
            )
            scores[eps] = (float(np.mean([r.identified for r in curve])), curve[-1].identified)
        eps = max(EPS_GRID, key=lambda e: scores[e][0])
        return {
            "method": method,
            "budget": budget,
            "eps": eps,
            "identified_vs_majority": round(scores[eps][1], 4),
            "mean_identified_vs_majority": round(scores[eps][0], 4),
            "runs": runs,
        }
    result = pool_replay(pseudo, method, [budget], stream_size, runs, np.random.default_rng(seed))
    return {
        "method": method,
        "budget": budget,
        "eps": None,
        "identified_vs_majority": round(result[0].identified, 4),
        "runs": runs,
    }
