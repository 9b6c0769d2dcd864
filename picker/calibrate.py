"""Choose gamma so that a query rule asks for a given mean number of labels.

gamma is not a learning rate: it scales q and so the label count (Karimi et al., AISTATS
2021, Section 5 set it per budget). The mean label count over replays grows with gamma;
with the same seed for every trial (common random numbers) it is monotone enough for a
bisection on log gamma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from picker.data import PickerInputError, Pool
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
