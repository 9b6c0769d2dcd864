"""CODA (Kay et al., ICCV 2025), as its authors' code computes it, for hard predictions.

Each model h has a Dirichlet per row of its confusion matrix, prior

    A_h = m (B + (1 - alpha) M_h),   B = 1 on the diagonal, 1 / (C - 1) off it,

with M_h model h's confusion matrix against the ensemble's consensus (the class most models
predict) and the published defaults alpha = 0.9, m = 2. A label y on item x adds
w = 0.01 to row y of every model at the class it predicted. Class c's accuracy of model h is
Beta(A_h[c, c], sum_j A_h[c, j] - A_h[c, c]); P(h is best on row c) is the probability
that its draw is the highest, by numeric integration on 256 points (trapezoids, as the
reference); P(best) mixes the rows by the estimated class prior pi_hat, the mean over the
pool of each item's class probabilities pi_hat(x)_c ∝ sum_h A_h[c, h(x)].

The next item maximises the expected information gain on P(best): each hypothetical label c
on x adds 1 (not w) to row c of every model (its diagonal if the model predicted c, else the
rest of the row), weighted by pi_hat(x)_c; over unlabeled items on which the models disagree
(every unlabeled item once none is left), ties at random.

Two differences in arithmetic, not in what is computed: float64 instead of float32 (so the
reference's clamp of the log product to ±80 is left out), and the hypothetical rows are
computed once per distinct pattern of "which models predicted c" instead of once per item.
The integral for P(h best) factorises as sum_x w_x prod_j F_j(x) f_h(x) / F_h(x), so every
pattern's probabilities come from two matrix products.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from picker.modelpicker import BoolArray, FloatArray, IntArray
from picker.pooled import PoolSelector, pick_max, vote_counts

GRID_POINTS = 256
MULTIPLIER = 2.0
LABEL_WEIGHT = 0.01
_CDF_FLOOR = 1e-30
_PROB_FLOOR = 1e-12

_GRID = np.linspace(1e-6, 1 - 1e-6, GRID_POINTS)
_DX = np.diff(_GRID)
_TRAPZ = np.zeros(GRID_POINTS)
_TRAPZ[:-1] += _DX / 2
_TRAPZ[1:] += _DX / 2
_LOG_X, _LOG_1MX = np.log(_GRID), np.log1p(-_GRID)
_LGAMMA = np.vectorize(math.lgamma, otypes=[np.float64])


def beta_pdf_cdf(alpha: FloatArray, beta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Beta densities on the grid and their cumulative trapezoid integrals, shape (..., P)."""
    log_norm = _LGAMMA(alpha + beta) - _LGAMMA(alpha) - _LGAMMA(beta)
    log_pdf = (
        (alpha[..., None] - 1) * _LOG_X + (beta[..., None] - 1) * _LOG_1MX + log_norm[..., None]
    )
    pdf = np.exp(log_pdf)
    cdf = np.zeros_like(pdf)
    cdf[..., 1:] = np.cumsum((pdf[..., 1:] + pdf[..., :-1]) * (_DX / 2), axis=-1)
    return pdf, cdf


def pbest_direct(alpha: FloatArray, beta: FloatArray) -> FloatArray:
    """P(model h draws the highest) for Beta(alpha_h, beta_h) over the last axis (k models).

    The reference's computation, term by term; `pbest_patterns` is the fast equivalent.
    """
    pdf, cdf = beta_pdf_cdf(alpha, beta)
    log_cdf = np.log(np.maximum(cdf, _CDF_FLOOR))
    others = np.exp(log_cdf.sum(axis=-2, keepdims=True) - log_cdf)
    prob = (pdf * others) @ _TRAPZ
    result: FloatArray = prob / np.maximum(prob.sum(axis=-1, keepdims=True), _CDF_FLOOR)
    return result


def pbest_patterns(alpha: FloatArray, beta: FloatArray, patterns: BoolArray) -> FloatArray:
    """P(best) on one row after a hypothetical label, for each pattern of models hit.

    alpha, beta: (k,) the row's Beta parameters now; patterns (P, k): True where the model
    predicted the hypothetical class (its alpha grows by 1), False where it did not (its beta
    grows by 1). Returns (P, k).
    """
    pdf_hit, cdf_hit = beta_pdf_cdf(alpha + 1.0, beta)
    pdf_miss, cdf_miss = beta_pdf_cdf(alpha, beta + 1.0)
    cdf_hit, cdf_miss = np.maximum(cdf_hit, _CDF_FLOOR), np.maximum(cdf_miss, _CDF_FLOOR)
    hits = patterns.astype(np.float64)
    log_all = hits @ np.log(cdf_hit) + (1.0 - hits) @ np.log(cdf_miss)
    weighted = np.exp(log_all - log_all.max(axis=1, keepdims=True)) * _TRAPZ
    prob = hits * (weighted @ (pdf_hit / cdf_hit).T) + (1.0 - hits) * (
        weighted @ (pdf_miss / cdf_miss).T
    )
    result: FloatArray = prob / np.maximum(prob.sum(axis=1, keepdims=True), _CDF_FLOOR)
    return result


