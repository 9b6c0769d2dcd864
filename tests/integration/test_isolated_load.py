"""The process a candidate added at run time is loaded in first (`service.models.isolated`):
real child processes, each way a candidate can fail there, and what the child may not see."""

from __future__ import annotations

import os
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from service.models.isolated import load_isolated
from service.models.pool_file import CandidateSpec, PoolLoadError

MODULES = {
    "hog": "def make():\n    return bytearray(8 * 1024**3)\n",
    "leaves": "import os\n\ndef make():\n    os._exit(0)\n",
    "tells": "import os\n\ndef make():\n    raise RuntimeError(os.environ.get('PICKSERVE_TOKENS', 'none'))\n",
    "noisy": "import numpy as np\n\nclass M:\n    def predict_proba(self, x):\n        print('chatter')\n"
    "        return np.full((len(x), 2), 0.5)\n\ndef make():\n    print('chatter')\n    return M()\n",
}


@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    features = np.random.default_rng(0).normal(size=(20, 4))
    joblib.dump(LogisticRegression().fit(features, np.arange(20) % 2), tmp_path / "good.joblib")
    path = tmp_path / "pool.yaml"
    path.write_text("n_features: 4\nclasses: 2\ncandidates:\n"
                    "  - {name: a, sklearn: good.joblib}\n  - {name: b, sklearn: good.joblib}\n")  # fmt: skip
    return path


def refusal(pool_file: Path, **source: str) -> str:
    try:
        load_isolated(CandidateSpec(name="x", **source), pool_file, 30.0, 1024)
    except PoolLoadError as error:
        return str(error)
    return ""


def test_a_good_candidate_and_one_that_prints_load(pool_file: Path) -> None:
    assert refusal(pool_file, sklearn="good.joblib") == ""
    assert refusal(pool_file, python="noisy:make") == ""  # its output goes nowhere


def test_past_the_memory_bound_is_a_refusal(pool_file: Path) -> None:
    assert "make() raised MemoryError" in refusal(pool_file, python="hog:make")


def test_an_exit_is_a_refusal(pool_file: Path) -> None:
    assert "exited (code 0) before it loaded" in refusal(pool_file, python="leaves:make")


def test_the_child_sees_no_secret_of_the_environment(
    pool_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PICKSERVE_TOKENS", "the-secret-token-0123456789")
    message = refusal(pool_file, python="tells:make")
    assert "make() raised RuntimeError: none" in message
    assert "the-secret" not in message
    assert os.environ["PICKSERVE_TOKENS"] == "the-secret-token-0123456789"
