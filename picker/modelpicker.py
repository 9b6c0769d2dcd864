"""ModelPicker's query rule and update, as pure vectorised functions.

Reference: M. R. Karimi, N. M. Gürel, B. Karlaš, J. Rausch, C. Zhang, A. Krause,
"Online Active Model Selection for Pre-trained Classifiers", AISTATS 2021
(ease.ml/ModelPicker). The formulas follow the authors' experiment code.

Every function takes arrays whose last axis runs over the k models and any leading axes
over items or realisations, so the same code serves one item, a batch of items and the
replay tool's many realisations at once. Nothing here mutates its inputs.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
# Above this class id, the single-item path relabels classes instead of a dense bincount.
_DENSE_CLASS_LIMIT = 1 << 16


def learning_rates(steps: npt.ArrayLike, n_models: int) -> FloatArray:
    """eta_t = sqrt(ln k / (2 t)), where t >= 1 counts the items seen in this round.

    The rate is computed afresh from t; dividing the previous rate by sqrt(t) instead (a
    known re-implementation mistake) collapses it to 0 and freezes the posterior.
    """
    t = np.asarray(steps, dtype=np.float64)
    if np.any(t < 1):
        raise ValueError("steps must be >= 1")
    if n_models < 2:
        raise ValueError(f"ModelPicker needs at least 2 models, got {n_models}")
    result: FloatArray = np.sqrt(np.log(n_models) / (2.0 * t))
    return result


def learning_rate(step: int, n_models: int) -> float:
    """eta_t for one step t (see `learning_rates`)."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if n_models < 2:
        raise ValueError(f"ModelPicker needs at least 2 models, got {n_models}")
    return math.sqrt(math.log(n_models) / (2.0 * step))


def posterior(losses: FloatArray, eta: float | FloatArray) -> FloatArray:
    """w_i = exp(-eta (L_i - min_j L_j)) / Z: how likely model i is the best.

    Shifting by the minimum keeps the best model's term at exactly 1, so the normaliser
    never underflows; the other terms may underflow to exactly 0, as in the reference.
    `eta` is a scalar or broadcasts against the leading axes of `losses`.
    """
    losses = np.asarray(losses, dtype=np.float64)
    scale = -eta if isinstance(eta, float) else -np.asarray(eta, dtype=np.float64)[..., None]
    weights: FloatArray = (losses - losses.min(axis=-1, keepdims=True)) * scale
    np.exp(weights, out=weights)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights


