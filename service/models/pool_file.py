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
Model files are named relative to the YAML file and must resolve (symlinks followed) to a
file below its folder, the pool folder: a path outside it is refused without a word on
whether it exists. A `python:` module must be found in the pool folder or in the folders
of an optional `python_path:` list (relative to that folder); installed packages only with
`allow_installed_modules: true` in the pool file. Each candidate is loaded and probed once
(a batch of zeros must give one probability per class): anything that fails stops start-up
with one line naming the candidate, its file and the reason (never the file's contents).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

FloatMatrix = npt.NDArray[np.float64]
NO_CLASS = -1  # a row whose class probabilities are not finite: no label equals it


def predicted_classes(
    probabilities: FloatMatrix, no_class: int = NO_CLASS
) -> npt.NDArray[np.int64]:
    """The predicted class of each row: the most probable one, or `no_class` where the
    row's probabilities are not finite (so that such a row counts as a mistake)."""
    finite = np.isfinite(probabilities).all(axis=1)
    return np.where(finite, probabilities.argmax(axis=1), no_class).astype(np.int64)


class PoolLoadError(RuntimeError):
    """The pool file or one of its candidates cannot be loaded. The message is one line
    naming the pool file, the candidate and its source, and the reason."""


def one_line(error: BaseException) -> str:
    """An exception as `Type: first line of its message`, whitespace collapsed."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


SERVED_MODEL = "router"  # the name OIP v2 clients use for the served model, never a candidate
CANDIDATE_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MODEL_PATH_CHARS = 1024  # a model file's path, relative to the pool folder


def _no_nul(path: str | None) -> str | None:
    if path is not None and "\x00" in path:
        raise ValueError("a path holds no NUL character")
    return path


ModelPath = Annotated[
    str, Field(min_length=1, max_length=MODEL_PATH_CHARS), AfterValidator(_no_nul)
]


class CandidateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ..., pattern=CANDIDATE_NAME_PATTERN, max_length=64,
        description=f"the candidate's name (not {SERVED_MODEL!r}: that names the served model)",
    )  # fmt: skip
    sklearn: ModelPath | None = Field(
        None, description="joblib or skops file of a fitted estimator, below the pool folder"
    )
    onnx: ModelPath | None = Field(
        None, description="ONNX file (onnxruntime), below the pool folder"
    )
    python: str | None = Field(
        None, pattern=r"^[\w.]+:[\w]+$", max_length=256,
        description="module:factory, the module in the pool folder or python_path",
    )  # fmt: skip

    @model_validator(mode="after")
    def exactly_one_source(self) -> CandidateSpec:
        if self.name == SERVED_MODEL:
            raise ValueError(f"{SERVED_MODEL!r} names the served model: choose another name")
        given = [s for s in (self.sklearn, self.onnx, self.python) if s is not None]
        if len(given) != 1:
            raise ValueError(f"candidate {self.name!r}: give exactly one of sklearn, onnx, python")
        return self

    @property
    def kind(self) -> str:
        return "python" if self.python else "onnx" if self.onnx else "sklearn"

    @property
    def source(self) -> str:
        return self.python or self.onnx or self.sklearn or ""


class PoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_features: int = Field(..., ge=1, le=1_000_000)
    classes: int | list[str] = Field(..., description="number of classes, or their names")
    initial: str | None = None
    image_shape: list[int] | None = Field(
        None, min_length=2, max_length=3,
        description="how a person sees an instance: [height, width] (grey) or [height, "
        "width, 3] (RGB), row-major; absent: a table of features",
    )  # fmt: skip
    python_path: list[str] = Field(
        default_factory=list, max_length=64,
        description="folders searched for `python:` modules, relative to the pool file's "
        "folder (which is always searched first)",
    )  # fmt: skip
    allow_installed_modules: bool = Field(
        False,
        description="`python:` modules may also come from the installed packages (by default "
        "only from the pool folder and python_path)",
    )
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
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class names must be unique")
        if self.image_shape is not None:
            size = int(np.prod(self.image_shape))
            if size != self.n_features or min(self.image_shape) < 1:
                raise ValueError(f"image_shape {self.image_shape} does not hold n_features")
            if len(self.image_shape) == 3 and self.image_shape[2] != 3:
                raise ValueError("a 3-dimensional image_shape ends with 3 (RGB)")
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
    """One loaded model; `class_probabilities` maps its outputs onto the pool's classes.

    `columns[j]` is the pool class of the model's output column j (a model trained on a
    slice may know only some classes, or name them): None when they are the same."""

    name: str
    model: Any
    n_classes: int
    kind: str
    columns: npt.NDArray[np.int64] | None = None

    def class_probabilities(self, features: FloatMatrix) -> FloatMatrix:
        if self.kind == "onnx":
            raw = self._onnx_probabilities(features)
        else:
            raw = np.asarray(self.model.predict_proba(features), dtype=np.float64)
        if self.columns is None:
            return raw
        full = np.zeros((raw.shape[0], self.n_classes))
        full[:, self.columns] = raw
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
        columns = [predicted_classes(c.class_probabilities(features), no_class)
                   for c in self.candidates]  # fmt: skip
        return np.stack(columns, axis=1).astype(np.int64)


class _CandidateError(Exception):
    """Why one candidate failed, in words for the one-line error."""


def search_path(pool_file: Path, spec: PoolSpec) -> list[Path]:
    """Where `python:` modules are looked for: the pool file's folder, then python_path."""
    folder = pool_file.resolve().parent
    return [folder, *((folder / extra).resolve() for extra in spec.python_path)]


