"""Drift in the live stream, seen through shadow evaluation: pure functions, no I/O.

A round keeps two windows of shadow-evaluated items: the *reference*, its first `window`
items, and the *current* window, the items since. Each window counts (a) the classes
predicted by one fixed model, the one served when the round started (fixed, so a swap
is not mistaken for drift), and (b) the items on which the candidates disagree. Each time
the current window fills, two chi-square tests of homogeneity compare it with the
reference: the 2 × C table of predicted classes and the 2 × 2 table of disagreement. With
a Bonferroni correction, drift is declared when either p-value is below `alpha / 2`, so
on a stationary stream each window raises a false alarm with probability at most
`alpha` (README: "Drift"). After a detection the current window becomes the reference,
so one shift is reported once (the service may also start a new round, which starts a
new monitor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2_contingency


@dataclass(frozen=True)
class DriftConfig:
    window: int
    alpha: float
    n_classes: int


@dataclass(frozen=True)
class Window:
    classes: tuple[int, ...]  # counts per class, the last entry for "no class" (-1)
    disagreements: int = 0

    @property
    def n(self) -> int:
        return sum(self.classes)

    @classmethod
    def empty(cls, n_classes: int) -> Window:
        return cls((0,) * (n_classes + 1))

    def add(self, predicted: npt.NDArray[np.int64], disagree: npt.NDArray[np.bool_]) -> Window:
        bins = np.where(predicted < 0, len(self.classes) - 1, predicted)
        counts = np.bincount(bins, minlength=len(self.classes))
        added = tuple(int(a + b) for a, b in zip(self.classes, counts, strict=True))
        return Window(added, self.disagreements + int(disagree.sum()))


@dataclass(frozen=True)
class Monitor:
    model: int  # the model whose predicted classes are watched
    reference: Window
    current: Window
    last: Mapping[str, Any] | None = None  # the last test's figures

    @classmethod
    def start(cls, model: int, n_classes: int) -> Monitor:
        return cls(model, Window.empty(n_classes), Window.empty(n_classes))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "reference": list(self.reference.classes),
                "reference_disagreements": self.reference.disagreements,
                "current": list(self.current.classes),
                "current_disagreements": self.current.disagreements,
                "last": None if self.last is None else dict(self.last)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Monitor:
        return cls(int(data["model"]),
                   Window(tuple(data["reference"]), int(data["reference_disagreements"])),
                   Window(tuple(data["current"]), int(data["current_disagreements"])),
                   data.get("last"))  # fmt: skip


def _chi_square(table: npt.NDArray[np.int64]) -> tuple[float, float]:
    """Statistic and p-value of homogeneity; columns seen in neither row are dropped (a
    table with one column left says nothing: p = 1)."""
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def compare_windows(reference: Window, current: Window, alpha: float) -> dict[str, Any]:
    """Both tests on two windows, and whether they declare drift at level alpha."""
    classes = np.array([reference.classes, current.classes], dtype=np.int64)
    class_stat, class_p = _chi_square(classes)
    disagreement = np.array(
        [[reference.disagreements, reference.n - reference.disagreements],
         [current.disagreements, current.n - current.disagreements]], dtype=np.int64,
    )  # fmt: skip
    split_stat, split_p = _chi_square(disagreement)
    return {
        "test": "chi-square homogeneity, Bonferroni over 2 tests",
        "statistic": round(class_stat, 6), "p_value": class_p,
        "disagreement_statistic": round(split_stat, 6), "disagreement_p_value": split_p,
        "reference_rate": reference.disagreements / max(reference.n, 1),
        "window_rate": current.disagreements / max(current.n, 1),
        "reference_items": reference.n, "window_items": current.n, "alpha": alpha,
        "drift": min(class_p, split_p) < alpha / 2,
    }  # fmt: skip


def observe(
    monitor: Monitor,
    predictions: npt.NDArray[np.int64],
    config: DriftConfig,
    step: int,
    disagreement: bool = True,
) -> tuple[Monitor, dict[str, Any] | None]:
    """Count a batch (items × models) into the windows; when the current window fills,
    test it. Returns the new monitor and the evidence of a detected drift (or None).
    `step` is the picker's step before the batch, recorded with the evidence. Without
    `disagreement` no item counts as disagreed on (that test then says nothing)."""
    disagree = (predictions != predictions[:, :1]).any(axis=1) & disagreement
    watched = predictions[:, monitor.model]
    evidence = None
    start = 0
    while start < len(predictions):
        target = monitor.reference if monitor.reference.n < config.window else monitor.current
        take = min(len(predictions) - start, config.window - target.n)
        rows = slice(start, start + take)
        if monitor.reference.n < config.window:
            monitor = replace(monitor, reference=target.add(watched[rows], disagree[rows]))
        else:
            monitor = replace(monitor, current=target.add(watched[rows], disagree[rows]))
        start += take
        if monitor.current.n >= config.window:
            figures = compare_windows(monitor.reference, monitor.current, config.alpha)
            figures["at_step"] = step + start
            monitor = replace(monitor, last=figures)
            if figures["drift"]:
                evidence = evidence or figures
                monitor = replace(monitor, reference=monitor.current)
            monitor = replace(monitor, current=Window.empty(config.n_classes))
    return monitor, evidence
