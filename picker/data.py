"""Recorded prediction matrices: loading, validation and derived per-item facts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from picker.modelpicker import BoolArray, IntArray, compact_classes


class PickerInputError(ValueError):
    """Input the picker's tools cannot use; the message says what is wrong."""


def load_matrix(path: str | Path) -> npt.NDArray[np.float64]:
    """Load a `.npy` or `.csv` (comma-separated numbers, no header) file as float64."""
    path = Path(path)
    if not path.is_file():
        raise PickerInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PickerInputError(f"{path}: the file is empty")
    try:
        if path.suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            raw = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise PickerInputError(f"{path}: expected a .npy or .csv file")
        values: npt.NDArray[np.float64] = np.asarray(raw, dtype=np.float64)
    except PickerInputError:
        raise
    except (ValueError, OSError, TypeError) as error:
        raise PickerInputError(f"{path}: cannot read numbers from it ({error})") from error
    if values.size == 0:
        raise PickerInputError(f"{path}: the file holds no values")
    return values


def as_classes(values: npt.NDArray[np.float64], what: str) -> IntArray:
    """Class ids must be finite whole numbers (a float file holding 1.0, 2.0 is fine)."""
    if not np.all(np.isfinite(values)):
        raise PickerInputError(f"{what}: class ids must be finite numbers")
    if not np.all(values == np.round(values)):
        example = values[values != np.round(values)][0]
        raise PickerInputError(f"{what}: class ids must be whole numbers, found {example}")
    return values.astype(np.int64)


@dataclass(frozen=True)
class Pool:
    """A recorded pool: predictions (n_items, k) and true classes (n_items,), from 0."""

    predictions: IntArray
    oracle: IntArray

    @property
    def n_items(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def n_models(self) -> int:
        return int(self.predictions.shape[1])

    @property
    def n_classes(self) -> int:
        return int(max(self.predictions.max(), self.oracle.max()) + 1)

    def compact(self) -> IntArray:
        return compact_classes(self.predictions)

    def errors(self) -> BoolArray:
        result: BoolArray = self.predictions != self.oracle[:, None]
        return result


def make_pool(predictions: npt.ArrayLike, oracle: npt.ArrayLike) -> Pool:
    """Validate shapes and classes; shift class ids so the smallest is 0."""
    preds_raw = np.asarray(predictions, dtype=np.float64)
    oracle_raw = np.asarray(oracle, dtype=np.float64)
    if preds_raw.ndim != 2:
        raise PickerInputError(
            f"predictions must be a 2-D (items x models) matrix, got shape {preds_raw.shape}"
        )
    if oracle_raw.ndim == 2 and oracle_raw.shape[1] == 1:
        oracle_raw = oracle_raw[:, 0]
    if oracle_raw.ndim != 1:
        raise PickerInputError(
            f"oracle must be a vector (items,) or (items, 1), got shape {oracle_raw.shape}"
        )
    if preds_raw.shape[0] != oracle_raw.shape[0]:
        raise PickerInputError(
            f"predictions have {preds_raw.shape[0]} items but the oracle has {oracle_raw.shape[0]}"
        )
    if preds_raw.shape[0] == 0:
        raise PickerInputError("the pool holds no items")
    if preds_raw.shape[1] < 2:
        raise PickerInputError(
            f"model selection needs at least 2 models, the pool has {preds_raw.shape[1]}"
        )
    preds = as_classes(preds_raw, "predictions")
    truth = as_classes(oracle_raw, "oracle")
    lowest = min(int(preds.min()), int(truth.min()))
    return Pool(predictions=preds - lowest, oracle=truth - lowest)


def load_pool(predictions_path: str | Path, oracle_path: str | Path) -> Pool:
    return make_pool(load_matrix(predictions_path), load_matrix(oracle_path))
