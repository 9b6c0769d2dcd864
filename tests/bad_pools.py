"""Every way a pool can fail, each as a folder with a pool file and the reason it must give.

`make(kind, folder)` writes the pool and returns its path and the fragments the one-line
error must contain (the candidate, the file, the reason).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
Y = np.arange(60) % 2

MODULE = """
import numpy as np

class ThreeColumns:
    def predict_proba(self, features):
        return np.full((len(features), 3), 1 / 3)

def make_three():
    return ThreeColumns()

def make_broken():
    raise RuntimeError("weights are corrupt")
"""


def _pool(folder: Path, candidate: str, classes: str = "2", n_features: int = 4) -> Path:
    features = RNG.normal(size=(60, n_features))
    joblib.dump(LogisticRegression().fit(features, Y), folder / "good.joblib")
    (folder / "mymodels.py").write_text(MODULE)
    path = folder / "pool.yaml"
    path.write_text(
        f"n_features: {n_features}\nclasses: {classes}\ncandidates:\n"
        f"  - {{name: good, sklearn: good.joblib}}\n  - {candidate}\n"
    )
    return path


def yaml_syntax(folder: Path) -> tuple[Path, list[str]]:
    path = folder / "pool.yaml"
    path.write_text("n_features: 4\nclasses: [a, b\ncandidates: []\n")
    return path, ["pool.yaml", "not valid YAML at line"]


def yaml_schema(folder: Path) -> tuple[Path, list[str]]:
    path = folder / "pool.yaml"
    path.write_text("classes: 2\ncandidates:\n  - {name: a, sklearn: a.joblib}\n")
    return path, ["pool.yaml", "not a valid pool file", "n_features: Field required"]


def missing_file(folder: Path) -> tuple[Path, list[str]]:
    return _pool(folder, "{name: lost, sklearn: models/lost.joblib}"), [
        "candidate 'lost'", "models/lost.joblib", "no such file"]  # fmt: skip


def not_a_file(folder: Path) -> tuple[Path, list[str]]:
    (folder / "adir.joblib").mkdir()
    return _pool(folder, "{name: dir, sklearn: adir.joblib}"), [
        "candidate 'dir'", "adir.joblib", "not a file"]  # fmt: skip


def corrupt_pickle(folder: Path) -> tuple[Path, list[str]]:
    (folder / "corrupt.joblib").write_bytes(b"\x80\x04this is not a pickle")
    return _pool(folder, "{name: corrupt, sklearn: corrupt.joblib}"), [
        "candidate 'corrupt'", "corrupt.joblib", "cannot be unpickled"]  # fmt: skip


def pickle_needs_module(folder: Path) -> tuple[Path, list[str]]:
    """A pickle of a class whose module is gone where the pool is loaded."""
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "vanished_models.py").write_text(MODULE)
    sys.path.insert(0, str(elsewhere))
    try:
        import vanished_models  # type: ignore[import-not-found]

        joblib.dump(vanished_models.make_three(), folder / "needs.joblib")
    finally:
        sys.path.remove(str(elsewhere))
        sys.modules.pop("vanished_models", None)
    (elsewhere / "vanished_models.py").unlink()
    return _pool(folder, "{name: needs, sklearn: needs.joblib}"), [
        "candidate 'needs'", "needs.joblib", "needs module 'vanished_models'"]  # fmt: skip


def wrong_type(folder: Path) -> tuple[Path, list[str]]:
    joblib.dump({"weights": [1.0, 2.0]}, folder / "dict.joblib")
    return _pool(folder, "{name: plain, sklearn: dict.joblib}"), [
        "candidate 'plain'", "dict.joblib", "holds a dict, which has no predict_proba"]  # fmt: skip


def import_error(folder: Path) -> tuple[Path, list[str]]:
    return _pool(folder, "{name: rule, python: 'no_such_module_here:make'}"), [
        "candidate 'rule'", "no_such_module_here:make", "cannot import module"]  # fmt: skip


def no_factory(folder: Path) -> tuple[Path, list[str]]:
    return _pool(folder, "{name: rule, python: 'mymodels:make_nothing'}"), [
        "candidate 'rule'", "mymodels:make_nothing", "has no function 'make_nothing'"]  # fmt: skip


def factory_raises(folder: Path) -> tuple[Path, list[str]]:
    return _pool(folder, "{name: rule, python: 'mymodels:make_broken'}"), [
        "candidate 'rule'", "mymodels:make_broken",
        "make_broken() raised RuntimeError: weights are corrupt"]  # fmt: skip


def wrong_outputs(folder: Path) -> tuple[Path, list[str]]:
    return _pool(folder, "{name: three, python: 'mymodels:make_three'}"), [
        "candidate 'three'", "mymodels:make_three",
        "returns 3 class probabilities per item, the pool has 2 classes"]  # fmt: skip


def wrong_classes(folder: Path) -> tuple[Path, list[str]]:
    """Trained on class names the pool does not declare."""
    named = LogisticRegression().fit(X, np.where(Y == 1, "dog", "cat"))
    joblib.dump(named, folder / "pets.joblib")
    return _pool(folder, "{name: pets, sklearn: pets.joblib}", classes="[benign, malignant]"), [
        "candidate 'pets'", "pets.joblib", "classes_ ['cat', 'dog'] are not among"]  # fmt: skip


def wrong_features(folder: Path) -> tuple[Path, list[str]]:
    joblib.dump(LogisticRegression().fit(X, Y), folder / "narrow.joblib")  # 4 features
    path = _pool(folder, "{name: narrow, sklearn: narrow.joblib}", n_features=6)
    return path, ["candidate 'narrow'", "narrow.joblib", "probe batch of shape (2, 6)",
                  "X has 6 features"]  # fmt: skip


def bad_onnx(folder: Path) -> tuple[Path, list[str]]:
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    return _pool(folder, "{name: graph, onnx: model.onnx}"), [
        "candidate 'graph'", "model.onnx", "not a loadable ONNX model"]  # fmt: skip


KINDS: dict[str, Callable[[Path], tuple[Path, list[str]]]] = {
    f.__name__: f
    for f in (
        yaml_syntax, yaml_schema, missing_file, not_a_file, corrupt_pickle, pickle_needs_module,
        wrong_type, import_error, no_factory, factory_raises, wrong_outputs, wrong_classes,
        wrong_features, bad_onnx,
    )
}  # fmt: skip


def make(kind: str, folder: Path) -> tuple[Path, list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    return KINDS[kind](folder)
