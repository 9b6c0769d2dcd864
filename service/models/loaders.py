"""Loading a pool's candidates: each entry of the pool file becomes a `Candidate` (a
joblib/pickle file, an ONNX file, a `python:` factory, or a version in an MLflow registry,
`service.models.registry`), confined to the pool folder and probed on zeros before it is
trusted; `LoadedPool` is the whole pool, loaded."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.models import registry
from service.models.pool_file import (
    NO_CLASS,
    CandidateSpec,
    FloatMatrix,
    PoolLoadError,
    PoolSpec,
    one_line,
    read_pool_spec,
)
from service.models.registry import RegistryError, RegistryRef


def predicted_classes(
    probabilities: FloatMatrix, no_class: int = NO_CLASS
) -> npt.NDArray[np.int64]:
    """The predicted class of each row: the most probable one, or `no_class` where the
    row's probabilities are not finite (so that such a row counts as a mistake)."""
    finite = np.isfinite(probabilities).all(axis=1)
    return np.where(finite, probabilities.argmax(axis=1), no_class).astype(np.int64)


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
    origin: RegistryRef | None = None  # the registry version an `mlflow:` entry resolved to

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
        elif spec.mlflow is None:
            _model_file(pool_file.parent, spec.source)
        elif registry.tracking_uri() is None:  # a registry version is checked when loaded
            raise _CandidateError(registry.NOT_CONFIGURED)
    except _CandidateError as reason:
        raise _failure(spec, pool_file, reason) from None


def check_registry(spec: CandidateSpec, pool_file: Path, pool: PoolSpec) -> None:
    """For an `mlflow:` candidate, what the registry's records refuse (an unknown model,
    version or alias, a signature that does not fit the pool), before any process loads
    it: a clear 422 in a REST call's time. PoolLoadError, as `load_candidate` words it."""
    if spec.mlflow is None:
        return
    try:
        registry.checked(spec.mlflow, pool.n_features, len(pool.class_names))
    except RegistryError as error:
        raise _failure(spec, pool_file, error) from None


def load_candidate(spec: CandidateSpec, pool_file: Path, pool: PoolSpec) -> Candidate:
    """Load and probe one candidate; PoolLoadError names it, its source and the reason."""
    origin = None
    try:
        if spec.python is not None:
            model = _import_factory(spec, pool_file, pool)
        elif spec.mlflow is not None:
            try:
                model, origin = registry.load(spec.mlflow, pool.n_features, len(pool.class_names))
            except RegistryError as error:
                raise _CandidateError(str(error)) from None
        else:
            model = _open_file(spec, pool_file.parent)
        if spec.onnx is None and not callable(getattr(model, "predict_proba", None)):
            reason = f"it holds a {type(model).__name__}, which has no predict_proba(X)"
            raise _CandidateError(reason)
        columns = None if spec.onnx else _output_columns(model, pool.class_names)
        candidate = Candidate(spec.name, model, len(pool.class_names), spec.kind, columns, origin)
        _probe(candidate, pool.n_features)
    except _CandidateError as reason:
        raise _failure(spec, pool_file, reason) from reason.__cause__
    return candidate


def load_pool(path: Path) -> LoadedPool:
    """Load and probe every candidate; the first that fails stops it with a one-line
    PoolLoadError naming the candidate, its file and the reason."""
    spec = read_pool_spec(path)
    use_search_path(path, spec)
    return LoadedPool(spec, [load_candidate(c, path, spec) for c in spec.candidates])
