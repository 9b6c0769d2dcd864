"""Baseline query rules the replay tool compares ModelPicker against.

Both label only items on which the models disagree and return the model with the fewest
errors on the labels (Karimi et al., AISTATS 2021, Section 5: "random sampling" and
"query by committee" with vote entropy).
"""

from __future__ import annotations

import numpy as np

from picker.modelpicker import BoolArray, FloatArray, IntArray


def disagrees(compact: IntArray) -> BoolArray:
    """True where the models do not all predict the same class."""
    result: BoolArray = compact.max(axis=-1) > 0
    return result


def random_query_probability(compact: IntArray, rate: float | FloatArray) -> FloatArray:
    """q = rate on disagreement items, 0 elsewhere; rate = budget / #disagreements."""
    result: FloatArray = np.where(disagrees(compact), np.minimum(1.0, rate), 0.0)
    return result


def vote_entropy(compact: IntArray) -> FloatArray:
    """H(vote histogram) in bits: the entropy of the share of models voting each class."""
    k = compact.shape[-1]
    batch_shape = compact.shape[:-1]
    rows = compact.reshape(-1, k)
    n_rows = rows.shape[0]
    flat_ids = (rows + (np.arange(n_rows, dtype=np.int64) * k)[:, None]).ravel()
    shares = np.bincount(flat_ids, minlength=n_rows * k).reshape(n_rows, k) / k
    terms = np.where(shares > 0, -shares * np.log2(np.where(shares > 0, shares, 1.0)), 0.0)
    result: FloatArray = terms.sum(axis=1).reshape(batch_shape)
    return result


def entropy_query_probability(compact: IntArray, gamma: float, n_classes: int) -> FloatArray:
    """q = min(1, gamma H(votes) / log2 C); H = 0, hence q = 0, when the models agree."""
    if n_classes < 2:
        raise ValueError(f"entropy sampling needs at least 2 classes, got {n_classes}")
    result: FloatArray = np.minimum(1.0, gamma * vote_entropy(compact) / np.log2(n_classes))
    return result
