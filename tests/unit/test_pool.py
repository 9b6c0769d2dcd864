"""Pool files: every kind of candidate loads from real files; failures name the candidate."""

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from service.models.loaders import load_pool
from service.models.pool_file import PoolLoadError, as_feature_matrix
from tests import bad_pools

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
Y = np.arange(60) % 3


def write_pool(folder: Path, candidates: str, classes: str = "3", extra: str = "") -> Path:
    path = folder / "pool.yaml"
    path.write_text(f"n_features: 4\nclasses: {classes}\n{extra}candidates:\n{candidates}")
    return path


@pytest.fixture
def model_files(tmp_path: Path) -> Path:
    from skl2onnx import to_onnx

    model = LogisticRegression().fit(X, Y)
    joblib.dump(model, tmp_path / "logreg.joblib")
    sliced = LogisticRegression().fit(X[Y != 2], Y[Y != 2])  # knows classes 0 and 1 only
    joblib.dump(sliced, tmp_path / "sliced.joblib")
    onnx_model = to_onnx(model, X[:1].astype(np.float32), options={"zipmap": False})
    (tmp_path / "logreg.onnx").write_bytes(onnx_model.SerializeToString())
    return tmp_path


def test_sklearn_onnx_and_python_candidates_load(model_files: Path) -> None:
    pool = load_pool(write_pool(model_files, (
        "  - {name: sk, sklearn: logreg.joblib}\n"
        "  - {name: slice, sklearn: sliced.joblib}\n"
        "  - {name: ox, onnx: logreg.onnx}\n"
        "  - {name: py, python: 'tests.fixtures.models:make_uniform'}\n"
    ), extra="allow_installed_modules: true\n"))  # fmt: skip
    assert pool.names == ["sk", "slice", "ox", "py"]
    sk, sliced, ox, py = (c.class_probabilities(X[:5]) for c in pool.candidates)
    np.testing.assert_allclose(ox, sk, atol=1e-5)
    assert sliced.shape == (5, 3) and np.all(sliced[:, 2] == 0)
    np.testing.assert_allclose(py, 1 / 3)
    predictions = pool.predict_all(X[:5])
    assert predictions.shape == (5, 4) and predictions.dtype == np.int64


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ("  - {name: a, sklearn: logreg.joblib}\n", "at least 2"),
        ("  - {name: a, sklearn: logreg.joblib}\n  - {name: a, onnx: logreg.onnx}\n", "unique"),
        ("  - {name: a, sklearn: logreg.joblib, onnx: logreg.onnx}\n  - {name: b, onnx: logreg.onnx}\n", "exactly one"),
    ],
)  # fmt: skip
def test_pool_files_that_break_the_schema_are_refused(
    model_files: Path, candidates: str, message: str
) -> None:
    with pytest.raises(PoolLoadError, match=message):
        load_pool(write_pool(model_files, candidates))


@pytest.mark.parametrize("kind", sorted(bad_pools.KINDS))
def test_every_failure_kind_is_one_line_naming_candidate_file_and_reason(
    tmp_path: Path, kind: str
) -> None:
    path, fragments = bad_pools.make(kind, tmp_path / kind)
    with pytest.raises(PoolLoadError) as raised:
        load_pool(path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_class_count_mismatch_is_named(model_files: Path) -> None:
    """sklearn's classes_ place a 3-class model in a 5-class pool; ONNX has no such map."""
    path = write_pool(
        model_files,
        "  - {name: a, sklearn: logreg.joblib}\n  - {name: b, onnx: logreg.onnx}\n",
        "5",
    )
    with pytest.raises(PoolLoadError, match=r"'b'.*3 class probabilities per item, the pool has 5"):
        load_pool(path)


def test_models_trained_on_class_names_are_placed_by_name(tmp_path: Path) -> None:
    """A model fitted on string labels has classes_ sorted by name: its columns land on
    the pool's classes by name, whatever the order."""
    names = np.array(["setosa", "versicolor", "virginica"])[Y]
    joblib.dump(LogisticRegression().fit(X, names), tmp_path / "named.joblib")
    joblib.dump(LogisticRegression().fit(X, Y), tmp_path / "indexed.joblib")
    pool = load_pool(write_pool(tmp_path, (
        "  - {name: named, sklearn: named.joblib}\n"
        "  - {name: indexed, sklearn: indexed.joblib}\n"
    ), classes="[virginica, setosa, versicolor]"))  # fmt: skip
    named, indexed = (c.class_probabilities(X[:20]) for c in pool.candidates)
    # indexed's column k is class index k; named's "setosa" column must land on index 1
    np.testing.assert_allclose(named[:, [1, 2, 0]], indexed, atol=1e-6)


def test_python_modules_are_found_beside_the_pool_file_and_on_python_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "beside_pool_mod.py").write_text(bad_pools.MODULE)
    (tmp_path / "lib" / "on_path_mod.py").write_text(bad_pools.MODULE)
    path = tmp_path / "pool.yaml"
    path.write_text(
        "n_features: 4\nclasses: 3\npython_path: [lib]\ncandidates:\n"
        "  - {name: a, python: 'beside_pool_mod:make_three'}\n"
        "  - {name: b, python: 'on_path_mod:make_three'}\n"
    )
    pool = load_pool(path)
    assert pool.names == ["a", "b"]
    assert pool.predict_all(X[:3]).shape == (3, 2)


def test_missing_pool_file(tmp_path: Path) -> None:
    with pytest.raises(PoolLoadError, match=r"nope\.yaml: no such pool file"):
        load_pool(tmp_path / "nope.yaml")


def test_feature_validation() -> None:
    assert as_feature_matrix([[1, 2], [3, 4]], 2).shape == (2, 2)
    with pytest.raises(ValueError, match="2 features, got lengths \\[1, 2\\]"):
        as_feature_matrix([[1], [3, 4]], 2)
    with pytest.raises(ValueError, match="finite"):
        as_feature_matrix([[1, float("nan")]], 2)
