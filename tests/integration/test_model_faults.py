"""A candidate that raises: a client calling it gets a clear 503 and the next request
succeeds; when it fails inside shadow work, the client's answer is unaffected; both
failures are counted."""

import time
from pathlib import Path

from service.models.demo_data import DemoData
from tests.fixtures.models import TRIGGER
from tests.integration.conftest import Deploy, demo_models_in


def test_a_raising_model_degrades_visibly_and_recovers(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    models = demo_models_in(demo, tmp_path)
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "n_features: 64\nclasses: 10\ninitial: knn\nallow_installed_modules: true\ncandidates:\n"
        f"  - {{name: knn, sklearn: {models / 'knn-3.joblib'}}}\n"
        "  - {name: flaky, python: 'tests.fixtures.models:make_flaky'}\n"
    )
    client = deploy(pool=pool, shadow_rate=1.0)
    good, bad = demo.stream_features[0].tolist(), [TRIGGER] * 64

    def v2(row: list[float]) -> dict:  # type: ignore[type-arg]
        return {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64", "data": row}]}

    failed = client.post("/v2/models/flaky/infer", json=v2(bad))
    assert failed.status_code == 503
    assert "model 'flaky' failed" in failed.text and "bad input" in failed.text
    assert client.post("/v2/models/flaky/infer", json=v2(good)).status_code == 200  # recovers
    # served by the healthy model; the shadow run through every candidate fails on flaky
    served = client.post("/v1/predict", json={"instances": [bad]})
    assert served.status_code == 200 and served.json()["model"] == "knn"
    time.sleep(1.0)
    metrics = client.get("/metrics").text
    assert 'pickserve_errors_total{kind="model"} 1.0' in metrics
    assert 'pickserve_errors_total{kind="shadow"} 1.0' in metrics
    assert (
        client.get("/v1/selection").json()["step"] == 0
    )  # the failed shadow batch counted nothing


def nonfinite_pool(demo: DemoData, folder: Path, initial: str) -> Path:
    """The demo's naive-bayes answers NaN probabilities on inputs of 1e308."""
    models = demo_models_in(demo, folder)
    pool = folder / f"pool-{initial}.yaml"
    pool.write_text(
        f"n_features: 64\nclasses: 10\ninitial: {initial}\ncandidates:\n"
        f"  - {{name: knn-3, sklearn: {models / 'knn-3.joblib'}}}\n"
        f"  - {{name: naive-bayes, sklearn: {models / 'naive-bayes.joblib'}}}\n"
    )
    return pool


def test_a_non_finite_output_is_a_model_fault_never_a_fake_class(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    huge = [[1e308] * 64]
    client = deploy(pool=nonfinite_pool(demo, tmp_path, "naive-bayes"), shadow_rate=0.0,
                    failover=False)  # fmt: skip
    served = client.post("/v1/predict", json={"instances": huge})
    assert served.status_code == 503 and "model 'naive-bayes' failed" in served.text
    assert "non-finite" in served.text
    routed = client.post("/v2/models/router/infer", json={"inputs": [
        {"name": "x", "shape": [1, 64], "datatype": "FP64", "data": huge[0]}]})  # fmt: skip
    assert routed.status_code == 503 and "naive-bayes" in routed.text
    ok = client.post("/v1/predict", json={"instances": demo.stream_features[:1].tolist()})
    assert ok.status_code == 200  # only the faulty request failed

    client = deploy(pool=nonfinite_pool(demo, tmp_path, "knn-3"), shadow_rate=1.0, gamma=1e6)
    direct = client.post("/v2/models/naive-bayes/infer", json={"inputs": [
        {"name": "x", "shape": [1, 64], "datatype": "FP64", "data": huge[0]}]})  # fmt: skip
    assert direct.status_code == 503 and "model 'naive-bayes' failed" in direct.text
    answer = client.post("/v1/predict", json={"instances": huge * 3})
    assert answer.status_code == 200 and answer.json()["model"] == "knn-3"
    deadline = time.monotonic() + 20
    while client.get("/v1/selection").json()["step"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    items = client.get("/v1/queries", params={"limit": 10}).json()["items"]
    assert len(items) == 3  # the models disagree: knn-3 votes a class, naive-bayes none
    assert all(i["predictions"]["naive-bayes"] == -1 for i in items)
    label = {"item_id": items[0]["item_id"], "label": items[0]["predictions"]["knn-3"]}
    client.post("/v1/feedback", json={"labels": [label]})
    losses = client.get("/v1/selection").json()["losses"]
    assert losses["knn-3"] == 0.0 and losses["naive-bayes"] > 0.0  # counted wrong
    time.sleep(1.0)
    metrics = client.get("/metrics").text
    assert 'pickserve_errors_total{kind="nonfinite"} 3.0' in metrics
    assert 'pickserve_errors_total{kind="model"} 1.0' in metrics
