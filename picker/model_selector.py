"""Model Selector (Okanovic et al., AISTATS 2025), as its authors' code computes it.

Belief pi(h) ∝ g^(#correct_h), g = (1 - eps) / eps, uniform prior, hard predictions. The
next item minimises the expected entropy of the belief after its label, the label taken
uniform over the C classes: sum_c (1/C) H(pi^{x,c}), pi^{x,c}(h) ∝ pi(h) g^[h(x) = c],
over unlabeled items on which the models disagree; ties at random. The returned model has
the most correct labels, ties at random. Published default eps = 0.46 (its authors tune eps
per data set, 0.35–0.49, by a grid search against the models' majority vote).

The expected entropy has a closed form per item. With p the belief, S_c the belief mass of
the models predicting c on x, Z_c = 1 + (g - 1) S_c, A = sum_h p_h log p_h and A_c the same
sum over the models predicting c:

    H(pi^{x,c}) = log Z_c - (A + (g - 1) A_c + g log(g) S_c) / Z_c,

which is -A (the entropy of p itself) for a class no model predicts. Only classes some model
predicts are computed: O(n k) per step.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from picker.modelpicker import FloatArray, IntArray, compact_classes
from picker.pooled import PoolSelector, pick_max


def log_belief(correct: IntArray, log_g: float) -> FloatArray:
    """log pi(h) = #correct_h log g, normalised."""
    logits = correct.astype(np.float64) * log_g
    logits -= logits.max()
    result: FloatArray = logits - math.log(float(np.exp(logits).sum()))
    return result


def expected_entropy(compact: IntArray, log_p: FloatArray, g: float, n_classes: int) -> FloatArray:
    """sum_c (1/C) H(pi^{x,c}) per item, in nats; `compact` holds each item's local classes."""
    n, k = compact.shape
    slots = min(k, n_classes)
    p = np.exp(log_p)
    plogp = np.where(p > 0, p * log_p, 0.0)
    a_all = float(plogp.sum())
    ids = (compact + (np.arange(n, dtype=np.int64) * k)[:, None]).ravel()
    mass = np.bincount(ids, weights=np.broadcast_to(p, compact.shape).ravel(), minlength=n * k)
    mass_plogp = np.bincount(
        ids, weights=np.broadcast_to(plogp, compact.shape).ravel(), minlength=n * k
    )
    s_c = mass.reshape(n, k)[:, :slots]
    a_c = mass_plogp.reshape(n, k)[:, :slots]
    z_c = 1.0 + (g - 1.0) * s_c
    per_class = np.log(z_c) - (a_all + (g - 1.0) * a_c + g * math.log(g) * s_c) / z_c
    result: FloatArray = (per_class.sum(axis=1) + (n_classes - slots) * -a_all) / n_classes
    return result


class ModelSelector(PoolSelector):
    method: ClassVar[str] = "model-selector"
    default_param: ClassVar[float | None] = 0.46

    def _prepare(self) -> None:
        eps = float(self.param if self.param is not None else 0.46)
        if not 0.0 < eps < 0.5:
            raise ValueError(f"model-selector needs 0 < eps < 0.5, got {eps}")
        self.g = (1.0 - eps) / eps
        self._compact = compact_classes(self.predictions)
        self._disagrees = self.disagreement()

    def _refresh(self) -> None:
        self._correct = self.correct_counts()

    def _on_label(self, item: int, label: int) -> None:
        self._correct = self._correct + (self.predictions[item] == label)

    def belief(self) -> FloatArray:
        result: FloatArray = np.exp(log_belief(self._correct, math.log(self.g)))
        return result

    def choose(self, rng: np.random.Generator) -> int | None:
        eligible = self._disagrees & ~self._labeled
        if not eligible.any():
            return None
        log_p = log_belief(self._correct, math.log(self.g))
        entropy = expected_entropy(self._compact, log_p, self.g, self.n_classes)
        return pick_max(-entropy, eligible, rng)

    def accuracies(self) -> FloatArray:
        """Correct labels per model (the ranking Model Selector returns by)."""
        result: FloatArray = self._correct.astype(np.float64)
        return result
