"""The serving path over real Ray Serve: a hanging served model is a 503 naming it after
model_timeout_s while other endpoints answer; a hanging shadow model is shed and counted
with clients unaffected; shadow pacing falls to the trickle while the label queue is
full and rises when it drains."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx

from service.models.demo_data import DemoData
from tests.fixtures.models import HANG
from tests.integration.conftest import Deploy, demo_models_in


def sleepy_pool(demo: DemoData, folder: Path, initial: str) -> Path:
    models = demo_models_in(demo, folder)
    pool = folder / f"pool-{initial}.yaml"
    pool.write_text(
        f"n_features: 64\nclasses: 10\ninitial: {initial}\nallow_installed_modules: true\n"
        "candidates:\n"
        f"  - {{name: knn, sklearn: {models / 'knn-3.joblib'}}}\n"
        "  - {name: sleepy, python: 'tests.fixtures.models:make_sleepy'}\n"
    )
    return pool


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_hanging_served_model_is_a_503_naming_it_and_other_endpoints_answer(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    client = deploy(pool=sleepy_pool(demo, tmp_path, "sleepy"), shadow_rate=0.0, failover=False,
                    settings={"model_timeout_s": 1.0})  # fmt: skip
    hang = [[HANG] * 64]
    answers: dict[str, httpx.Response] = {}

    def hanging_request() -> None:
        with httpx.Client(base_url=client.base_url, timeout=30) as other:
            started = time.monotonic()
            answers["hang"] = other.post("/v1/predict", json={"instances": hang})
            answers["seconds"] = time.monotonic() - started  # type: ignore[assignment]

    thread = threading.Thread(target=hanging_request)
    thread.start()
    time.sleep(0.3)  # while the model hangs, the replica answers everything else
    for path in ("/v2/health/live", "/v1/selection", "/metrics"):
        started = time.monotonic()
        assert client.get(path).status_code == 200
        assert time.monotonic() - started < 0.5, path
    thread.join(timeout=30)
    hung = answers["hang"]
    assert hung.status_code == 503
    assert "model 'sleepy' timed out after 1 s (model_timeout_s)" in hung.json()["detail"]
    assert 0.9 < answers["seconds"] < 5.0  # type: ignore[operator]
    # a direct call of the hanging candidate is bounded the same way
    direct = client.post("/v2/models/sleepy/infer", json={"inputs": [
        {"name": "x", "shape": [1, 64], "datatype": "FP64", "data": hang[0]}]})  # fmt: skip
    assert direct.status_code == 503 and "model 'sleepy'" in direct.text
    ok = client.post("/v1/predict", json={"instances": demo.stream_features[:1].tolist()})
    assert ok.status_code in (200, 503)  # one of its two threads may still be held
    time.sleep(0.7)
    assert 'pickserve_errors_total{kind="timeout"}' in client.get("/metrics").text
    assert metric(client.get("/metrics").text, 'pickserve_errors_total{kind="timeout"}') >= 2


def test_a_hanging_shadow_model_is_shed_and_counted_and_clients_do_not_wait(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    client = deploy(pool=sleepy_pool(demo, tmp_path, "knn"), shadow_rate=1.0,
                    settings={"model_timeout_s": 1.0, "shadow_batch_wait_s": 0.05})  # fmt: skip
    started = time.monotonic()
    answer = client.post("/v1/predict", json={"instances": [[HANG] * 64] * 3})
    assert answer.status_code == 200 and answer.json()["model"] == "knn"
    assert time.monotonic() - started < 0.9  # the shadow batch hangs, the client does not
    deadline = time.monotonic() + 15
    while metric(client.get("/metrics").text, 'pickserve_shadow_items_total{outcome="shed"}') < 3:
        assert time.monotonic() < deadline, "the hanging shadow batch was not shed"
        time.sleep(0.2)
    text = client.get("/metrics").text
    assert metric(text, 'pickserve_errors_total{kind="timeout"}') == 1.0
    assert client.get("/v1/selection").json()["step"] == 0  # shed items count nothing
    rows = demo.stream_features[:4].tolist()  # good items still go through
    assert client.post("/v1/predict", json={"instances": rows}).status_code == 200
    deadline = time.monotonic() + 15
    while client.get("/v1/selection").json()["step"] < 4:
        assert time.monotonic() < deadline, "shadow work did not resume"
        time.sleep(0.1)


def shadowed(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return metric(text, 'pickserve_shadow_items_total{outcome="done"}') + metric(
        text, 'pickserve_shadow_items_total{outcome="shed"}'
    )


def serve_and_settle(client: httpx.Client, demo: DemoData, n: int) -> float:
    """Serve n items in requests of 8, then wait for their shadow work: items sampled."""
    before = shadowed(client)
    for start in range(0, n, 8):
        rows = demo.stream_features[start % 700 : start % 700 + 8].tolist()
        assert client.post("/v1/predict", json={"instances": rows}).status_code == 200
    time.sleep(1.5)  # a flush interval of counters and the last shadow batch
    return shadowed(client) - before


def test_pacing_falls_to_the_trickle_with_a_full_queue_and_rises_when_it_drains(
    deploy: Deploy, demo: DemoData
) -> None:
    client = deploy(shadow_rate=1.0, gamma=50.0, queue_target=10, shadow_trickle_rate=0.02,
                    settings={"shadow_batch_wait_s": 0.05})  # fmt: skip
    assert metric(client.get("/metrics").text, "pickserve_shadow_rate") == 1.0
    deadline = time.monotonic() + 30
    while True:  # fill the queue: every item is shadowed, gamma 50 queues many
        serve_and_settle(client, demo, 16)
        depth = metric(client.get("/metrics").text, "pickserve_label_queue_depth")
        if depth >= 10:
            break
        assert time.monotonic() < deadline, "the queue did not fill"
    time.sleep(0.5)  # the next refresh reads the queue
    assert metric(client.get("/metrics").text, "pickserve_shadow_rate") == 0.02
    full = serve_and_settle(client, demo, 400)
    # 400 items at 2 %: 8 expected, standard error 2.8; at the full rate it would be 400
    assert full <= 8 + 6 * 2.8, full
    leased = client.get("/v1/queries", params={"limit": 500}).json()["items"]
    assert len(leased) >= 10  # labelers took the queue: nothing waits now
    time.sleep(0.5)
    assert metric(client.get("/metrics").text, "pickserve_shadow_rate") == 1.0
    # back at the full rate: the next request's items are all sampled (one request only:
    # at gamma 50 its items refill the queue, and a later refresh falls to the trickle)
    drained = serve_and_settle(client, demo, 8)
    assert drained == 8, drained
