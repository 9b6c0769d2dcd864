"""What a pool file (and so an admin's POST /v1/candidates) may name: model files below the
pool folder only, `python:` modules from the pool folder or python_path only (installed
packages when the pool file says so), bounded fields, no candidate called `router`; and no
error message that quotes a file's contents or tells what exists outside the pool."""

from __future__ import annotations

import os
from pathlib import Path

import joblib
import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression

from service.models.loaders import load_candidate, use_search_path
from service.models.pool_file import CandidateSpec, PoolLoadError, read_pool_spec
from tests import bad_pools

X = np.random.default_rng(0).normal(size=(30, 4))


@pytest.fixture
def pool_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "pool"
    folder.mkdir()
    joblib.dump(LogisticRegression().fit(X, np.arange(30) % 2), folder / "good.joblib")
    (folder / "mymodels.py").write_text(bad_pools.MODULE)
    (folder / "pool.yaml").write_text(
        "n_features: 4\nclasses: 2\ncandidates:\n"
        "  - {name: a, sklearn: good.joblib}\n  - {name: b, sklearn: good.joblib}\n"
    )
    return folder


def load(folder: Path, **source: str) -> str:
    """The one-line refusal for loading this candidate ('' if it loads)."""
    pool_file = folder / "pool.yaml"
    pool = read_pool_spec(pool_file)
    use_search_path(pool_file, pool)
    try:
        load_candidate(CandidateSpec(name="x", **source), pool_file, pool)
    except PoolLoadError as error:
        return str(error)
    return ""


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../../../etc/passwd", "/proc/self/environ", "/nonexistent/x.joblib",
     "../outside.joblib"],
)  # fmt: skip
def test_a_model_path_outside_the_pool_folder_is_refused_alike(
    pool_folder: Path, path: str
) -> None:
    """Whether the path exists or not, the answer is the same and quotes nothing of it."""
    (pool_folder.parent / "outside.joblib").write_bytes(b"planted")
    message = load(pool_folder, sklearn=path)
    assert "is outside the pool folder" in message
    assert "no such file" not in message and "not a file" not in message
    assert "root:" not in message and "PATH=" not in message


def test_a_symlink_that_leaves_the_pool_folder_is_refused(pool_folder: Path) -> None:
    planted = pool_folder.parent / "planted.joblib"
    joblib.dump(LogisticRegression().fit(X, np.arange(30) % 2), planted)
    os.symlink(planted, pool_folder / "inside.joblib")
    assert "is outside the pool folder" in load(pool_folder, sklearn="inside.joblib")
    os.symlink(pool_folder / "good.joblib", pool_folder / "alias.joblib")
    assert load(pool_folder, sklearn="alias.joblib") == ""  # a link that stays inside is fine


def test_an_unreadable_file_is_named_by_type_never_by_its_bytes(pool_folder: Path) -> None:
    (pool_folder / "secret.joblib").write_bytes(b"\x80\x04SECRET-TOKEN-VALUE garbage")
    message = load(pool_folder, sklearn="secret.joblib")
    assert "cannot be unpickled" in message and "SECRET" not in message
    (pool_folder / "secret.onnx").write_bytes(b"SECRET-TOKEN-VALUE")
    message = load(pool_folder, onnx="secret.onnx")
    assert "not a loadable ONNX model" in message and "SECRET" not in message


def test_a_name_too_long_for_the_file_system_is_a_refusal(pool_folder: Path) -> None:
    assert load(pool_folder, sklearn="a" * 1000) != ""  # ENAMETOOLONG, not an OSError


@pytest.mark.parametrize("source", ["os:abort", "signal:pause", "ray.serve:shutdown"])
def test_installed_modules_are_refused_unless_the_pool_allows_them(
    pool_folder: Path, source: str
) -> None:
    message = load(pool_folder, python=source)
    assert "cannot import module" in message and "is not in the pool folder" in message


def test_a_module_beside_the_pool_file_loads(pool_folder: Path) -> None:
    text = (pool_folder / "pool.yaml").read_text().replace("classes: 2", "classes: 3")
    (pool_folder / "pool.yaml").write_text(text)
    assert load(pool_folder, python="mymodels:make_three") == ""


def test_allow_installed_modules_opens_installed_packages(pool_folder: Path) -> None:
    text = (pool_folder / "pool.yaml").read_text()
    (pool_folder / "pool.yaml").write_text("allow_installed_modules: true\n" + text)
    assert "is not in the pool folder" not in load(
        pool_folder, python="tests.fixtures.models:make_uniform"
    )


@pytest.mark.parametrize(
    "fields",
    [{"name": "router", "sklearn": "good.joblib"},  # the served model's name in OIP v2
     {"name": "x", "sklearn": "a" * 5000},  # the 5,000-character path
     {"name": "x", "sklearn": ""},
     {"name": "x", "sklearn": "a\x00b"},
     {"name": "x", "python": "m" * 300 + ":f"},
     {"name": "x" * 65, "sklearn": "good.joblib"}],
)  # fmt: skip
def test_candidate_fields_are_bounded(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        CandidateSpec(**fields)
