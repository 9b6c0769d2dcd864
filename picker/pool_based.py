"""pool-based: pickserve's own pool selector, a calibrated Dawid–Skene belief.

The belief is a likelihood over every item in the pool, labeled or not. Each model has a
confusion matrix theta_h[c, j] = P(h predicts j | true class c) and the classes a prior rho;
the models' predictions on an item are taken as independent given its true class
(Dawid & Skene, 1979). EM from the models' vote shares, with the labeled items clamped to
their labels, gives each unlabeled item's class probabilities r[x, c]. Smoothing: one
pseudo-count in every cell and one more on the diagonal, one per class in rho.

Independence given the class is wrong for real pools (models trained alike err alike), and
it makes r overconfident. So r is calibrated by a temperature T, r_T ∝ r^(1/T), fitted by
likelihood on the labels: each label is scored against the label-free belief (EM with no
item clamped), which is what that label told us that the agreement alone did not. T is
chosen on a fixed grid once five labels are in (T = 1 before).

Accuracy on the pool: acc_h = (sum over labeled x of [h(x) = y] + sum over unlabeled x of
r_T[x, h(x)]) / n: exact on labeled items, expected elsewhere. The leader a has the highest
estimate; for each challenger b, the difference of correct counts D_ab = sum_x d_ab(x) has
mean mu_b and variance sigma_b^2 under r_T, and w_b = Phi(-mu_b / sigma_b) is the
probability that b is in truth ahead. The next item maximises
sum_b w_b Var(d_ab(x)) / sigma_b^2: the share of the doubt about each close challenger that
its label would settle. When every item is labeled the estimate is the exact accuracy. If
the belief leaves no doubt at all (every score 0, as when a hundred models agree closely),
the item is drawn at random among the unlabeled items on which the models disagree.

Labels from a labeler who errs (`label_accuracy`: item -> the accuracy a of the labeler
who gave its label, `picker.labelers`): such a label is evidence, not the truth. Its item
is not clamped: EM multiplies its class probabilities by the label's likelihood under the
one-coin model, P(label | c) = a if c is the label, (1 - a)/(C - 1) otherwise, and so does
the calibrated belief. Its models are then right with a probability (not 0 or 1), P(best)
draws its class like an unlabeled item's from that posterior, and it stays out of the
per-pattern label counts (the calibration and the patterns' Dirichlets count the labels
taken as the truth). With a = 1 every formula is the one above, to the bit.

Everything is a function of the predictions and the set of labels: EM restarts from the
vote shares with a fixed stopping rule, so the state does not depend on the order in which
labels arrived. The choice depends only on the predictions and the labels, which
is what the likelihood conditions on: the design is ignorable for this belief.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from picker.modelpicker import FloatArray
from picker.pooled import PoolSelector, pick_max, vote_counts

EM_ITERATIONS = 20
# EM stops early once no responsibility moves by more than this in an iteration.
EM_TOLERANCE = 1e-6
MIN_LABELS_FOR_TEMPERATURE = 5
TEMPERATURES = np.array([1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0])
STRENGTHS = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 1e6])
_NORMAL_SQRT2 = math.sqrt(2.0)
# Joint draws behind P(best) (`PoolBased.p_best`).
P_BEST_DRAWS = 1000
_P_BEST_CELLS = 2_000_000  # draws x patterns x classes held at once
# Largest items x models x classes for the dense one-hot matrix (8 bytes each).
_DENSE_LIMIT = 8_000_000


def _erfc(x: FloatArray) -> FloatArray:
    result: FloatArray = np.vectorize(math.erfc, otypes=[np.float64])(x)
    return result


def normal_cdf(x: FloatArray) -> FloatArray:
    return 0.5 * _erfc(-x / _NORMAL_SQRT2)


def log_rising(base: FloatArray, count: FloatArray) -> FloatArray:
    """log of base (base + 1) ... (base + count - 1) = lgamma(base + count) - lgamma(base),
    for whole counts >= 0 (a sum of logs: labels per pattern are few)."""
    steps = np.arange(int(count.max()) + 1 if count.size else 1)
    terms = np.log(base[..., None] + steps) * (steps < count[..., None])
    result: FloatArray = terms.sum(axis=-1)
    return result


def log_normalise(logits: FloatArray) -> FloatArray:
    """Rows of log-probabilities from rows of logits."""
    top = logits.max(axis=1, keepdims=True)
    result: FloatArray = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return result


class PoolBased(PoolSelector):
    method: ClassVar[str] = "pool-based"
    default_param: ClassVar[float | None] = None

    def __init__(
        self,
        predictions: npt.ArrayLike,
        n_classes: int | None = None,
        param: float | None = None,
        labels: dict[int, int] | None = None,
        label_accuracy: dict[int, float] | None = None,
    ) -> None:
        """`label_accuracy`: for a labeled item whose label may be wrong, the accuracy of
        the labeler who gave it, in (0, 1] (the module's docstring); others are the truth."""
        self.label_accuracy = {int(i): float(a) for i, a in (label_accuracy or {}).items()
                               if float(a) != 1.0}  # fmt: skip
        for item, accuracy in self.label_accuracy.items():
            if not 0.0 < accuracy <= 1.0:
                raise ValueError(f"item {item}: a labeler's accuracy is in (0, 1], not {accuracy}")
            if item not in (labels or {}):
                raise ValueError(f"item {item} has an accuracy but no label")
        super().__init__(predictions, n_classes, param, labels)

    def add_label(self, item: int, label: int, accuracy: float = 1.0) -> None:
        """Record a label, from a labeler of `accuracy` (1: the truth)."""
        if not 0.0 < accuracy <= 1.0:
            raise ValueError(f"a labeler's accuracy is in (0, 1], not {accuracy}")
        if int(item) not in self.labels and accuracy != 1.0:
            self.label_accuracy[int(item)] = float(accuracy)
        super().add_label(item, label)

    def _soft(self) -> tuple[npt.NDArray[np.bool_], FloatArray]:
        """The items whose label may be wrong, and log P(label | c) for every item (0 for
        the others)."""
        soft = np.zeros(self.n_items, dtype=bool)
        log_likelihood = np.zeros((self.n_items, self.n_classes))
        for item, accuracy in self.label_accuracy.items():
            soft[item] = True
            log_likelihood[item] = math.log((1.0 - accuracy) / (self.n_classes - 1))
            log_likelihood[item, self.labels[item]] = math.log(accuracy)
        return soft, log_likelihood

    def _prepare(self) -> None:
        if self.param is not None and not self.param >= 1.0:
            raise ValueError(f"pool-based takes a fixed temperature >= 1, got {self.param}")
        n, k, n_classes = self.n_items, self.n_models, self.n_classes
        self._votes = vote_counts(self.predictions, n_classes) / k
        self._cells = (np.arange(k)[None, :] * n_classes + self.predictions).ravel()
        # One-hot (item, model x class) as a dense matrix when it is small enough: EM is
        # then two matrix products per iteration.
        self._onehot: FloatArray | None = None
        if n * k * n_classes <= _DENSE_LIMIT:
            onehot = np.zeros((n, k * n_classes))
            onehot[np.repeat(np.arange(n), k), self._cells] = 1.0
            self._onehot = onehot
        self._disagrees = self.disagreement()
        _, first, pattern_of = np.unique(
            self.predictions, axis=0, return_index=True, return_inverse=True
        )
        self._pattern_of = pattern_of.reshape(-1).astype(np.int64)
        self._pattern_first = first.astype(np.int64)  # an item of each pattern
        self._n_patterns = int(first.size)
        self._label_free = self._em(np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64))

    # The belief.
    def _em(
        self, clamped: np.ndarray, truth: np.ndarray, log_likelihood: FloatArray | None = None
    ) -> FloatArray:
        """log r[x, c] after at most EM_ITERATIONS from the vote shares (fewer once it has
        converged), `clamped` items fixed, every item's r multiplied by its label's
        likelihood (`log_likelihood`, for labels that may be wrong): a function of the
        labels, not of their order."""
        n, k, n_classes = self.n_items, self.n_models, self.n_classes
        resp = self._votes.copy()
        if log_likelihood is not None:
            resp = np.exp(log_normalise(np.log(np.maximum(resp, 1e-300)) + log_likelihood))
        resp[clamped] = 0.0
        resp[clamped, truth[clamped]] = 1.0
        log_resp = np.log(np.maximum(resp, 1e-300))
        diagonal = np.eye(n_classes)
        for _ in range(EM_ITERATIONS):
            # counts[h * C + j, c] = sum over items where h predicted j of r[x, c]
            counts = self._cell_sums(resp)
            confusion = counts.reshape(k, n_classes, n_classes).transpose(0, 2, 1)
            confusion = confusion + 1.0 + diagonal
            log_theta = np.log(confusion / confusion.sum(axis=2, keepdims=True))
            log_rho = np.log((resp.sum(axis=0) + 1.0) / (n + n_classes))
            # logits[x, c] = sum_h log theta[h, c, h(x)]
            logits = self._cell_gather(log_theta.transpose(0, 2, 1).reshape(k * n_classes, -1))
            if log_likelihood is not None:
                logits = logits + log_likelihood
            log_resp = log_normalise(logits + log_rho)
            log_resp[clamped] = np.where(diagonal[truth[clamped]] > 0, 0.0, -np.inf)
            previous, resp = resp, np.exp(log_resp)
            if float(np.abs(resp - previous).max()) <= EM_TOLERANCE:
                break
        return log_resp

    def _cell_sums(self, resp: FloatArray) -> FloatArray:
        if self._onehot is not None:
            result: FloatArray = self._onehot.T @ resp
            return result
        k, n_classes = self.n_models, self.n_classes
        sums = np.empty((k * n_classes, n_classes))
        for c in range(n_classes):
            sums[:, c] = np.bincount(self._cells, np.repeat(resp[:, c], k), k * n_classes)
        return sums

    def _cell_gather(self, table: FloatArray) -> FloatArray:
        """sum over models h of table[h * C + h(x)] per item: (n, columns of table)."""
        if self._onehot is not None:
            result: FloatArray = self._onehot @ table
            return result
        gathered = table[self._cells].reshape(self.n_items, self.n_models, -1)
        summed: FloatArray = gathered.sum(axis=1)
        return summed

    def _refresh(self) -> None:
        truth = np.zeros(self.n_items, dtype=np.int64)
        for item, label in self.labels.items():
            truth[item] = label
        self._truth = truth
        soft, log_likelihood = self._soft()
        self._hard = self._labeled & ~soft  # labels taken as the truth
        self.temperature, self.strength = self._fit_calibration()
        log_resp = self._em(self._hard, truth, log_likelihood if soft.any() else None)
        log_resp /= self.temperature
        prior = np.exp(log_normalise(np.where(np.isfinite(log_resp), log_resp, -1e300)))
        # Items with the same predictions share P(y | predictions): the labels among them
        # update it as counts on a Dirichlet whose mean is the calibrated EM belief.
        counts = self._pattern_counts()[self._pattern_of]
        alpha = self.strength * prior + counts
        self.resp = alpha / (self.strength + counts.sum(axis=1))[:, None]
        # The Dirichlet of each pattern's unlabeled items (the same for all of them).
        unlabeled = ~self._labeled
        self._pattern_alpha = np.ones((self._n_patterns, self.n_classes))
        self._pattern_alpha[self._pattern_of[unlabeled]] = alpha[unlabeled]
        if soft.any():  # the label's likelihood on the calibrated belief
            weighted = self.resp[soft] * np.exp(log_likelihood[soft])
            self.resp[soft] = weighted / weighted.sum(axis=1, keepdims=True)
        self.resp[self._hard] = 0.0
        self.resp[self._hard, truth[self._hard]] = 1.0
        # P(model h is right on x), exact (0 or 1) on items whose label is the truth.
        self.p_right = np.take_along_axis(self.resp, self.predictions, axis=1)

    def _pattern_counts(self) -> FloatArray:
        """(patterns, C): the labels received on the items of each prediction pattern."""
        counts = np.zeros((self._n_patterns, self.n_classes))
        items = np.flatnonzero(self._hard)
        np.add.at(counts, (self._pattern_of[items], self._truth[items]), 1.0)
        return counts

    def _fit_calibration(self) -> tuple[float, float]:
        """(T, S) of highest evidence: the labels' Dirichlet-multinomial likelihood per
        pattern, the Dirichlet's mean the label-free belief at temperature T, its strength S."""
        fixed = None if self.param is None else float(self.param)
        if int(self._hard.sum()) < MIN_LABELS_FOR_TEMPERATURE:
            return (fixed or 1.0), float(STRENGTHS[-1])
        counts = self._pattern_counts()
        seen = np.flatnonzero(counts.sum(axis=1) > 0)
        counts = counts[seen]
        forecasts = self._label_free[self._pattern_first[seen]]
        totals = counts.sum(axis=1)
        strengths = STRENGTHS[:, None]
        # log of the evidence's normaliser per strength: sum over patterns of
        # lgamma(S) - lgamma(S + n_s).
        normaliser = log_rising(np.broadcast_to(strengths, (STRENGTHS.size, totals.size)), totals)
        best, best_score = (1.0, float(STRENGTHS[-1])), -np.inf
        for t in TEMPERATURES if fixed is None else np.array([fixed]):
            mean = np.exp(log_normalise(forecasts / t))
            alpha = np.maximum(strengths[:, :, None] * mean[None], 1e-300)
            scores = log_rising(alpha, counts).sum(axis=(1, 2)) - normaliser.sum(axis=1)
            top = int(np.argmax(scores))
            if scores[top] > best_score:
                best, best_score = (float(t), float(STRENGTHS[top])), float(scores[top])
        return best

    def accuracies(self) -> FloatArray:
        result: FloatArray = self.p_right.mean(axis=0)
        return result

    def p_best(self, rng: np.random.Generator, draws: int = P_BEST_DRAWS) -> FloatArray:
        """P(model h has the most correct predictions on the pool) under the belief, by
        `draws` joint draws of the unlabeled items' classes: per prediction pattern, its
        items' class counts from the pattern's Dirichlet-multinomial (for a pattern of one
        item, a class drawn from the Dirichlet's mean, which is the same distribution).
        Labeled items count exactly (those whose label may be wrong: a class drawn from
        their posterior); a tie splits its draw evenly. Sums to 1; one-hot on the true best
        once every item is labeled by labelers taken as right."""
        k, n_classes = self.n_models, self.n_classes
        waiting = np.bincount(self._pattern_of[~self._labeled], minlength=self._n_patterns)
        single, multi = np.flatnonzero(waiting == 1), np.flatnonzero(waiting > 1)
        alpha = self._pattern_alpha
        cumulative = np.cumsum(alpha[single] / alpha[single].sum(axis=1, keepdims=True), axis=1)
        single_predicted = self.predictions[self._pattern_first[single]]
        # right[pattern x class, h] = 1 where h predicts that class on that pattern
        right = np.zeros((multi.size * n_classes, k))
        multi_predicted = self.predictions[self._pattern_first[multi]]
        right[(np.arange(multi.size)[:, None] * n_classes + multi_predicted).ravel(),
              np.tile(np.arange(k), multi.size)] = 1.0  # fmt: skip
        hard = np.flatnonzero(self._hard)
        correct = (self.predictions[hard] == self._truth[hard, None]).sum(axis=0).astype(np.float64)
        # items whose label may be wrong: a class each, drawn from its posterior
        soft = np.flatnonzero(self._labeled & ~self._hard)
        soft_cumulative = np.cumsum(self.resp[soft], axis=1)
        soft_predicted = self.predictions[soft]
        cells = max((single.size + soft.size) * max(k, n_classes), multi.size * n_classes, 1)
        chunk = max(1, _P_BEST_CELLS // cells)
        wins = np.zeros(k)
        for start in range(0, draws, chunk):
            size = min(chunk, draws - start)
            totals = np.broadcast_to(correct, (size, k)).copy()
            if single.size:
                uniform = rng.random((size, single.size, 1))
                classes = (uniform > cumulative[None, :, :-1]).sum(axis=2)
                totals += (classes[:, :, None] == single_predicted[None]).sum(axis=1)
            if soft.size:
                uniform = rng.random((size, soft.size, 1))
                classes = (uniform > soft_cumulative[None, :, :-1]).sum(axis=2)
                totals += (classes[:, :, None] == soft_predicted[None]).sum(axis=1)
            if multi.size:
                shares = rng.gamma(np.broadcast_to(alpha[multi], (size, multi.size, n_classes)))
                shares /= np.maximum(shares.sum(axis=2, keepdims=True), 1e-300)
                counts = rng.multinomial(waiting[multi], shares)
                totals += counts.reshape(size, -1) @ right
            top = totals >= totals.max(axis=1, keepdims=True) - 1e-9
            wins += (top / top.sum(axis=1, keepdims=True)).sum(axis=0)
        result: FloatArray = wins / draws
        return result

    # The choice.
    def item_scores(self) -> FloatArray:
        """sum_b w_b Var(d_ab(x)) / sigma_b^2 per item (0 on labeled items)."""
        accuracy = self.accuracies()
        leader = int(np.argmax(accuracy))
        split = self.predictions != self.predictions[:, [leader]]
        p_leader = self.p_right[:, [leader]]
        mean = np.where(split, p_leader - self.p_right, 0.0)
        variance = np.where(split, p_leader + self.p_right - mean**2, 0.0)
        variance[self._labeled] = 0.0
        mu, sigma2 = mean.sum(axis=0), variance.sum(axis=0)
        challengers = sigma2 > 0
        weight = np.zeros(self.n_models)
        weight[challengers] = normal_cdf(-mu[challengers] / np.sqrt(sigma2[challengers]))
        weight[challengers] /= sigma2[challengers]
        result: FloatArray = variance @ weight
        return result

    def posterior(self, rng: np.random.Generator) -> FloatArray:
        """P(each model is the best), as the service reports and swaps on it: `p_best`
        once the belief is calibrated (MIN_LABELS_FOR_TEMPERATURE labels: before them the
        temperature is 1 and agreement alone may be confidently wrong), every model alike
        before."""
        if len(self.labels) < MIN_LABELS_FOR_TEMPERATURE:
            return np.full(self.n_models, 1.0 / self.n_models)
        return self.p_best(rng)

    def ranking(self, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Every item `choose` may pick, the most useful label first (`item_scores`), items
        scored alike in random order: `choose` is the head of this order, in distribution
        (the best score, ties at random; all scores 0: any open item alike). A service
        that hands out several items at once hands them out in this order."""
        scores = self.item_scores()
        open_items = np.flatnonzero(self._disagrees & ~self._labeled)
        order = np.lexsort((rng.random(open_items.size), -scores[open_items]))
        result: npt.NDArray[np.int64] = open_items[order].astype(np.int64)
        return result

    def choose(self, rng: np.random.Generator) -> int | None:
        """The best-scored item; when the belief leaves no doubt at all (every score 0),
        a uniform draw among the unlabeled items on which the models disagree: a certain
        belief may be certainly wrong, and only labels can tell (they then raise the
        temperature). None once every disagreement item is labeled."""
        scores = self.item_scores()
        open_items = self._disagrees & ~self._labeled
        chosen = pick_max(scores, open_items & (scores > 0), rng)
        if chosen is None and open_items.any():
            chosen = int(rng.choice(np.flatnonzero(open_items)))
        return chosen
