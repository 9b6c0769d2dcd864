"""Pool-based selectors: the label queue as a pool that is re-ranked after every label.

A selector holds a pool of items (their predicted classes, one column per model) and the
labels received so far. Its state is explicit: the predictions, the labels and the one
setting; everything else is derived from them, so a selector serialises to a small dict,
and labels may arrive late and in any order (the derived belief depends on the set of
labels, not on their order). Three selectors share this protocol:

- `model-selector` (Okanovic et al., AISTATS 2025): `picker.model_selector`;
- `coda` (Kay et al., ICCV 2025): `picker.coda`;
- `pool-based`, ours: `picker.pool_based`.

Each answers three questions: `choose(rng)` the next item to label (None once nothing is
left worth labeling), `best(rng)` the model it would return now, and `accuracies()` its
estimate of each model's accuracy on the pool.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from picker.modelpicker import FloatArray, IntArray

SELECTOR_VERSION = 1


class PoolSelector(ABC):
    """The shared state discipline: predictions, labels and a setting; the rest derived."""

    method: ClassVar[str]
    default_param: ClassVar[float | None]

    def __init__(
        self,
        predictions: npt.ArrayLike,
        n_classes: int | None = None,
        param: float | None = None,
        labels: dict[int, int] | None = None,
    ) -> None:
        preds = np.asarray(predictions)
        if preds.ndim != 2 or preds.shape[0] < 1 or preds.shape[1] < 2:
            raise ValueError(f"predictions must be (items, models >= 2), got shape {preds.shape}")
        if not np.issubdtype(preds.dtype, np.integer):
            raise ValueError("predictions must be integer class ids")
        if preds.min() < 0:
            raise ValueError("class ids must be >= 0")
        self.predictions: IntArray = preds.astype(np.int64)
        self.n_classes = int(preds.max()) + 1 if n_classes is None else int(n_classes)
        if self.n_classes < 2 or self.n_classes <= int(preds.max()):
            raise ValueError(
                f"n_classes must be >= 2 and above every predicted class, got {self.n_classes}"
            )
        self.param = self.default_param if param is None else float(param)
        self.labels: dict[int, int] = {}
        self._labeled = np.zeros(self.n_items, dtype=bool)
        self._prepare()
        for item, label in (labels or {}).items():
            self._check_label(int(item), int(label))
            self.labels[int(item)] = int(label)
            self._labeled[int(item)] = True
        self._refresh()

    @property
    def n_items(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def n_models(self) -> int:
        return int(self.predictions.shape[1])

    def _check_label(self, item: int, label: int) -> None:
        if not 0 <= item < self.n_items:
            raise ValueError(f"item {item} is not in the pool of {self.n_items}")
        if not 0 <= label < self.n_classes:
            raise ValueError(f"label {label} is not a class in [0, {self.n_classes})")
        if item in self.labels and self.labels[item] != label:
            raise ValueError(f"item {item} already has label {self.labels[item]}")

    def add_label(self, item: int, label: int) -> None:
        """Record a label; a repeat of the same label changes nothing."""
        item, label = int(item), int(label)
        self._check_label(item, label)
        if item in self.labels:
            return
        self.labels[item] = label
        self._labeled[item] = True
        self._on_label(item, label)

    def disagreement(self) -> npt.NDArray[np.bool_]:
        """Items on which the models do not all predict the same class."""
        return disagreeing(self.predictions)

    def correct_counts(self) -> IntArray:
        """Each model's number of correct predictions on the labeled items."""
        if not self.labels:
            return np.zeros(self.n_models, dtype=np.int64)
        items = np.fromiter(self.labels, dtype=np.int64)
        truth = np.fromiter(self.labels.values(), dtype=np.int64)
        result: IntArray = (self.predictions[items] == truth[:, None]).sum(axis=0)
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SELECTOR_VERSION,
            "method": self.method,
            "param": self.param,
            "n_classes": self.n_classes,
            "predictions": self.predictions.tolist(),
            "labels": sorted([item, label] for item, label in self.labels.items()),
        }

    # What each method supplies.
    @abstractmethod
    def _prepare(self) -> None:
        """Derive what depends on the predictions alone (called once, before `_refresh`)."""

    def _on_label(self, item: int, label: int) -> None:
        """Update the derived belief after one new label (default: from scratch)."""
        self._refresh()

    @abstractmethod
    def _refresh(self) -> None:
        """Derive the belief from the predictions and every label."""

    @abstractmethod
    def choose(self, rng: np.random.Generator) -> int | None:
        """The next item to label, or None when no unlabeled item is worth a label."""

    @abstractmethod
    def accuracies(self) -> FloatArray:
        """The selector's estimate of each model's accuracy on the pool (or its score)."""

    def best(self, rng: np.random.Generator) -> int:
        """The model the selector returns now: the highest estimate, ties at random."""
        scores = self.accuracies()
        top = np.flatnonzero(scores >= scores.max() - 1e-12)
        return int(top[0] if top.size == 1 else rng.choice(top))


def disagreeing(predictions: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.bool_]:
    """Per item (row): do the models (columns) not all predict the same class?"""
    result: npt.NDArray[np.bool_] = (predictions != predictions[:, :1]).any(axis=1)
    return result


def vote_counts(predictions: IntArray, n_classes: int) -> FloatArray:
    """(items, classes): how many models predict each class on each item."""
    n, k = predictions.shape
    votes = np.zeros((n, n_classes))
    np.add.at(votes, (np.repeat(np.arange(n), k), predictions.ravel()), 1.0)
    return votes


def pick_max(
    scores: FloatArray,
    eligible: npt.NDArray[np.bool_],
    rng: np.random.Generator,
    rtol: float = 1e-12,
) -> int | None:
    """The eligible index of the highest score, ties (within rtol) at random; None if none."""
    if not eligible.any():
        return None
    masked = np.where(eligible, scores, -np.inf)
    top_score = float(masked.max())
    top = np.flatnonzero(masked >= top_score - rtol * max(1e-300, abs(top_score)))
    return int(top[0] if top.size == 1 else rng.choice(top))