def compact_classes(predictions: npt.ArrayLike) -> IntArray:
    """Relabel each row's predicted classes as 0..m-1 (m <= k distinct classes).

    Only classes some model predicts can make a label informative, so the query rule
    works on these local ids: its cost depends on k, never on the number of classes.
    """
    preds = np.asarray(predictions, dtype=np.int64)
    order = np.argsort(preds, axis=-1, kind="stable")
    ordered = np.take_along_axis(preds, order, axis=-1)
    starts_new_class = np.ones(ordered.shape, dtype=np.int64)
    starts_new_class[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    rank_in_order = np.cumsum(starts_new_class, axis=-1) - 1
    compact = np.empty_like(rank_in_order)
    np.put_along_axis(compact, order, rank_in_order, axis=-1)
    return compact


def disagreement_variance(compact: IntArray, weights: FloatArray) -> FloatArray:
    """v_t = max_c lbar_c (1 - lbar_c), lbar_c = sum_i w_i [f_i(x_t) != c].

    With a_c = sum_i w_i [f_i = c] (a bincount over the predicted classes) and A = sum_c a_c,
    lbar_c = A - a_c and 1 - lbar_c = a_c. For the top class, A - a_c would cancel, so its
    lbar is summed exactly from the weights of the models that disagree with it: models
    whose weight underflowed to 0 then give v = 0 exactly, and tiny non-zero weights are
    not rounded away. (`item_query_probability` is the same formula for one item.)
    """
    k = compact.shape[-1]
    batch_shape = compact.shape[:-1]
    rows = compact.reshape(-1, k)
    n_rows = rows.shape[0]
    row_weights = np.broadcast_to(weights, compact.shape).reshape(n_rows, k)
    row_index = np.arange(n_rows, dtype=np.int64)
    flat_ids = (rows + (row_index * k)[:, None]).ravel()
    class_mass = np.bincount(flat_ids, weights=row_weights.ravel(), minlength=n_rows * k)
    class_mass = class_mass.reshape(n_rows, k)
    top = class_mass.argmax(axis=1)
    top_lbar = np.where(rows != top[:, None], row_weights, 0.0).sum(axis=1)
    top_mass = class_mass[row_index, top]
    products = class_mass * (class_mass.sum(axis=1, keepdims=True) - class_mass)
    products[row_index, top] = top_mass * top_lbar
    result: FloatArray = products.max(axis=1).reshape(batch_shape)
    return result


def floored_probability(raw: FloatArray, eta: float | FloatArray) -> FloatArray:
    """q = min(1, raw); where q > 0, q = min(1, max(q, eta)): never query with a tiny q."""
    capped = np.minimum(1.0, raw)
    floored = np.minimum(1.0, np.maximum(capped, eta))
    result: FloatArray = np.where(capped > 0.0, floored, 0.0)
    return result


def query_probability_from_classes(
    compact: IntArray, weights: FloatArray, gamma: float, eta: float | FloatArray
) -> FloatArray:
    """q_t = min(1, gamma v_t), floored at eta_t; 0 when every model predicts one class."""
    return floored_probability(gamma * disagreement_variance(compact, weights), eta)


def query_probability(
    predictions: npt.ArrayLike, weights: FloatArray, gamma: float, eta: float | FloatArray
) -> FloatArray:
    """ModelPicker's query probability for items given as predicted classes (..., k)."""
    return query_probability_from_classes(compact_classes(predictions), weights, gamma, eta)


def item_query_probability(
    predictions: IntArray, weights: FloatArray, gamma: float, eta: float
) -> float:
    """q_t for one item (k predicted class ids >= 0): the serving hot path.

    Same value as `query_probability`, in a few numpy calls: a bincount over the raw class
    ids gives a_c; v = max_c a_c (A - a_c) with A = sum_c a_c, except that the top class's
    other mass is summed exactly from the weights of the models that disagree with it.
    """
    if predictions.max() >= _DENSE_CLASS_LIMIT:
        predictions = compact_classes(predictions)
    class_mass = np.bincount(predictions, weights=weights)
    top = int(class_mass.argmax())
    products = class_mass * (class_mass.sum() - class_mass)
    products[top] = class_mass[top] * weights[predictions != top].sum()
    raw = gamma * float(products.max())
    if raw <= 0.0:
        return 0.0
    return min(1.0, max(raw, eta))


def draw_queries(q: npt.ArrayLike, rng: np.random.Generator) -> BoolArray:
    """The coin flip, kept apart from q: ask for each label with probability q."""
    q_array = np.asarray(q, dtype=np.float64)
    result: BoolArray = rng.random(q_array.shape) < q_array
    return result


def importance_weighted(mistakes: npt.ArrayLike, q: float | npt.ArrayLike) -> FloatArray:
    """ModelPicker's importance-weighted loss of labels: [f_i(x) != y] / q, the one place
    it is written. `mistakes` is (..., k); `q` a scalar or one per leading row, each in
    (0, 1] (a label is only ever asked with q > 0)."""
    q_array = np.asarray(q, dtype=np.float64)
    if not np.all((q_array > 0.0) & (q_array <= 1.0)):
        raise ValueError(f"q must be in (0, 1], got {q_array}")
    weights = np.asarray(mistakes, dtype=np.float64)
    result: FloatArray = weights / (q_array[..., None] if q_array.ndim else q_array)
    return result


def loss_increments(predictions: npt.ArrayLike, label: int, q: float) -> FloatArray:
    """Per-model importance-weighted loss of one label: [f_i(x_t) != y_t] / q_t.

    Adding these to L in any order gives the same L (up to float rounding), so a store
    can apply delayed labels atomically as they come.
    """
    return importance_weighted(np.asarray(predictions, dtype=np.int64) != label, q)


def best_model(losses: FloatArray, rng: np.random.Generator | None = None) -> IntArray:
    """argmax_i w_i = argmin_i L_i (per leading index): the one rule for "the best model".
    Ties are broken uniformly at random with `rng` (the replay's returned model, as the
    reference does); without one, the first of the tied models (a view every replica must
    read alike: the service's best model)."""
    losses = np.asarray(losses, dtype=np.float64)
    is_tied_best = losses == losses.min(axis=-1, keepdims=True)
    if rng is None:
        first: IntArray = is_tied_best.argmax(axis=-1).astype(np.int64)
        return first
    tie_break = np.where(is_tied_best, rng.random(losses.shape), -1.0)
    result: IntArray = tie_break.argmax(axis=-1).astype(np.int64)
    return result