def entropy_bits(p: FloatArray) -> FloatArray:
    q = np.maximum(p, _PROB_FLOOR)
    result: FloatArray = -(q * np.log2(q)).sum(axis=-1)
    return result


def diagonal_betas(dirichlets: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(C, k) Beta parameters of each model's per-class accuracy from (k, C, C) Dirichlets."""
    diag = np.diagonal(dirichlets, axis1=1, axis2=2)
    return diag.T.copy(), (dirichlets.sum(axis=2) - diag).T.copy()


def consensus_prior(predictions: IntArray, n_classes: int, alpha: float) -> FloatArray:
    """m (B + (1 - alpha) M_h): the Dirichlets before any label, shape (k, C, C)."""
    n, k = predictions.shape
    consensus = vote_counts(predictions, n_classes).argmax(axis=1)
    counts = np.zeros((k, n_classes, n_classes))
    np.add.at(counts, (np.tile(np.arange(k), n), np.repeat(consensus, k), predictions.ravel()), 1.0)
    confusion = counts / np.maximum(counts.sum(axis=2, keepdims=True), 1e-6)
    base = np.full((n_classes, n_classes), 1.0 / (n_classes - 1))
    np.fill_diagonal(base, 1.0)
    result: FloatArray = MULTIPLIER * (base[None] + (1.0 - alpha) * confusion)
    return result


class Coda(PoolSelector):
    method: ClassVar[str] = "coda"
    default_param: ClassVar[float | None] = 0.9

    def _prepare(self) -> None:
        alpha = float(self.param if self.param is not None else 0.9)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"coda needs 0 <= alpha <= 1, got {alpha}")
        self._prior = consensus_prior(self.predictions, self.n_classes, alpha)
        self._disagrees = self.disagreement()
        # Per class c: the distinct patterns of "which models predicted c" and each item's.
        self._patterns: list[BoolArray] = []
        self._pattern_of: list[IntArray] = []
        for c in range(self.n_classes):
            unique, inverse = np.unique(self.predictions == c, axis=0, return_inverse=True)
            self._patterns.append(unique)
            self._pattern_of.append(inverse.reshape(-1).astype(np.int64))
        self._models = np.arange(self.n_models)

    def _refresh(self) -> None:
        self.dirichlets = self._prior.copy()
        for item, label in self.labels.items():
            self.dirichlets[self._models, label, self.predictions[item]] += LABEL_WEIGHT
        self._update_class_prior()

    def _on_label(self, item: int, label: int) -> None:
        self.dirichlets[self._models, label, self.predictions[item]] += LABEL_WEIGHT
        self._update_class_prior()

    def _update_class_prior(self) -> None:
        # pi_hat(x)_c ∝ sum_h A_h[c, h(x)]; pi_hat is their mean over the pool.
        by_prediction = self.dirichlets.transpose(0, 2, 1)[self._models, self.predictions]
        per_item = by_prediction.sum(axis=1)
        self.item_class_prior = per_item / np.maximum(per_item.sum(axis=1, keepdims=True), 1e-12)
        total = self.item_class_prior.sum(axis=0)
        self.class_prior = total / total.sum()

    def row_pbest(self) -> FloatArray:
        """(C, k): P(h has the highest accuracy on class c)."""
        alpha, beta = diagonal_betas(self.dirichlets)
        return pbest_direct(alpha, beta)

    def accuracies(self) -> FloatArray:
        """P(best): the rows' probabilities mixed by the class prior."""
        result: FloatArray = self.class_prior @ self.row_pbest()
        return result

    def information_gain(self) -> FloatArray:
        """Expected information gain (bits) on P(best) of labeling each item."""
        alpha, beta = diagonal_betas(self.dirichlets)
        rows_before = pbest_direct(alpha, beta)
        mixture = self.class_prior @ rows_before
        after = np.zeros((self.n_items, self.n_classes))
        for c in range(self.n_classes):
            rows_after = pbest_patterns(alpha[c], beta[c], self._patterns[c])
            mixed = mixture + self.class_prior[c] * (rows_after - rows_before[c])
            after[:, c] = entropy_bits(mixed)[self._pattern_of[c]]
        result: FloatArray = entropy_bits(mixture) - (self.item_class_prior * after).sum(axis=1)
        return result

    def choose(self, rng: np.random.Generator) -> int | None:
        unlabeled = ~self._labeled
        if not unlabeled.any():
            return None
        candidates = self._disagrees & unlabeled
        eligible = candidates if candidates.any() else unlabeled
        return pick_max(self.information_gain(), eligible, rng, rtol=1e-8)
