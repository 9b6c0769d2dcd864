"""Elimination by evidence: a model leaves the round once a betting test against the
leader says it is behind. One rule for the replay (`Elimination`, vectorised over
realisations) and for the service (`Evidence` and `eliminate_on_label`, one label at a
time, as labels arrive).

On an item with label y and query probability q, model i's increment against the leader
j (the lowest loss among the models in the round, decided without this item's label) is
Z = ([f_i(x) != y] - [f_j(x) != y]) / q, and 0 on items with no label. If the items of a
round are drawn i.i.d. (the stationarity that drift detection checks) and model i is the
best of the round (no model has a lower expected loss), then E[Z | past] =
E_x[loss_i(x) - loss_j(x)] <= 0 for whichever leader j the past chose: the coin's 1/q
cancels its probability q. The wealth W_i = prod (1 + lambda Z), with bets lambda >= 0
decided from the past alone (`bet_sizes`), is then a nonnegative supermartingale with
W_0 = 1, and Ville's inequality bounds the chance that it ever reaches 1 / delta by
delta. So model i leaves when W_i >= 1 / delta: the best model leaves with probability
at most delta over the whole round, however often the test is looked at and however
small q became (no range term: the bets shrink with eta_t instead, and every q is
>= eta_t where Z can be non-zero). One test per model; only the best model's null
hypothesis is true, so no union bound over the pool is needed.

Delayed labels (the service): a label is applied when it arrives, with the leader and
the bet decided from the labels applied before it and the step t at that moment
(eta_t only shrinks, so it is still <= the q the item was asked with). The argument
above then runs over labels in the order they are applied, and needs one more thing of
the labelers: which queued item is labeled next does not depend on its true label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from picker.modelpicker import BoolArray, FloatArray, IntArray, best_model, learning_rate


def bet_sizes(drift: FloatArray, spread: FloatArray, seen: int, eta: float) -> FloatArray:
    """The predictable bets lambda_t of the elimination test: m / (v + m^2), the bet that
    maximises growth against increments of mean m and second moment v (estimated from the
    `seen` items before this one: `drift` = sum of Z, `spread` = sum of Z^2), clipped to
    [0, eta_t / 2]. Every q is >= eta_t where Z can be non-zero, so |Z| <= 1 / eta_t and
    1 + lambda Z >= 1/2: the wealth stays positive."""
    n = max(seen, 1)
    mean, second = drift / n, spread / n
    scale = second + mean * mean
    raw = np.divide(mean, scale, out=np.zeros_like(mean), where=scale > 0)
    result: FloatArray = np.clip(raw, 0.0, eta / 2.0)
    return result


def leader_increments(
    mistakes: FloatArray, leaders: IntArray, q: FloatArray, in_round: BoolArray
) -> FloatArray:
    """Z = ([f_i wrong] - [f_leader wrong]) / q per model (last axis), one leader and one
    q per leading row; 0 for the models no longer in the round."""
    mistakes = np.asarray(mistakes, dtype=np.float64)
    leading = np.take_along_axis(mistakes, np.asarray(leaders)[..., None], axis=-1)
    z: FloatArray = np.where(in_round, (mistakes - leading) / np.asarray(q)[..., None], 0.0)
    return z


def grow_wealth(
    drift: FloatArray, spread: FloatArray, log_wealth: FloatArray, z: FloatArray,
    seen: int, eta: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:  # fmt: skip
    """The evidence after increments `z`: the bet is decided from the evidence before
    them (`bet_sizes`), then the running sums move. Returns new arrays."""
    bets = bet_sizes(drift, spread, seen, eta)
    return drift + z, spread + z * z, log_wealth + np.log1p(bets * z)


def ranked_losses(losses: FloatArray, out: BoolArray) -> FloatArray:
    """The losses the round ranks by: +inf for the models eliminated, so that they carry
    no posterior weight and are never the best, active or checked again."""
    ranked: FloatArray = np.where(out, np.inf, np.asarray(losses, dtype=np.float64))
    return ranked


def threshold(delta: float) -> float:
    """ln(1 / delta): the log-wealth at which a model leaves the round."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"the elimination's delta must be in (0, 1), got {delta}")
    return math.log(1.0 / delta)