def use_search_path(pool_file: Path, spec: PoolSpec) -> None:
    """Put the pool's module folders first on sys.path (in the driver and in every Ray
    worker that loads the pool), so modules beside the pool file import without PYTHONPATH."""
    for folder in reversed(search_path(pool_file, spec)):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def _check_module_place(module_name: str, pool_file: Path, pool: PoolSpec) -> None:
    """A `python:` module must come from the pool folder or python_path, unless the pool
    file allows installed packages: an admin naming `os:abort` gets a refusal, not a call."""
    if pool.allow_installed_modules:
        return
    folders = search_path(pool_file, pool)
    top = module_name.split(".")[0]
    finder = importlib.machinery.PathFinder  # looks in those folders only
    inside = finder.find_spec(top, [str(f) for f in folders]) is not None
    if not inside:
        raise _CandidateError(
            f"cannot import module {module_name!r}: it is not in the pool folder or "
            f"python_path ({', '.join(str(f) for f in folders)}; installed packages only "
            "with allow_installed_modules: true in the pool file)"
        )


def _import_factory(spec: CandidateSpec, pool_file: Path, pool: PoolSpec) -> Any:
    assert spec.python is not None
    module_name, factory_name = spec.python.split(":")
    _check_module_place(module_name, pool_file, pool)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        searched = ", ".join(str(p) for p in search_path(pool_file, pool))
        raise _CandidateError(
            f"cannot import module {module_name!r} ({one_line(error)}); searched the pool "
            f"folder and python_path ({searched}) and the installed packages"
        ) from error
    except Exception as error:
        reason = f"importing module {module_name!r} raised {one_line(error)}"
        raise _CandidateError(reason) from error
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise _CandidateError(f"module {module_name!r} has no function {factory_name!r}")
    try:
        return factory()
    except (Exception, SystemExit) as error:  # a factory that exits must not end the replica
        raise _CandidateError(f"{factory_name}() raised {one_line(error)}") from error


def confined_path(base: Path, source: str) -> Path:
    """`source` resolved (symlinks followed) below the pool folder `base`; a path that
    leaves it is refused before anything is looked up there (the answer says nothing of
    what exists outside the pool)."""
    root = base.resolve()
    try:
        path = (root / source).resolve()
    except (OSError, RuntimeError, ValueError):
        raise _CandidateError("its path cannot be resolved") from None
    if not path.is_relative_to(root):
        raise _CandidateError(
            f"its path is outside the pool folder {root}: model files must be below it"
        )
    return path


def _model_file(base: Path, source: str) -> Path:
    """The model file `source` names: below the pool folder `base`, and a file."""
    path = confined_path(base, source)
    try:
        exists, is_file = path.exists(), path.is_file()
    except OSError as error:
        raise _CandidateError(f"cannot look up {path} ({type(error).__name__})") from None
    if not exists:
        raise _CandidateError(f"no such file: {path}")
    if not is_file:
        raise _CandidateError(f"not a file: {path}")
    return path


def _open_file(spec: CandidateSpec, base: Path) -> Any:
    path = _model_file(base, spec.source)
    if spec.onnx is not None:
        import onnxruntime

        try:
            return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # its message may quote the file: the type alone
            reason = f"not a loadable ONNX model ({type(error).__name__})"
            raise _CandidateError(reason) from error
    try:
        if path.suffix == ".skops":
            import skops.io

            return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
        import joblib

        return joblib.load(path)
    except ModuleNotFoundError as error:
        raise _CandidateError(
            f"cannot be unpickled: it needs module {error.name!r}, which is not installed "
            "where the pool is loaded"
        ) from error
    except OSError as error:
        raise _CandidateError(f"cannot read {path} ({type(error).__name__})") from error
    except Exception as error:  # its message may quote the file's bytes: the type alone
        raise _CandidateError(f"cannot be unpickled ({type(error).__name__})") from error


