"""The HTTP API over real sockets: happy paths and every kind of bad input.

Bad input must get a 4xx with a clear message and change no state: each case compares
the selection and the metrics' counters of the picker before and after.
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import numpy as np
import pytest

from picker import loss_increments
from service.http.schemas import PredictResponse
from service.models.demo_data import DemoData
from service.tools.demo import pool_mismatch
from tests.integration.conftest import Deploy


@pytest.fixture
def client(shared_client: httpx.Client) -> httpx.Client:
    """The module's deployment, in a fresh round (losses, step and queue reset)."""
    assert shared_client.post("/v1/rounds", json={}).status_code == 200
    return shared_client


def fill_queue(
    client: httpx.Client, demo: DemoData, n: int = 32, offset: int = 0
) -> list[dict[str, Any]]:
    """Serve n stream items from `offset` (all shadowed) and lease every queued item."""
    rows = demo.stream_features[offset : offset + n].tolist()
    step = client.get("/v1/selection").json()["step"]
    answer = client.post("/v1/predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 20
    while client.get("/v1/selection").json()["step"] < step + n:  # shadow work is async
        assert time.monotonic() < deadline, "shadow evaluation did not finish"
        time.sleep(0.05)
    items = client.get("/v1/queries", params={"limit": 500}).json()["items"]
    assert items, "gamma 50 and shadow rate 1 should queue items"
    return items


def picker_state(client: httpx.Client) -> dict[str, Any]:
    selection = client.get("/v1/selection").json()
    return {
        k: selection[k] for k in ("step", "queries", "labels", "losses", "served_model", "round")
    }


def test_the_demo_pool_is_recognised_by_make_demo(client: httpx.Client, demo: DemoData) -> None:
    assert pool_mismatch(client, demo) is None
    assert client.get("/v1/pool").json()["classes"] == [str(n) for n in range(10)]


def test_predict_answers_with_the_served_model(client: httpx.Client, demo: DemoData) -> None:
    answer = client.post("/v1/predict", json={"instances": demo.stream_features[:3].tolist()})
    assert answer.status_code == 200
    body = answer.json()
    # the answer is written out by hand: it must be exactly what the OpenAPI document says
    assert PredictResponse.model_validate(body).model_dump(by_alias=True) == body
    selection = client.get("/v1/selection").json()
    assert body["model"] == selection["served_model"]
    assert body["selection_version"] == selection["selection_version"]
    assert len(body["predictions"]) == 3 and len({p["item_id"] for p in body["predictions"]}) == 3
    for prediction in body["predictions"]:
        assert 0 <= prediction["class"] < 10 and prediction["class_name"] == str(
            prediction["class"]
        )
        assert math.isclose(sum(prediction["probabilities"]), 1.0, rel_tol=1e-6)


def test_feedback_outcomes_and_lease(client: httpx.Client, demo: DemoData) -> None:
    items = fill_queue(client, demo)
    assert client.get("/v1/queries", params={"limit": 500}).json()["items"] == []  # leased
    item = items[0]
    assert set(item["predictions"]) == set(picker_state(client)["losses"])
    label = int(item["predictions"][next(iter(item["predictions"]))])
    before = picker_state(client)
    first = client.post(
        "/v1/feedback", json={"labels": [{"item_id": item["item_id"], "label": label}]}
    )
    assert first.status_code == 200 and first.json()["results"][0]["outcome"] == "accepted"
    after = picker_state(client)
    increments = loss_increments(list(item["predictions"].values()), label, item["q"])
    np.testing.assert_allclose(
        list(after["losses"].values()), np.array(list(before["losses"].values())) + increments
    )
    assert after["labels"] == before["labels"] + 1
    again = client.post(
        "/v1/feedback", json={"labels": [{"item_id": item["item_id"], "label": label}]}
    )
    assert again.status_code == 409 and again.json()["results"][0]["outcome"] == "duplicate"
    assert picker_state(client) == after


def test_new_round_resets_and_old_items_are_stale(client: httpx.Client, demo: DemoData) -> None:
    items = fill_queue(client, demo)
    round_before = client.get("/v1/selection").json()["round"]
    selection = client.post("/v1/rounds", json={"label_budget": 5}).json()
    assert selection["round"] == round_before + 1
    assert selection["step"] == 0 and selection["label_budget"] == 5
    assert set(selection["losses"].values()) == {0.0}
    stale = client.post(
        "/v1/feedback", json={"labels": [{"item_id": items[0]["item_id"], "label": 1}]}
    )
    assert stale.status_code == 404
    assert stale.json()["results"][0]["outcome"] == "unknown"
    assert "earlier round" in stale.json()["results"][0]["detail"]
    fill_queue(client, demo, n=64)
    assert client.get("/v1/selection").json()["queries"] == 5  # the budget caps queries


BAD_REQUESTS: list[tuple[str, str, str, Any, int, str]] = [
    ("malformed JSON", "POST", "/v1/predict", b"{not json", 422, "JSON decode error"),
    ("wrong feature count", "POST", "/v1/predict", {"instances": [[1.0] * 63]}, 422, "64 features"),
    ("NaN", "POST", "/v1/predict", b'{"instances": [[NaN' + b", 0.0" * 63 + b"]]}", 422, "finite"),
    ("infinity", "POST", "/v1/predict", b'{"instances": [[Infinity' + b", 0.0" * 63 + b"]]}", 422, "finite"),
    ("oversized batch", "POST", "/v1/predict", {"instances": [[0.0] * 64] * 65}, 413, "exceeds the limit of 64"),
    ("empty batch", "POST", "/v1/predict", {"instances": []}, 422, "at least 1"),
    ("unknown field", "POST", "/v1/predict", {"instances": [[0.0] * 64], "x": 1}, 422, "Extra inputs"),
    ("unknown model", "GET", "/v2/models/nope", None, 404, "unknown model 'nope'"),
    ("unknown model infer", "POST", "/v2/models/nope/infer",
     {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64", "data": [0.0] * 64}]}, 404, "unknown model"),
    ("v2 shape mismatch", "POST", "/v2/models/router/infer",
     {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP64", "data": [0.0] * 64}]}, 422, "does not make rows"),
    ("label outside classes", "POST", "/v1/feedback", {"labels": [{"item_id": "QUEUED", "label": 10}]}, 422, "outside the classes"),
    ("negative label", "POST", "/v1/feedback", {"labels": [{"item_id": "QUEUED", "label": -1}]}, 422, "outside the classes"),
    ("unknown item", "POST", "/v1/feedback", {"labels": [{"item_id": "never-queued", "label": 1}]}, 404, "never queued"),
    ("item twice in a request", "POST", "/v1/feedback",
     {"labels": [{"item_id": "QUEUED", "label": 1}, {"item_id": "QUEUED", "label": 2}]}, 422, "twice"),
    ("no labels", "POST", "/v1/feedback", {"labels": []}, 422, "at least 1"),
    ("queries limit too large", "GET", "/v1/queries?limit=100000", None, 422, "less than or equal"),
    ("negative budget", "POST", "/v1/rounds", {"label_budget": -3}, 422, "greater than or equal"),
    ("lone surrogate in a valid field", "POST", "/v2/models/router/infer",
     b'{"id": "\\ud800", "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64", "data": [' + b"0.0, " * 63 + b'0.0]}]}',
     422, "not valid Unicode"),
    ("lone surrogate echoed in an error", "POST", "/v1/predict", b'{"instances": [["\\ud800"]]}', 422, "\\ud800"),
    ("lone surrogate in an item id", "POST", "/v1/feedback", b'{"labels": [{"item_id": "\\ud800", "label": 1}]}', 422, "valid string"),
    ("400-digit integer in v2 data", "POST", "/v2/models/router/infer",
     b'{"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64", "data": [' + b"9" * 400 + b", 0.0" * 63 + b"]}]}",
     422, "valid number"),
    ("400-digit integer in instances", "POST", "/v1/predict", b'{"instances": [[' + b"9" * 400 + b", 0.0" * 63 + b"]]}", 422, "valid number"),
    ("v2 parameters unbounded", "POST", "/v2/models/router/infer",
     {"parameters": {f"p{i}": 1 for i in range(17)},
      "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64", "data": [0.0] * 64}]}, 422, "at most 16"),
    ("oversized round budget", "POST", "/v1/rounds", {"label_budget": 10**12}, 422, "less than or equal"),
    ("negative current budget", "PATCH", "/v1/rounds/current", {"label_budget": -1}, 422, "greater than or equal"),
    ("current budget missing", "PATCH", "/v1/rounds/current", {}, 422, "Field required"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "status", "message"),
    BAD_REQUESTS,
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_bad_input_is_rejected_and_changes_nothing(
    client: httpx.Client,
    demo: DemoData,
    case: str,
    method: str,
    path: str,
    body: Any,
    status: int,
    message: str,
) -> None:
    items = fill_queue(client, demo, n=8)
    if isinstance(body, dict) and "labels" in body:
        for label in body["labels"]:
            label["item_id"] = (
                items[0]["item_id"] if label["item_id"] == "QUEUED" else label["item_id"]
            )
    before = picker_state(client)
    if isinstance(body, bytes):
        answer = client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    else:
        answer = client.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert message in answer.text
    time.sleep(0.2)
    assert picker_state(client) == before
    # the queued item is still labelable: a bad request consumed nothing
    label = {"item_id": items[0]["item_id"], "label": 0}
    assert (
        client.post("/v1/feedback", json={"labels": [label]}).json()["results"][0]["outcome"]
        == "accepted"
    )


def test_the_current_round_budget_changes_without_a_reset(
    client: httpx.Client, demo: DemoData
) -> None:
    fill_queue(client, demo, n=16)
    before = client.get("/v1/selection").json()
    changed = client.patch("/v1/rounds/current", json={"label_budget": before["queries"] + 2})
    assert changed.status_code == 200 and changed.json()["label_budget"] == before["queries"] + 2
    assert (changed.json()["round"], changed.json()["step"]) == (before["round"], before["step"])
    fill_queue(client, demo, n=64, offset=16)
    assert client.get("/v1/selection").json()["queries"] == before["queries"] + 2
    assert (
        client.patch("/v1/rounds/current", json={"label_budget": None}).json()["label_budget"]
        is None
    )


def test_a_huge_body_is_refused_before_it_is_parsed(client: httpx.Client) -> None:
    """64 MB: 413 from the Content-Length alone (PICKSERVE_MAX_REQUEST_BYTES, 8 MiB)."""
    before = picker_state(client)
    body = b'{"instances": [[' + b"0.0, " * (64 * 1024 * 1024 // 5) + b"0.0]]}"
    answer = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "exceeds 8388608 bytes" in answer.text
    assert picker_state(client) == before
    assert client.get("/v2/health/live").status_code == 200


def test_open_inference_protocol_v2(client: httpx.Client, demo: DemoData) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2/models/router").json()
    assert meta["inputs"][0]["shape"] == [-1, 64] and meta["outputs"][1]["shape"] == [-1, 10]
    rows = demo.stream_features[:2]
    request = {
        "id": "r1",
        "inputs": [
            {"name": "x", "shape": [2, 64], "datatype": "FP64", "data": rows.ravel().tolist()}
        ],
    }
    routed = client.post("/v2/models/router/infer", json=request).json()
    served = client.get("/v1/selection").json()["served_model"]
    assert routed["id"] == "r1" and routed["parameters"]["served_model"] == served
    assert routed["outputs"][0]["shape"] == [2] and len(routed["parameters"]["item_ids"]) == 2
    target = demo.summary["best_today"]
    direct = client.post(f"/v2/models/{target}/infer", json=request).json()
    assert direct["parameters"]["served_model"] == target
    assert len(direct["outputs"][1]["data"]) == 20
    names = [str(c) for c in direct["outputs"][0]["data"]]
    assert direct["outputs"][2] == {"name": "predicted_class_name", "datatype": "BYTES",
                                    "shape": [2], "data": names}  # fmt: skip


def test_metrics_read_the_same_from_every_scrape(deploy: Deploy, demo: DemoData) -> None:
    client = deploy(shadow_rate=1.0, gamma=50.0)
    items = fill_queue(client, demo, n=16)
    client.post("/v1/feedback", json={"labels": [{"item_id": items[0]["item_id"], "label": 3}]})
    client.post("/v1/feedback", json={"labels": [{"item_id": "nope", "label": 3}]})
    text = client.get("/metrics").text
    for name in (
        "pickserve_requests_total", "pickserve_request_latency_seconds_bucket",
        "pickserve_items_served_total", 'pickserve_shadow_items_total{outcome="done"} 16.0',
        "pickserve_queries_total", 'pickserve_labels_total{outcome="accepted"} 1.0',
        'pickserve_labels_total{outcome="unknown"} 1.0', "pickserve_label_queue_depth",
        "pickserve_posterior_weight", "pickserve_best_model", "pickserve_served_model",
        "pickserve_swaps_total", "pickserve_picker_step 16.0", "pickserve_round 0.0",
    ):  # fmt: skip
        assert name in text, name
    assert text == client.get("/metrics").text
    # evaluations: every candidate on each shadow item, one model on each served item
    models = len(client.get("/v1/selection").json()["posterior"])
    assert f'pickserve_model_evaluations_total{{purpose="shadow"}} {16.0 * models}' in text
    served = sum(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("pickserve_items_served_total{"))  # fmt: skip
    assert f'pickserve_model_evaluations_total{{purpose="served"}} {served}' in text


def test_every_metric_the_dashboard_names_is_exported(deploy: Deploy, demo: DemoData) -> None:
    """k8s/grafana-dashboard.json charts only what /metrics really exports (on a service of
    its own: the module's shared one is gone once a test deploys another)."""
    import json
    import re
    from pathlib import Path

    client = deploy(shadow_rate=1.0, gamma=50.0)
    fill_queue(client, demo, 16)  # traffic, shadow work and queries: every family has data
    exported = {line.split("{")[0].split(" ")[0] for line in client.get("/metrics").text.splitlines()
                if line and not line.startswith("#")}  # fmt: skip
    dashboard = json.loads(
        (Path(__file__).parents[2] / "k8s" / "grafana-dashboard.json").read_text()
    )
    named = {name for panel in dashboard["panels"] for target in panel.get("targets", [])
             for name in re.findall(r"\bpickserve_\w+", target["expr"])}  # fmt: skip
    assert len(named) >= 9
    assert named <= exported, sorted(named - exported)
