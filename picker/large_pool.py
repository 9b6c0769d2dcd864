"""The large-pool mode of ModelPicker: evaluate few models on every item, label-check all,
eliminate by evidence.

With k in the hundreds or thousands, running every model on every item costs k
evaluations an item, though ModelPicker's query probability is decided by the few models
that carry posterior weight. In this mode:

- an **active set** of K models (the K lowest losses L among the models still in the
  round, ties broken by the round's recall order: a prior's ranking or a random one) is
  evaluated on every item, and q_t is ModelPicker's query probability over them, with the
  posterior over the active set (the pool's posterior restricted and renormalised) and
  the pool's learning rate eta_t = sqrt(ln k / (2 t)). The active set stands in for the
  pool: while the posterior is flat it is a sample of it, and once it is peaked it holds
  the models with nearly all the weight. (Counting the mass outside as if it all
  disagreed, the cautious alternative, asked for a fifth more labels on the 1,000-
  candidate pool; the floor below is what keeps the outside honest.);
- every item's q_t is floored at eta_t (gamma eta_t / 2 above gamma 2: `floor`), also
  where the active models agree (ModelPicker asks nothing there): a model outside may
  disagree with them, and only a label can show it (kept when the round has shrunk to
  the active set: it costs no measurable labels, and keeps every loss unbiased for all
  the mistakes, shared ones included);
- every model still in the round is evaluated on each labeled item (the label check),
  and its loss moves by [f_i(x_t) != y_t] / q_t, as in ModelPicker;
- a model leaves the round when the elimination test (`Elimination`: a betting
  supermartingale against the leader, level delta) says it is behind; it is never
  evaluated, active or returned again.

**Unbiased for every model.** q_t is decided before the coin z_t ~ Bernoulli(q_t) and is
> 0 on every item, so E[z_t [f_i(x_t) != y_t] / q_t | past] = [f_i(x_t) != y_t] for
every model i, active or not: L_i minus model i's mistakes on the items seen is a
martingale with mean 0, whatever the active sets were (they depend on the past only),
and, stopped at the model's elimination (a bounded stopping time), its mean is still 0.
Full ModelPicker has q_t = 0 where all models agree, so its L_i leaves out the mistakes
they all make there, which changes no difference between models; here nothing is left
out.

Evaluations per item: K (or the models left, if fewer), plus the rest of the round on
the items that get a label. The floor costs about sum_t eta_t = sqrt(2 t ln k) labels
over t items (263 at t = 5,000, k = 1,000).
"""

from __future__ import annotations

import numpy as np

from picker.data import Pool
from picker.elimination import Elimination
from picker.modelpicker import (
    BoolArray,
    FloatArray,
    IntArray,
    best_model,
    compact_classes,
    disagreement_variance,
    learning_rate,
    posterior,
)
from picker.replay import (
    ProgressCallback,
    ReplayOutcome,
    draw_streams,
    run_replay,
    walk_streams,
)

# The elimination test's level: the chance that the round's best model ever leaves it.
DEFAULT_DELTA = 0.05
# The active set's size unless told (the service's `active_models` knob, `auto`: pools of
# at most this many candidates keep every candidate active). On the 1,000-candidate pool
# it needs 0.94x the full pool's labels and 0.044x its evaluations (README).
DEFAULT_ACTIVE_MODELS = 20


def active_set(losses: FloatArray, size: int, order: FloatArray) -> IntArray:
    """The `size` models with the lowest losses, per leading row (any order within);
    equal losses are ranked by `order` (one value per model in [0, 1): a fixed random
    order for the round, or a prior's ranking)."""
    losses = np.asarray(losses, dtype=np.float64)
    if not 2 <= size <= losses.shape[-1]:
        raise ValueError(f"the active set needs 2 to {losses.shape[-1]} models, got {size}")
    if size == losses.shape[-1]:
        every: IntArray = np.broadcast_to(np.arange(size), losses.shape).copy()
        return every
    # Losses only grow in steps of 1/q >= 1, so an order in [0, 1e-6) only breaks ties.
    ranked = losses + 1e-6 * np.asarray(order, dtype=np.float64)
    chosen: IntArray = np.argpartition(ranked, size - 1, axis=-1)[..., :size]
    return chosen


def active_query_probability(
    active_predictions: IntArray,
    active_weights: FloatArray,
    gamma: float,
    eta: float | FloatArray,
) -> FloatArray:
    """q_t = min(1, max(gamma v_t, floor_t)) on every item: v_t is ModelPicker's over the
    active set, with its models' posterior weights renormalised to sum to 1 (the active
    set stands in for the pool: at first a random or recalled sample of it, then its
    leaders), and the floor (`floor`) applies also where the active models agree."""
    weights = active_weights / active_weights.sum(axis=-1, keepdims=True)
    v = disagreement_variance(compact_classes(active_predictions), weights)
    result: FloatArray = np.minimum(1.0, np.maximum(gamma * v, floor(gamma, eta)))
    return result


def floor(gamma: float, eta: float | FloatArray) -> FloatArray:
    """Every item's least query probability: eta_t, and gamma eta_t / 2 above gamma 2, so
    that as gamma grows every item gets a label and every loss becomes exact (the models
    outside the active set are seen only through labels: without this, a larger gamma
    would buy labels only where the active models disagree). Always >= eta_t, which the
    elimination's bets rely on."""
    result: FloatArray = np.minimum(1.0, np.asarray(eta, dtype=np.float64) * max(1.0, gamma / 2.0))
    return result


