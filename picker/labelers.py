"""How reliable each labeler is: Dawid and Skene's model with one accuracy per labeler.

Reference: A. P. Dawid, A. M. Skene, "Maximum Likelihood Estimation of Observer
Error-Rates Using the EM Algorithm", Journal of the Royal Statistical Society C 28(1),
1979. Their model gives each labeler a confusion matrix; with the few labels a round
holds per labeler, this module keeps one number per labeler (the "one-coin" form):

    P(labeler j says c | the item's true class is y) = a_j           if c = y
                                                     = (1 - a_j)/(C-1) otherwise

The evidence is what a labeler's labels can be checked against: gold items (the true
class is known) and items that two or more labelers labeled (overlaps). An item with one
label and no gold answer says nothing about its labeler (the label would be checked
against itself) and is left out.

EM, from the labels' majority (gold answers fixed):
- E-step: each item's posterior over its true class,
  T_i(c) ∝ pi_c prod_{labels l of i} P(l | c), with pi uniform;
- M-step: a_j = (E[correct_j] + alpha - 1) / (n_j + alpha + beta - 2), the posterior mode
  under a Beta(alpha, beta) prior, where E[correct_j] = sum over j's labels of T_i(label).

**What a label weighs.** A label l from a labeler of accuracy a tells the picker, under
this model and a uniform prior over the classes, that the item's class is l with
probability a and each other class with (1 - a)/(C - 1). A candidate predicting p then
has the expected mistake E[p != y | l] = 1 - a when p = l, and 1 - (1 - a)/(C - 1)
otherwise: the same for every candidate up to

    w(a) [p != l],   w(a) = (C a - 1) / (C - 1)

(`label_weight`; 1 for a perfect labeler, 0 for one who answers at random). ModelPicker's
posterior and the elimination test depend on loss differences only, so the service adds
w [p != l] / q to each candidate's loss instead of [p != l] / q: the expected loss under
the label's posterior, less a term common to every candidate. Averaged over the
labeler's mistakes, a candidate's added loss has expectation w(a)^2 [p != y] / q plus
that common term, so the order of the candidates' expected losses (which is what picks
the best) is the order of their true mistakes: the weighting keeps the selection
consistent when the labeler model holds, and gives a labeler's labels less say the less
they are right. The accuracy a used is the upper end of the 95 % interval
(`LabelerEstimate.weight`): a labeler's labels count fully until the evidence says, with
confidence, that they are wrong more often than that.

The uncertainty is the Wilson score interval of E[correct_j] out of n_j (z = 1.96). A
labeler is below an accuracy with confidence when the one-sided 95 % Wilson upper bound
(z = 1.645: the claim "below" is one-sided, and the two-sided interval's upper end would
test it at 97.5 %) is below it.
Against gold answers it is the usual binomial interval (its coverage is tested); on
overlaps it takes the expected count as if observed, so it leaves out the uncertainty of
the other labelers' answers and is somewhat narrower than it should be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from picker.modelpicker import FloatArray, IntArray

NO_GOLD = -1
Z_95 = 1.959963984540054
Z_ONE_SIDED_95 = 1.6448536269514722
MIN_CHECKED = 20  # checked labels a labeler needs before they can be flagged
AUDIT_MOST = 100  # checked labels after which an audit ends (the evidence settles slowly)


@dataclass(frozen=True)
class LabelerEstimate:
    """One labeler's figures: labels given, how many of them could be checked (on overlap
    items and on gold items), the estimated accuracy, its 95 % interval, and its one-sided
    95 % upper bound."""

    labels: int
    overlaps: int
    gold: int
    accuracy: float
    low: float
    high: float
    bound: float = 1.0

    def flagged(self, min_accuracy: float, min_checked: int = MIN_CHECKED) -> bool:
        """Below `min_accuracy` with 95 % confidence: the one-sided upper bound is below
        it, on at least `min_checked` checked labels (overlap and gold). The bound of one
        wrong label out of one is 0.73: without the floor, a labeler's first disagreement
        would flag them."""
        return self.overlaps + self.gold >= min_checked and self.bound < min_accuracy

    def audited(self, min_accuracy: float, min_checked: int = MIN_CHECKED) -> bool:
        """Under audit: some of their labels were checked (fewer than AUDIT_MOST), the
        estimate is below `min_accuracy`, and they are not flagged. The evidence does not
        yet tell either way, and it is their own labels that lack it: the service then
        checks more of them (`audit_overlap_rate`, `audit_gold_rate`), so that a careless
        labeler is told apart within tens of labels rather than hundreds, and the other
        labelers' labels are not checked more for it. A labeler close to the bar would need
        thousands: after AUDIT_MOST checked labels the audit ends."""
        checked = self.overlaps + self.gold
        return (
            0 < checked < AUDIT_MOST
            and self.accuracy < min_accuracy
            and not self.flagged(min_accuracy, min_checked)
        )

    def weight(self, n_classes: int) -> float:
        """What this labeler's label weighs: `label_weight` at the interval's upper end (1
        until the evidence shows, with confidence, that they are less than perfect)."""
        return label_weight(self.high, n_classes)


def label_weight(accuracy: float, n_classes: int) -> float:
    """w(a) = (C a - 1) / (C - 1), clipped to [0, 1]: by how much a label from a labeler of
    accuracy `a` separates a candidate that predicted it from one that did not, in their
    expected losses under the label's posterior (the module's docstring)."""
    if n_classes < 2:
        raise ValueError("need at least 2 classes")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"an accuracy is in [0, 1], not {accuracy}")
    return min(1.0, max(0.0, (n_classes * accuracy - 1.0) / (n_classes - 1.0)))


def wilson_interval(successes: float, trials: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (successes may be fractional: expected
    counts); (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return max(0.0, centre - half), min(1.0, centre + half)


def _truth_posterior(
    items: IntArray, labels: IntArray, log_right: FloatArray, log_wrong: FloatArray,
    gold: IntArray, n_classes: int,
) -> FloatArray:  # fmt: skip
    """T_i(c) for every item (rows of items without labels stay uniform); gold items are
    certain. `log_right`/`log_wrong` are per label: log P(label | truth is / is not it)."""
    n_items = len(gold)
    log_t = np.zeros((n_items, n_classes))
    per_class = np.where(labels[:, None] == np.arange(n_classes), log_right[:, None],
                         log_wrong[:, None])  # fmt: skip
    np.add.at(log_t, items, per_class)
    log_t -= log_t.max(axis=1, keepdims=True)
    truth = np.exp(log_t)
    truth /= truth.sum(axis=1, keepdims=True)
    known = gold != NO_GOLD
    truth[known] = np.eye(n_classes)[gold[known]]
    return truth


def estimate_labelers(
    items: npt.ArrayLike,
    labelers: npt.ArrayLike,
    labels: npt.ArrayLike,
    gold: npt.ArrayLike,
    n_classes: int,
    n_labelers: int,
    prior: tuple[float, float] = (2.0, 2.0),
    iterations: int = 200,
    tolerance: float = 1e-9,
) -> list[LabelerEstimate]:
    """Each labeler's accuracy from its labels: row r says labeler `labelers[r]` gave item
    `items[r]` the class `labels[r]`; `gold[i]` is item i's known class or NO_GOLD. One
    labeler labels an item at most once. Returns one estimate per labeler, in order."""
    items, labelers, labels = (np.asarray(x, dtype=np.int64) for x in (items, labelers, labels))
    gold = np.asarray(gold, dtype=np.int64)
    _check(items, labelers, labels, gold, n_classes, n_labelers, prior)
    alpha, beta = prior
    # a gold item answered by several labelers is gold evidence, not an overlap: counted once
    on_overlap = (np.bincount(items, minlength=len(gold))[items] >= 2) & (gold[items] == NO_GOLD)
    # single labels without gold say nothing
    checked: npt.NDArray[np.bool_] = on_overlap | (gold[items] != NO_GOLD)
    given = np.bincount(labelers, minlength=n_labelers)
    overlaps = np.bincount(labelers[on_overlap], minlength=n_labelers)
    golds = np.bincount(labelers[gold[items] != NO_GOLD], minlength=n_labelers)
    items, labelers, labels = items[checked], labelers[checked], labels[checked]
    n = np.bincount(labelers, minlength=n_labelers).astype(np.float64)
    # start from the labels' majority: every labeler equally right
    truth = _truth_posterior(items, labels, np.zeros(len(items)), np.full(len(items), -1.0),
                             gold, n_classes)  # fmt: skip
    accuracy = np.full(n_labelers, 0.5)
    for _ in range(iterations):
        correct = np.bincount(labelers, weights=truth[items, labels], minlength=n_labelers)
        updated = (correct + alpha - 1.0) / np.maximum(n + alpha + beta - 2.0, 1e-12)
        updated = np.clip(updated, 1e-6, 1.0 - 1e-6)
        done = np.max(np.abs(updated - accuracy)) < tolerance
        accuracy = updated
        if done:
            break
        right = np.log(accuracy[labelers])
        wrong = np.log((1.0 - accuracy[labelers]) / (n_classes - 1))
        truth = _truth_posterior(items, labels, right, wrong, gold, n_classes)
    correct = np.bincount(labelers, weights=truth[items, labels], minlength=n_labelers)
    estimates = []
    for j in range(n_labelers):
        low, high = wilson_interval(float(correct[j]), float(n[j]))
        _, bound = wilson_interval(float(correct[j]), float(n[j]), Z_ONE_SIDED_95)
        estimates.append(LabelerEstimate(int(given[j]), int(overlaps[j]), int(golds[j]),
                                         float(accuracy[j]), low, high, bound))  # fmt: skip
    return estimates


def _check(
    items: IntArray, labelers: IntArray, labels: IntArray, gold: IntArray,
    n_classes: int, n_labelers: int, prior: tuple[float, float],
) -> None:  # fmt: skip
    if not (items.shape == labelers.shape == labels.shape and items.ndim == 1):
        raise ValueError("items, labelers and labels need one entry per label")
    if n_classes < 2 or n_labelers < 1:
        raise ValueError("need at least 2 classes and 1 labeler")
    if items.size and (items.min() < 0 or items.max() >= len(gold)):
        raise ValueError("an item index is outside the gold array")
    if labelers.size and (labelers.min() < 0 or labelers.max() >= n_labelers):
        raise ValueError("a labeler index is outside 0..n_labelers-1")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError("a label is outside 0..n_classes-1")
    if np.any((gold != NO_GOLD) & ((gold < 0) | (gold >= n_classes))):
        raise ValueError("a gold answer is outside 0..n_classes-1")
    pairs = items * n_labelers + labelers
    if np.unique(pairs).size != pairs.size:
        raise ValueError("a labeler labeled the same item twice")
    if min(prior) < 1.0:
        raise ValueError("the Beta prior needs alpha, beta >= 1 (a mode in [0, 1])")
