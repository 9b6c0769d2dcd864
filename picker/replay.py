"""Offline replay: run a query rule over many random streams of a recorded pool at once.

Protocol (Karimi et al., AISTATS 2021, Section 5): a realisation draws `stream_size` items
without replacement, in random order; the method walks the stream once, decides online
which labels to ask for, and returns one model. All realisations advance in lock-step, one
stream position per iteration, each numpy call covering every realisation and model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from picker.baselines import disagrees, entropy_query_probability, random_query_probability
from picker.data import Pool
from picker.modelpicker import (
    BoolArray,
    FloatArray,
    IntArray,
    best_model,
    importance_weighted,
    learning_rate,
    posterior,
    query_probability_from_classes,
)

Method = Literal["modelpicker", "random", "entropy"]
METHODS: tuple[Method, ...] = ("modelpicker", "random", "entropy")
ProgressCallback = Callable[[int], None]
# How many stream positions to gather at once when counting each model's stream errors.
_ERROR_CHUNK = 256


@dataclass(frozen=True)
class ReplayOutcome:
    """Per realisation: the returned model, labels asked, final L, errors on the stream,
    and the model evaluations it needed (every model on every item of its stream)."""

    returned: IntArray
    labels: IntArray
    losses: FloatArray
    stream_errors: IntArray
    stream_size: int
    evaluations: IntArray


@dataclass(frozen=True)
class ReplayResult:
    method: str
    param: float | None
    labels: float
    identified: float
    gap: float
    runs: int
    evaluations: float  # model evaluations per realisation (one model on one item: 1)
    budget: int | None = None
    active_models: int | None = None  # the large-pool mode's active set (None: every model)

    def to_dict(self) -> dict[str, float | int | str | None]:
        result: dict[str, float | int | str | None] = {
            "method": self.method,
            "param": self.param,
            "labels": round(self.labels, 3),
            "identified": round(self.identified, 4),
            "gap": round(self.gap, 4),
            "runs": self.runs,
            "evaluations": round(self.evaluations, 1),
        }
        if self.budget is not None:
            result["budget"] = self.budget
        if self.active_models is not None:
            result["active_models"] = self.active_models
        return result

    @property
    def label(self) -> str:
        """The method as a plot's legend names it."""
        if self.active_models is None:
            return self.method
        return f"{self.method}, {self.active_models} active"


