"""The large-pool mode of ModelPicker: evaluate few models on every item, label-check all.

With k in the hundreds or thousands, running every model on every item costs k
evaluations an item, though ModelPicker's query probability is decided by the few models
that carry posterior weight. In this mode:

- an **active set** of K models (the K lowest losses L, ties broken by a fixed random
  order per round) is evaluated on every item, and q_t is ModelPicker's query probability
  over them, with the posterior over the active set (the pool's posterior restricted and
  renormalised) and the pool's learning rate eta_t = sqrt(ln k / (2 t));
- every item's q_t is floored at eta_t, also where the active models agree (ModelPicker
  asks nothing there): a model outside the active set may disagree with them, and only a
  label can show it;
- every model of the pool is evaluated on each labeled item, and its loss moves by
  [f_i(x_t) != y_t] / q_t, as in ModelPicker.

**Unbiased for every model.** q_t is decided before the coin z_t ~ Bernoulli(q_t) and is
> 0 on every item, so E[z_t [f_i(x_t) != y_t] / q_t | past] = [f_i(x_t) != y_t] for every
model i, active or not: L_i minus model i's mistakes on the items seen is a martingale with
mean 0, whatever the active sets were (they depend on the past only). Full ModelPicker
has q_t = 0 where all models agree, so its L_i leaves out the mistakes they all make there,
which changes no difference between models; here nothing is left out.

Evaluations per item: K, plus k - K on the items that get a label. The floor costs about
sum_t eta_t = sqrt(2 t ln k) labels over t items (263 at t = 5,000, k = 1,000).
"""

from __future__ import annotations

import numpy as np

from picker.data import Pool
from picker.modelpicker import (
    FloatArray,
    IntArray,
    compact_classes,
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


def _largest_product(low: FloatArray, high: FloatArray) -> FloatArray:
    """max of l (1 - l) over l in [low, high] (elementwise)."""
    ends = np.maximum(low * (1.0 - low), high * (1.0 - high))
    result: FloatArray = np.where((low <= 0.5) & (high >= 0.5), 0.25, ends)
    return result


def variance_bound(compact: IntArray, weights: FloatArray, outside: FloatArray) -> FloatArray:
    """The largest v_t = max_c lbar_c (1 - lbar_c) that the models outside the active set
    could make, whatever they predict: `weights` are the active models' weights in the
    pool's posterior (rows: items; columns: the active models; their local classes in
    `compact`), `outside` the posterior mass of the rest. lbar_c lies in [lbar_c^A,
    lbar_c^A + outside] for a class the active models predict, and in [1 - outside, 1]
    for any other. With no mass outside, this is ModelPicker's v_t over the active set."""
    rows, k = compact.shape
    index = np.arange(rows)
    flat = (compact + (index * k)[:, None]).ravel()
    class_mass = np.bincount(flat, weights=weights.ravel(), minlength=rows * k).reshape(rows, k)
    top = class_mass.argmax(axis=1)
    lbar = weights.sum(axis=1, keepdims=True) - class_mass
    # The top class's lbar summed from the weights that disagree with it, as ModelPicker's.
    lbar[index, top] = np.where(compact != top[:, None], weights, 0.0).sum(axis=1)
    predicted = np.zeros((rows, k), dtype=bool)
    predicted[index[:, None], compact] = True
    inside = np.where(predicted, _largest_product(lbar, lbar + outside[:, None]), 0.0)
    other = _largest_product(1.0 - outside, np.ones(rows))
    result: FloatArray = np.maximum(inside.max(axis=1), other)
    return result


def active_query_probability(
    active_predictions: IntArray,
    active_weights: FloatArray,
    outside: FloatArray,
    gamma: float,
    eta: float,
) -> FloatArray:
    """q_t = min(1, max(gamma v, eta_t)) with v the largest the models outside the active
    set could make (`variance_bound`), on every item: the floor also where the active
    models agree."""
    v = variance_bound(compact_classes(active_predictions), active_weights, outside)
    result: FloatArray = np.minimum(1.0, np.maximum(gamma * v, eta))
    return result


def run_active_replay(
    pool: Pool,
    gamma: float,
    active_models: int,
    stream_size: int,
    runs: int,
    rng: np.random.Generator,
    on_step: ProgressCallback | None = None,
) -> ReplayOutcome:
    """`runs` realisations of the large-pool mode (as `picker.replay.run_replay`): the
    evaluations it needed are counted per realisation."""
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"modelpicker needs a parameter > 0, got {gamma}")
    k = pool.n_models
    streams = draw_streams(pool.n_items, stream_size, runs, rng)
    errors = pool.errors()
    order = rng.random((runs, k))
    rows = np.arange(runs)[:, None]

    def q_of(position: int, items: IntArray, losses: FloatArray) -> FloatArray:
        active = active_set(losses, active_models, order)
        eta = learning_rate(position + 1, k)
        weights = posterior(losses, eta)[rows, active]
        outside = np.maximum(0.0, 1.0 - weights.sum(axis=1))
        return active_query_probability(
            pool.predictions[items[:, None], active], weights, outside, gamma, eta
        )

    def evaluations(labels: IntArray) -> IntArray:
        return stream_size * active_models + labels * (k - active_models)

    return walk_streams(streams, errors, q_of, True, evaluations, rng, on_step)


def run_modelpicker(
    pool: Pool,
    gamma: float,
    active_models: int | None,
    stream_size: int,
    runs: int,
    rng: np.random.Generator,
    on_step: ProgressCallback | None = None,
) -> ReplayOutcome:
    """ModelPicker's replay with every model on every item (`active_models` None) or in
    the large-pool mode with that many active models."""
    if active_models is None:
        return run_replay(pool, "modelpicker", gamma, stream_size, runs, rng, on_step)
    return run_active_replay(pool, gamma, active_models, stream_size, runs, rng, on_step)
