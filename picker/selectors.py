"""The pool selectors by name: the one module that knows them all (`picker.pooled` defines
their protocol, each selector its own module, and none of those imports this one)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from picker.coda import Coda
from picker.model_selector import ModelSelector
from picker.pool_based import PoolBased
from picker.pooled import SELECTOR_VERSION, PoolSelector


def selector_class(method: str) -> type[PoolSelector]:
    classes: dict[str, type[PoolSelector]] = {
        cls.method: cls for cls in (ModelSelector, Coda, PoolBased)
    }
    if method not in classes:
        raise ValueError(f"unknown pool method {method!r}; expected one of {', '.join(classes)}")
    return classes[method]


def make_selector(
    method: str,
    predictions: npt.ArrayLike,
    n_classes: int | None = None,
    param: float | None = None,
) -> PoolSelector:
    return selector_class(method)(predictions, n_classes, param)


def selector_from_dict(data: dict[str, Any]) -> PoolSelector:
    """Rebuild a selector from `to_dict`; the derived belief is recomputed from the labels."""
    if data.get("version") != SELECTOR_VERSION:
        raise ValueError(
            f"selector state version {data.get('version')!r} is not {SELECTOR_VERSION}"
        )
    labels = {int(item): int(label) for item, label in data["labels"]}
    cls = selector_class(str(data["method"]))
    param = None if data["param"] is None else float(data["param"])
    return cls(
        np.asarray(data["predictions"], dtype=np.int64), int(data["n_classes"]), param, labels
    )


POOL_METHODS: tuple[str, ...] = ("model-selector", "coda", "pool-based")