class Elimination:
    """The elimination test of every model of every realisation against its leader (the
    replay's form; see the module docstring). Every model in the round is evaluated on
    every labeled item (the label checks), so Z is known for all of them; an eliminated
    model is not evaluated again."""

    def __init__(self, runs: int, models: int, delta: float) -> None:
        self.threshold = threshold(delta)
        self.drift = np.zeros((runs, models))
        self.spread = np.zeros((runs, models))
        self.log_wealth = np.zeros((runs, models))
        self.eliminated_at = np.full((runs, models), -1, dtype=np.int64)  # stream position
        self.loss_at_exit = np.full((runs, models), np.nan)

    def observe(
        self,
        position: int,
        rows: IntArray,
        mistakes: FloatArray,
        q: FloatArray,
        leaders: IntArray,
        losses: FloatArray,
        eta: float,
    ) -> BoolArray:
        """Labels on `rows` at this stream position (their `mistakes`, `q` and the leaders
        chosen before the coin): move each model's evidence, and take out of the round
        (L = +inf) the models it now says are behind. Returns the models eliminated."""
        in_round = np.isfinite(losses[rows])
        z = leader_increments(mistakes, leaders, q, in_round)
        self.drift[rows], self.spread[rows], self.log_wealth[rows] = grow_wealth(
            self.drift[rows], self.spread[rows], self.log_wealth[rows], z, position, eta
        )
        out: BoolArray = in_round & (self.log_wealth[rows] >= self.threshold)
        if out.any():
            run, model = np.nonzero(out)
            self.eliminated_at[rows[run], model] = position
            self.loss_at_exit[rows[run], model] = losses[rows[run], model]
            losses[rows[run], model] = np.inf
        return out


@dataclass(frozen=True)
class Evidence:
    """One round's elimination evidence, per model: the sums of Z and Z^2, the log-wealth,
    and whether the model has left the round (the service's form, stored with the round)."""

    drift: tuple[float, ...]
    spread: tuple[float, ...]
    log_wealth: tuple[float, ...]
    out: tuple[bool, ...]

    @classmethod
    def start(cls, n_models: int) -> Evidence:
        return cls((0.0,) * n_models, (0.0,) * n_models, (0.0,) * n_models, (False,) * n_models)

    @property
    def out_array(self) -> BoolArray:
        return np.asarray(self.out, dtype=bool)

    def joined(self) -> Evidence:
        """A candidate joins the round: its test starts now, at wealth 1 (a
        supermartingale started later is one still)."""
        return Evidence((*self.drift, 0.0), (*self.spread, 0.0), (*self.log_wealth, 0.0),
                        (*self.out, False))  # fmt: skip

    def without(self, model: int) -> Evidence:
        """Candidate `model` leaves the pool: its entries go, the others shift down."""

        def drop(values: Sequence[Any]) -> tuple[Any, ...]:
            return tuple(v for i, v in enumerate(values) if i != model)

        return Evidence(drop(self.drift), drop(self.spread), drop(self.log_wealth),
                        drop(self.out))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"drift": list(self.drift), "spread": list(self.spread),
                "log_wealth": list(self.log_wealth), "out": list(self.out)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        evidence = cls(tuple(float(x) for x in data["drift"]),
                       tuple(float(x) for x in data["spread"]),
                       tuple(float(x) for x in data["log_wealth"]),
                       tuple(bool(x) for x in data["out"]))  # fmt: skip
        sizes = {len(evidence.drift), len(evidence.spread), len(evidence.log_wealth),
                 len(evidence.out)}  # fmt: skip
        if len(sizes) != 1:
            raise ValueError("elimination evidence needs one entry per model in every field")
        return evidence


@dataclass(frozen=True)
class Verdict:
    """What one label did to the test: the evidence after it, the leader it was measured
    against, and the models it took out of the round (none, usually)."""

    evidence: Evidence
    leader: int
    eliminated: tuple[int, ...]


def eliminate_on_label(
    evidence: Evidence,
    mistakes: FloatArray,
    q: float,
    losses: FloatArray,
    step: int,
    delta: float,
) -> Verdict:
    """One label, as it is applied: `mistakes` ([f_i(x) != y] for every model), the q it
    was asked with, the round's `losses` before it and its step t (items seen so far).
    The leader is the lowest loss among the models in the round (the first on ties), the
    bet is capped at eta_t / 2 with the current t, and a model whose wealth reaches
    1 / delta leaves the round (see the module docstring for why this holds)."""
    out = evidence.out_array
    if out.all():
        raise ValueError("every model has left the round")
    leader = int(best_model(ranked_losses(losses, out)))
    eta = learning_rate(max(step, 1), len(out))
    z = leader_increments(mistakes, np.array(leader), np.array(q), ~out)
    drift, spread, log_wealth = grow_wealth(
        np.asarray(evidence.drift), np.asarray(evidence.spread),
        np.asarray(evidence.log_wealth), z, step, eta,
    )  # fmt: skip
    leaving = ~out & (log_wealth >= threshold(delta))
    after = Evidence(tuple(float(x) for x in drift), tuple(float(x) for x in spread),
                     tuple(float(x) for x in log_wealth),
                     tuple(bool(x) for x in out | leaving))  # fmt: skip
    return Verdict(after, leader, tuple(int(i) for i in np.flatnonzero(leaving)))