def draw_streams(n_items: int, stream_size: int, runs: int, rng: np.random.Generator) -> IntArray:
    """Each row: `stream_size` distinct item indices in random order."""
    if not 1 <= stream_size <= n_items:
        raise ValueError(f"stream size must be in [1, {n_items}], got {stream_size}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    order = np.argsort(rng.random((runs, n_items)), axis=1)
    result: IntArray = order[:, :stream_size].astype(np.int64)
    return result


def count_stream_errors(errors: BoolArray, streams: IntArray) -> IntArray:
    """Each model's number of mistakes on each realisation's stream, shape (runs, k)."""
    totals = np.zeros((streams.shape[0], errors.shape[1]), dtype=np.int64)
    for start in range(0, streams.shape[1], _ERROR_CHUNK):
        totals += errors[streams[:, start : start + _ERROR_CHUNK]].sum(axis=1)
    return totals


def _query_rule(
    method: Method, param: float, pool: Pool, streams: IntArray
) -> Callable[[int, IntArray, FloatArray], FloatArray]:
    """q for every realisation at step t, given its item's local classes and its L."""
    n_models = pool.n_models
    if method == "modelpicker":

        def modelpicker_q(step: int, compact: IntArray, losses: FloatArray) -> FloatArray:
            eta = learning_rate(step, n_models)
            return query_probability_from_classes(compact, posterior(losses, eta), param, eta)

        return modelpicker_q
    if method == "entropy":
        n_classes = pool.n_classes

        def entropy_q(step: int, compact: IntArray, losses: FloatArray) -> FloatArray:
            return entropy_query_probability(compact, param, n_classes)

        return entropy_q
    disagreement_items = disagrees(pool.compact())
    rate = param / np.maximum(1, disagreement_items[streams].sum(axis=1))

    def random_q(step: int, compact: IntArray, losses: FloatArray) -> FloatArray:
        return random_query_probability(compact, rate)

    return random_q


QueryProbabilities = Callable[[int, IntArray, FloatArray], FloatArray]
# Told of each position's labels: (position, which realisations asked, their rows of
# mistakes, their q, every realisation's L after the labels).
LabelHook = Callable[[int, BoolArray, FloatArray, FloatArray, FloatArray], None]


def walk_streams(
    streams: IntArray,
    errors: BoolArray,
    q_of: QueryProbabilities,
    weighs_by_q: bool,
    evaluations: Callable[[IntArray], IntArray],
    rng: np.random.Generator,
    on_step: ProgressCallback | None,
    on_labels: LabelHook | None = None,
) -> ReplayOutcome:
    """Walk every realisation's stream in lock-step: at each position, `q_of(position,
    items, losses)` gives each realisation's q, a coin per realisation asks for the label,
    and a label adds [wrong] / q to every model's loss (or [wrong], without `weighs_by_q`);
    `on_labels` then sees them (it may set a model's L to +inf: out of the round).
    `evaluations(labels)` counts the model evaluations of each realisation from its
    labels. The outcome returns each realisation's best model, ties broken with `rng`."""
    runs, stream_size = streams.shape
    losses = np.zeros((runs, errors.shape[1]))
    labels = np.zeros(runs, dtype=np.int64)
    for position in range(stream_size):
        items = streams[:, position]
        q = q_of(position, items, losses)
        asked = rng.random(runs) < q
        if asked.any():
            mistakes = errors[items[asked]].astype(np.float64)
            losses[asked] += importance_weighted(mistakes, q[asked]) if weighs_by_q else mistakes
            labels += asked
            if on_labels is not None:
                on_labels(position, asked, mistakes, q[asked], losses)
        if on_step is not None:
            on_step(1)
    return ReplayOutcome(
        returned=best_model(losses, rng),
        labels=labels,
        losses=losses,
        stream_errors=count_stream_errors(errors, streams),
        stream_size=stream_size,
        evaluations=evaluations(labels),
    )


def run_replay(
    pool: Pool,
    method: Method,
    param: float,
    stream_size: int,
    runs: int,
    rng: np.random.Generator,
    on_step: ProgressCallback | None = None,
) -> ReplayOutcome:
    """Replay `runs` realisations; param is gamma (modelpicker, entropy) or budget (random)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if not (np.isfinite(param) and param > 0):
        raise ValueError(f"{method} needs a parameter > 0, got {param}")
    streams = draw_streams(pool.n_items, stream_size, runs, rng)
    compact, errors = pool.compact(), pool.errors()
    query_rule = _query_rule(method, param, pool, streams)
    # ModelPicker weighs each label by 1/q (unbiased loss); the baselines count errors.
    return walk_streams(
        streams,
        errors,
        lambda position, items, losses: query_rule(position + 1, compact[items], losses),
        method == "modelpicker",
        lambda labels: np.full(runs, stream_size * pool.n_models, dtype=np.int64),
        rng,
        on_step,
    )


def identification(
    returned: IntArray, stream_errors: IntArray, stream_size: int
) -> tuple[float, float]:
    """(identification probability, accuracy gap in points) of the models returned per
    realisation, against the fewest mistakes on each realisation's stream."""
    fewest = stream_errors.min(axis=1)
    chosen = stream_errors[np.arange(returned.shape[0]), returned]
    gap = float(np.mean(100.0 * (chosen - fewest) / stream_size))
    return float(np.mean(chosen == fewest)), gap


def summarise(
    outcome: ReplayOutcome, method: str, param: float, active_models: int | None = None
) -> ReplayResult:
    """Identification probability, accuracy gap (points) and mean labels over realisations."""
    identified, gap = identification(outcome.returned, outcome.stream_errors, outcome.stream_size)
    return ReplayResult(
        method=method,
        param=float(param),
        labels=float(outcome.labels.mean()),
        identified=identified,
        gap=gap,
        runs=outcome.returned.shape[0],
        evaluations=float(outcome.evaluations.mean()),
        active_models=active_models,
    )


def replay(
    pool: Pool,
    method: Method,
    param: float,
    stream_size: int,
    runs: int,
    rng: np.random.Generator,
    on_step: ProgressCallback | None = None,
) -> ReplayResult:
    outcome = run_replay(pool, method, param, stream_size, runs, rng, on_step)
    return summarise(outcome, method, param)
