"""A user's own pool over real Ray Serve: class names in both APIs, feedback by name, and a
`python:` module beside the pool file imported in the replicas without PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from tests.integration.conftest import Deployer
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]

RULE_MODULE = '''
import numpy as np

class BiggestIsMalignant:
    """Malignant when the mean radius (feature 0) is above 14."""

    def predict_proba(self, features):
        malignant = (np.asarray(features)[:, 0] > 14.0).astype(float)
        return np.stack([malignant, 1.0 - malignant], axis=1)

def make_rule():
    return BiggestIsMalignant()
'''


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return data.data, data.target


@pytest.fixture(scope="module")
def own_pool(tmp_path_factory: pytest.TempPathFactory, cancer: Any) -> Path:
    folder = Path(tmp_path_factory.mktemp("own-pool"))
    features, target = cancer
    names = np.array(["malignant", "benign"])[target]  # fitted on names, not indices
    joblib.dump(LogisticRegression(max_iter=5000).fit(features, names), folder / "logreg.joblib")
    joblib.dump(GaussianNB().fit(features, target), folder / "nb.joblib")
    (folder / "rule_beside_pool.py").write_text(RULE_MODULE)
    pool = folder / "pool.yaml"
    pool.write_text(
        "n_features: 30\nclasses: [malignant, benign]\ninitial: nb\ncandidates:\n"
        "  - {name: logreg, sklearn: logreg.joblib}\n"
        "  - {name: nb, sklearn: nb.joblib}\n"
        "  - {name: rule, python: 'rule_beside_pool:make_rule'}\n"
    )
    return pool


@pytest.fixture(scope="module")
def client(
    own_pool: Path, serve_port: int, state_dir: Path, redis_server: RedisServer
) -> Iterator[httpx.Client]:
    assert str(own_pool.parent) not in os.environ.get("PYTHONPATH", "")
    deployer = Deployer(serve_port, state_dir, redis_server.url)
    yield deployer(pool=own_pool, shadow_rate=1.0, gamma=50.0)
    deployer.close()


def test_the_pool_is_described(client: httpx.Client) -> None:
    pool = client.get("/v1/pool").json()
    assert pool == {
        "n_features": 30, "classes": ["malignant", "benign"], "initial": "nb", "image_shape": None,
        "candidates": [{"name": "logreg", "kind": "sklearn", "registry": None},
                       {"name": "nb", "kind": "sklearn", "registry": None},
                       {"name": "rule", "kind": "python", "registry": None}],
    }  # fmt: skip


def test_predictions_carry_class_names_in_both_apis(client: httpx.Client, cancer: Any) -> None:
    features, _ = cancer
    rows = features[:40].tolist()
    body = client.post("/v1/predict", json={"instances": rows}).json()
    classes = [p["class"] for p in body["predictions"]]
    names = [p["class_name"] for p in body["predictions"]]
    assert names == [["malignant", "benign"][c] for c in classes]
    assert {"malignant", "benign"} <= set(names)  # the first rows hold both kinds
    tensor = {"name": "x", "shape": [40, 30], "datatype": "FP64", "data": rows}
    for model in ("router", "logreg", "rule"):  # `rule` runs the module beside the YAML
        answer = client.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        by_name = outputs["predicted_class_name"]
        assert by_name["datatype"] == "BYTES" and by_name["shape"] == [40]
        assert by_name["data"] == [
            ["malignant", "benign"][c] for c in outputs["predicted_class"]["data"]
        ]
    rule = client.post("/v2/models/rule/infer", json={"inputs": [tensor]}).json()
    expected = np.where(features[:40, 0] > 14.0, "malignant", "benign").tolist()
    assert rule["outputs"][-1]["data"] == expected
    metadata = client.get("/v2/models/router").json()
    assert {"name": "predicted_class_name", "datatype": "BYTES", "shape": [-1]} in metadata[
        "outputs"
    ]


def queued_items(client: httpx.Client, rows: list[list[float]]) -> list[dict[str, Any]]:
    step = client.get("/v1/selection").json()["step"]
    assert client.post("/v1/predict", json={"instances": rows}).status_code == 200
    deadline = time.monotonic() + 20
    while client.get("/v1/selection").json()["step"] < step + len(rows):
        assert time.monotonic() < deadline, "shadow evaluation did not finish"
        time.sleep(0.05)
    items: list[dict[str, Any]] = client.get("/v1/queries", params={"limit": 500}).json()["items"]
    assert items, "gamma 50 and shadow rate 1 should queue items"
    return items


def test_feedback_takes_a_class_name_or_an_index(client: httpx.Client, cancer: Any) -> None:
    features, _ = cancer
    items = queued_items(client, features[100:164].tolist())
    assert len(items) >= 2
    before = client.get("/v1/selection").json()
    wrong = client.post(
        "/v1/feedback", json={"labels": [{"item_id": items[0]["item_id"], "label": "Benign"}]}
    )
    assert wrong.status_code == 422
    assert "'Benign' is not a class name (malignant, benign)" in wrong.text
    assert client.get("/v1/selection").json()["labels"] == before["labels"]
    labels = [{"item_id": items[0]["item_id"], "label": "malignant"},
              {"item_id": items[1]["item_id"], "label": 1}]  # fmt: skip
    answer = client.post("/v1/feedback", json={"labels": labels})
    assert answer.status_code == 200, answer.text
    assert [r["outcome"] for r in answer.json()["results"]] == ["accepted", "accepted"]
    after = client.get("/v1/selection").json()
    assert after["labels"] == before["labels"] + 2
    # "malignant" is class 0: the models that predicted 1 for the first item lost 1/q
    first = items[0]
    for model, predicted in first["predictions"].items():
        gained = after["losses"][model] - before["losses"][model]
        second = items[1]["predictions"][model] != 1
        expected = (predicted != 0) / first["q"] + second / items[1]["q"]
        assert gained == pytest.approx(expected)


def test_make_demo_says_plainly_that_this_is_not_the_demo_pool(
    client: httpx.Client, serve_port: int, state_dir: Path
) -> None:
    env = dict(os.environ, PICKSERVE_STATE_DIR=str(state_dir))
    result = subprocess.run(
        ["make", "-s", "demo", f"PORT={serve_port}"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert lines == [
        f"error: the service at http://127.0.0.1:{serve_port}: it serves another pool "
        "(candidates logreg, nb, rule; 30 features; classes malignant, benign), not the demo "
        "pool. `make demo` drives only the demo pool: start it with `make run` (no POOL=), "
        "or label your own pool's items with GET /v1/queries and POST /v1/feedback (README: "
        "'Bring your own pool')"
    ]
