"""The candidate pool: a YAML file naming each candidate and how to load it.

```yaml
n_features: 64
classes: 10                 # or a list of class names
initial: logreg             # served before any label (default: the first candidate)
candidates:
  - {name: logreg, sklearn: models/logreg.joblib}     # joblib (or .skops) file
  - {name: mlp, onnx: models/mlp.onnx}                 # onnxruntime
  - {name: custom, python: my_pkg.models:make_model}   # factory() -> has predict_proba
```
Relative paths are relative to the YAML file. A candidate that fails to load is named in
the start-up error.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FloatMatrix = npt.NDArray[np.float64]


class PoolLoadError(RuntimeError):
    """The pool file or one of its candidates cannot be loaded; the message says which."""


class CandidateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sklearn: str | None = Field(None, description="joblib or skops file of a fitted estimator")
    onnx: str | None = Field(None, description="ONNX file (onnxruntime)")
    python: str | None = Field(None, pattern=r"^[\w.]+:[\w]+$", description="module:factory")

    @model_validator(mode="after")
    def exactly_one_source(self) -> CandidateSpec:
        given = [s for s in (self.sklearn, self.onnx, self.python) if s is not None]
        if len(given) != 1:
            raise ValueError(f"candidate {self.name!r}: give exactly one of sklearn, onnx, python")
        return self


class PoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_features: int = Field(..., ge=1, le=1_000_000)
    classes: int | list[str] = Field(..., description="number of classes, or their names")
    initial: str | None = None
    candidates: list[CandidateSpec] = Field(..., min_length=2, max_length=1000)

    @model_validator(mode="after")
    def consistent(self) -> PoolSpec:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError("candidate names must be unique")
        if self.initial is not None and self.initial not in names:
            raise ValueError(f"initial model {self.initial!r} is not a candidate")
        if len(self.class_names) < 2:
            raise ValueError("a pool needs at least 2 classes")
        return self

    @property
    def class_names(self) -> list[str]:
        if isinstance(self.classes, int):
            return [str(i) for i in range(self.classes)]
        return list(self.classes)


class ProbabilisticModel(Protocol):
    def predict_proba(self, features: Any) -> Any: ...


@dataclass
class Candidate:
    """One loaded model; `class_probabilities` maps its outputs onto the pool's classes."""

    name: str
    model: Any
    n_classes: int
    kind: str

    def class_probabilities(self, features: FloatMatrix) -> FloatMatrix:
        if self.kind == "onnx":
            return self._onnx_probabilities(features)
        raw = np.asarray(self.model.predict_proba(features), dtype=np.float64)
        classes = getattr(self.model, "classes_", None)
        if classes is None:
            return raw
        # A model trained on a slice may know only some classes: place its columns.
        full = np.zeros((raw.shape[0], self.n_classes))
        full[:, np.asarray(classes, dtype=np.int64)] = raw
        return full

    def _onnx_probabilities(self, features: FloatMatrix) -> FloatMatrix:
        session = self.model
        feed = {session.get_inputs()[0].name: features.astype(np.float32)}
        outputs = session.run(None, feed)
        probabilities = outputs[-1]
        if isinstance(probabilities, list):  # skl2onnx's ZipMap: one dict per row
            probabilities = [
                [row.get(c, 0.0) for c in range(self.n_classes)] for row in probabilities
            ]
        return np.asarray(probabilities, dtype=np.float64)


@dataclass
class LoadedPool:
    spec: PoolSpec
    candidates: list[Candidate]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.candidates]

    @property
    def initial_index(self) -> int:
        return 0 if self.spec.initial is None else self.names.index(self.spec.initial)

    def predict_all(self, features: FloatMatrix, no_class: int = -1) -> npt.NDArray[np.int64]:
        """Every candidate's predicted class, shape (items, models); `no_class` where a
        model's probabilities for an item are not finite."""
        columns = []
        for candidate in self.candidates:
            probabilities = candidate.class_probabilities(features)
            finite = np.isfinite(probabilities).all(axis=1)
            columns.append(np.where(finite, probabilities.argmax(axis=1), no_class))
        return np.stack(columns, axis=1).astype(np.int64)


def _load_model(spec: CandidateSpec, base: Path) -> tuple[Any, str]:
    if spec.python is not None:
        module_name, factory_name = spec.python.split(":")
        factory = getattr(importlib.import_module(module_name), factory_name)
        return factory(), "python"
    path = base / (spec.sklearn or spec.onnx or "")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if spec.onnx is not None:
        import onnxruntime

        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]), "onnx"
    if path.suffix == ".skops":
        import skops.io

        return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path)), "sklearn"
    import joblib

    return joblib.load(path), "sklearn"


def read_pool_spec(path: Path) -> PoolSpec:
    try:
        data = yaml.safe_load(path.read_text())
        return PoolSpec.model_validate(data)
    except FileNotFoundError as error:
        raise PoolLoadError(f"pool file {path} does not exist") from error
    except (yaml.YAMLError, ValidationError) as error:
        raise PoolLoadError(f"pool file {path} is not valid: {error}") from error


def load_pool(path: Path) -> LoadedPool:
    """Load every candidate; fail with the candidate's name if any cannot be loaded."""
    spec = read_pool_spec(path)
    candidates = []
    probe = np.zeros((1, spec.n_features))
    for candidate_spec in spec.candidates:
        try:
            model, kind = _load_model(candidate_spec, path.parent)
            candidate = Candidate(candidate_spec.name, model, len(spec.class_names), kind)
            probabilities = candidate.class_probabilities(probe)
            if probabilities.shape != (1, len(spec.class_names)):
                raise ValueError(
                    f"it returns {probabilities.shape[1]} class probabilities, the pool has "
                    f"{len(spec.class_names)} classes"
                )
        except Exception as error:
            raise PoolLoadError(
                f"candidate {candidate_spec.name!r} failed to load: {type(error).__name__}: {error}"
            ) from error
        candidates.append(candidate)
    return LoadedPool(spec, candidates)


def write_pool_file(path: Path, spec: PoolSpec) -> None:
    data = spec.model_dump(exclude_none=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def as_feature_matrix(instances: Sequence[Sequence[float]], n_features: int) -> FloatMatrix:
    """Validate a batch of feature vectors: right length, finite numbers."""
    widths = sorted({len(row) for row in instances})
    if widths != [n_features]:
        raise ValueError(f"each instance needs {n_features} features, got lengths {widths}")
    matrix = np.asarray(instances, dtype=np.float64)
    if not np.all(np.isfinite(matrix)):
        raise ValueError("instances must hold finite numbers (no NaN or infinity)")
    return matrix
