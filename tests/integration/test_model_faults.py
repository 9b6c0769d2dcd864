"""A candidate that raises: a client calling it gets a clear 503 and the next request
succeeds; when it fails inside shadow work, the client's answer is unaffected; both
failures are counted."""

import time
from pathlib import Path

from service.demo_pool import DemoData
from tests.fixtures.models import TRIGGER
from tests.integration.conftest import Deploy


def test_a_raising_model_degrades_visibly_and_recovers(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    models = demo.pool_file.parent / "models"
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "n_features: 64\nclasses: 10\ninitial: knn\ncandidates:\n"
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