def recall_order(
    prior: FloatArray | None, models: int, runs: int, rng: np.random.Generator
) -> FloatArray:
    """Each realisation's tie order in [0, 1) (see `active_set`): with a `prior` (one score
    per model, higher is better, such as an offline validation accuracy), models rank by
    it, equal scores in random order; without one, a random order. Before any label every
    loss is 0, so this order alone is the first active set: the recall."""
    noise = rng.random((runs, models))
    if prior is None:
        return noise
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (models,) or not np.all(np.isfinite(prior)):
        raise ValueError(f"the prior needs one finite score per model ({models})")
    rank = np.lexsort((noise, np.broadcast_to(-prior, noise.shape)), axis=-1)
    order = np.empty_like(noise)
    np.put_along_axis(order, rank, np.broadcast_to(np.arange(models) / models, noise.shape), -1)
    return order


def run_active_replay(
    pool: Pool,
    gamma: float,
    active_models: int,
    stream_size: int,
    runs: int,
    rng: np.random.Generator,
    on_step: ProgressCallback | None = None,
    delta: float | None = None,
    prior: FloatArray | None = None,
) -> ReplayOutcome:
    """`runs` realisations of the large-pool mode (as `picker.replay.run_replay`): the
    evaluations it needed are counted per realisation. With `delta`, models leave the
    round by the elimination test (`Elimination`) at that level; with `prior`, the first
    active set is recalled by it (`recall_order`). The outcome's L is +inf for the models
    that left."""
    return ActiveReplay(pool, gamma, active_models, runs, rng, delta, prior).walk(
        stream_size, on_step
    )


class ActiveReplay:
    """One large-pool replay: the round's state per realisation (its streams, evaluations
    and `elimination` evidence, kept for inspection), walked by walk_streams."""

    def __init__(
        self,
        pool: Pool,
        gamma: float,
        active_models: int,
        runs: int,
        rng: np.random.Generator,
        delta: float | None,
        prior: FloatArray | None,
    ) -> None:
        if not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"modelpicker needs a parameter > 0, got {gamma}")
        self.pool, self.gamma, self.size, self.rng = pool, gamma, active_models, rng
        self.runs = runs
        self.prior = prior
        self.elimination = Elimination(runs, pool.n_models, delta) if delta else None
        self.evaluations = np.zeros(runs, dtype=np.int64)
        self.leaders = np.zeros(runs, dtype=np.int64)
        self.in_round = np.full(runs, pool.n_models, dtype=np.int64)
        self.eta = 1.0

    def walk(self, stream_size: int, on_step: ProgressCallback | None) -> ReplayOutcome:
        self.streams = draw_streams(self.pool.n_items, stream_size, self.runs, self.rng)
        self.order = recall_order(self.prior, self.pool.n_models, self.runs, self.rng)
        return walk_streams(
            self.streams,
            self.pool.errors(),
            self.q_of,
            True,
            lambda labels: self.evaluations.copy(),
            self.rng,
            on_step,
            self.on_labels if self.elimination is not None else self.count_checks,
        )

    def q_of(self, position: int, items: IntArray, losses: FloatArray) -> FloatArray:
        k = self.pool.n_models
        active = active_set(losses, self.size, self.order)
        self.eta = learning_rate(position + 1, k)
        rows = np.arange(self.runs)[:, None]
        weights = posterior(losses, self.eta)[rows, active]
        self.in_round = np.isfinite(losses).sum(axis=1)
        self.leaders = best_model(losses)
        self.evaluations += np.minimum(self.size, self.in_round)
        predictions = self.pool.predictions[items[:, None], active]
        return active_query_probability(predictions, weights, self.gamma, self.eta)

    def count_checks(
        self, position: int, asked: BoolArray, mistakes: FloatArray, q: FloatArray,
        losses: FloatArray,
    ) -> None:  # fmt: skip
        self.evaluations[asked] += np.maximum(0, self.in_round[asked] - self.size)

    def on_labels(
        self, position: int, asked: BoolArray, mistakes: FloatArray, q: FloatArray,
        losses: FloatArray,
    ) -> None:  # fmt: skip
        self.count_checks(position, asked, mistakes, q, losses)
        assert self.elimination is not None
        rows = np.flatnonzero(asked)
        self.elimination.observe(position, rows, mistakes, q, self.leaders[rows], losses, self.eta)


def run_modelpicker(
    pool: Pool,
    gamma: float,
    active_models: int | None,
    stream_size: int,
    runs: int,
    rng: np.random.Generator,
    on_step: ProgressCallback | None = None,
    delta: float | None = None,
    prior: FloatArray | None = None,
) -> ReplayOutcome:
    """ModelPicker's replay with every model on every item (`active_models` None) or in
    the large-pool mode with that many active models (and elimination at `delta`)."""
    if active_models is None:
        return run_replay(pool, "modelpicker", gamma, stream_size, runs, rng, on_step)
    return run_active_replay(
        pool, gamma, active_models, stream_size, runs, rng, on_step, delta, prior
    )