def _output_columns(model: Any, class_names: list[str]) -> npt.NDArray[np.int64] | None:
    """Where a scikit-learn-style model's `classes_` sit among the pool's classes."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        return None
    known = list(np.asarray(classes).ravel())
    if all(isinstance(c, (int, np.integer)) for c in known):
        outside = [int(c) for c in known if not 0 <= int(c) < len(class_names)]
        if outside:
            raise _CandidateError(
                f"its classes_ include {outside}, outside the pool's class indices "
                f"0..{len(class_names) - 1}"
            )
        indices = [int(c) for c in known]
    else:
        names = [str(c) for c in known]
        missing = [n for n in names if n not in class_names]
        if missing:
            reason = f"its classes_ {missing} are not among the pool's classes {class_names}"
            raise _CandidateError(reason)
        indices = [class_names.index(n) for n in names]
    if indices == list(range(len(class_names))):
        return None
    return np.asarray(indices, dtype=np.int64)


def _probe(candidate: Candidate, n_features: int) -> None:
    """Run the model once on a small batch: it must take n_features and give one
    probability per pool class."""
    probe = np.zeros((2, n_features))
    try:
        probabilities = candidate.class_probabilities(probe)
    except Exception as error:
        raise _CandidateError(
            f"failed on a probe batch of shape (2, {n_features}) (does it take the pool's "
            f"n_features={n_features}?): {one_line(error)}"
        ) from error
    if probabilities.ndim != 2 or probabilities.shape[0] != 2:
        raise _CandidateError(
            f"predict_proba on 2 items returned shape {probabilities.shape}, not (2, classes)"
        )
    if probabilities.shape[1] != candidate.n_classes:
        raise _CandidateError(
            f"it returns {probabilities.shape[1]} class probabilities per item, the pool has "
            f"{candidate.n_classes} classes"
        )


def _failure(spec: CandidateSpec, pool_file: Path, reason: object) -> PoolLoadError:
    return PoolLoadError(f"{pool_file}: candidate {spec.name!r} ({spec.kind} {spec.source}): "
                         f"{reason}")  # fmt: skip


def check_place(spec: CandidateSpec, pool_file: Path, pool: PoolSpec) -> None:
    """What can be refused without running anything of the candidate: a model file that
    is not below the pool folder (or not there), a module that is not in the pool folder
    or python_path. PoolLoadError, as `load_candidate` words it."""
    try:
        if spec.python is not None:
            _check_module_place(spec.python.split(":")[0], pool_file, pool)
        else:
            _model_file(pool_file.parent, spec.source)
    except _CandidateError as reason:
        raise _failure(spec, pool_file, reason) from None


def load_candidate(spec: CandidateSpec, pool_file: Path, pool: PoolSpec) -> Candidate:
    """Load and probe one candidate; PoolLoadError names it, its source and the reason."""
    try:
        if spec.python is not None:
            model = _import_factory(spec, pool_file, pool)
        else:
            model = _open_file(spec, pool_file.parent)
        if spec.onnx is None and not callable(getattr(model, "predict_proba", None)):
            reason = f"it holds a {type(model).__name__}, which has no predict_proba(X)"
            raise _CandidateError(reason)
        columns = None if spec.onnx else _output_columns(model, pool.class_names)
        candidate = Candidate(spec.name, model, len(pool.class_names), spec.kind, columns)
        _probe(candidate, pool.n_features)
    except _CandidateError as reason:
        raise _failure(spec, pool_file, reason) from reason.__cause__
    return candidate


def read_pool_spec(path: Path) -> PoolSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise PoolLoadError(f"{path}: no such pool file") from error
    except OSError as error:
        raise PoolLoadError(f"{path}: cannot read the pool file ({one_line(error)})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or one_line(error)
        raise PoolLoadError(f"{path}: not valid YAML{where}: {problem}") from error
    try:
        return PoolSpec.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}"
            for e in error.errors()
        )
        raise PoolLoadError(f"{path}: not a valid pool file: {problems}") from error


def load_pool(path: Path) -> LoadedPool:
    """Load and probe every candidate; the first that fails stops it with a one-line
    PoolLoadError naming the candidate, its file and the reason."""
    spec = read_pool_spec(path)
    use_search_path(path, spec)
    return LoadedPool(spec, [load_candidate(c, path, spec) for c in spec.candidates])


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
