"""Candidates at run time over real Ray Serve: one added mid-round that is the best
becomes served without a restart, with a backfilled loss equal to the loss it would have
had in the pool from the round's start on the same labeled items; a removed one is never
served again; both changes survive a restart."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import joblib
import numpy as np
import yaml

from service.models.demo_data import DemoData
from tests.integration.conftest import Deploy, demo_models_in


def small_pool(demo: DemoData, folder: Path) -> Path:
    """The demo pool without today's best (extra-trees-noisy), which the test adds."""
    folder.mkdir(parents=True, exist_ok=True)
    models = demo_models_in(demo, folder)
    pool = folder / "pool.yaml"
    lines = [f"  - {{name: {m}, sklearn: {models / f'{m}.joblib'}}}\n"
             for m in ("svc-rbf", "logreg", "lda")]  # fmt: skip
    pool.write_text("n_features: 64\nclasses: 10\ninitial: svc-rbf\ncandidates:\n" + "".join(lines))
    return pool


class Labeler:
    """Serves today's stream and labels every queued item from ground truth, keeping the
    accepted labels in the order they were applied: (features, label, q)."""

    def __init__(self, client: httpx.Client, demo: DemoData) -> None:
        self.client, self.demo = client, demo
        self.truth: dict[str, int] = {}
        self.applied: list[tuple[list[float], int, float]] = []
        self.position = 0

    def serve_and_label(self, items: int) -> set[str]:
        served = set()
        features, labels = self.demo.stream("today")
        for _ in range(items // 16):
            rows = [(self.position + k) % len(labels) for k in range(16)]
            self.position += 16
            answer = self.client.post("/v1/predict", json={"instances": features[rows].tolist()})
            assert answer.status_code == 200, answer.text
            served.add(answer.json()["model"])
            for prediction, row in zip(answer.json()["predictions"], rows, strict=True):
                self.truth[prediction["item_id"]] = int(labels[row])
        time.sleep(1.0)  # the last shadow batches land
        items_page = self.client.get("/v1/queries", params={"limit": 500}).json()["items"]
        posted = [{"item_id": i["item_id"], "label": self.truth[i["item_id"]]} for i in items_page]
        if posted:
            answer = self.client.post("/v1/feedback", json={"labels": posted},
                                      headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
            for item, result in zip(items_page, answer.json()["results"], strict=True):
                if result["outcome"] == "accepted":
                    self.applied.append((item["instance"], self.truth[item["item_id"]], item["q"]))
        return served


def test_a_candidate_added_mid_round_joins_it_exactly_and_a_removed_one_is_gone(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    pool = small_pool(demo, tmp_path / "pool")
    namespace = uuid.uuid4().hex
    knobs = {"shadow_rate": 1.0, "gamma": 30.0}
    client = deploy(pool=pool, namespace=namespace, **knobs)
    labeler = Labeler(client, demo)
    for _ in range(4):
        labeler.serve_and_label(160)
    before = client.get("/v1/selection").json()
    assert before["labels"] == len(labeler.applied) > 0

    new = pool.parent / "models" / "extra-trees-noisy.joblib"
    started = time.perf_counter()
    added = client.post(
        "/v1/candidates",
        json={"name": "extra-trees-noisy", "sklearn": "models/extra-trees-noisy.joblib"},
    )
    took_s = time.perf_counter() - started
    assert added.status_code == 200, added.text
    model = joblib.load(new)
    predicted = model.predict(np.array([f for f, _, _ in labeler.applied]))
    expected = 0.0
    for p, (_, label, q) in zip(predicted, labeler.applied, strict=True):
        expected += float(int(p) != label) / q
    after = client.get("/v1/selection").json()
    assert after["losses"]["extra-trees-noisy"] == expected == added.json()["loss"]
    assert {k: v for k, v in after["losses"].items() if k != "extra-trees-noisy"} == before[
        "losses"
    ]
    assert (after["round"], after["step"], after["labels"]) == (
        before["round"],
        before["step"],
        before["labels"],
    )  # the round goes on
    assert "extra-trees-noisy" in yaml.safe_load(pool.read_text())["candidates"][-1]["name"]

    deadline = time.monotonic() + 240  # it is the best on today's stream: it gets served
    while client.get("/v1/selection").json()["served_model"] != "extra-trees-noisy":
        assert time.monotonic() < deadline, client.get("/v1/selection").json()["posterior"]
        labeler.serve_and_label(160)
    assert "extra-trees-noisy" in labeler.serve_and_label(32)
    served_after = client.get("/v1/selection").json()["labels"] - before["labels"]
    print(
        f"\ncandidate figures: added mid-round with {before['labels']} labels backfilled in "
        f"{took_s:.2f} s (load, probe, backfill, pool file); served after {served_after} "
        "more labels"
    )

    assert client.delete("/v1/candidates/nope").status_code == 404
    removed = client.delete("/v1/candidates/lda")
    assert removed.status_code == 200, removed.text
    assert removed.json()["candidates"] == ["svc-rbf", "logreg", "extra-trees-noisy"]
    assert "lda" not in labeler.serve_and_label(160)
    assert "lda" not in client.get("/v1/selection").json()["posterior"]
    assert [c["name"] for c in yaml.safe_load(pool.read_text())["candidates"]] == [
        "svc-rbf",
        "logreg",
        "extra-trees-noisy",
    ]
    losses = client.get("/v1/selection").json()["losses"]

    client = deploy(pool=pool, namespace=namespace, **knobs)  # a restart: new replicas
    restarted = client.get("/v1/selection").json()
    assert list(restarted["posterior"]) == ["svc-rbf", "logreg", "extra-trees-noisy"]
    assert restarted["served_model"] == "extra-trees-noisy" and restarted["losses"] == losses
    assert client.post("/v2/models/lda/infer", json={"inputs": [
        {"name": "x", "shape": [1, 64], "datatype": "FP64", "data": [0.0] * 64}]}).status_code == 404  # fmt: skip


def test_a_candidate_that_cannot_load_is_refused_and_changes_nothing(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    pool = small_pool(demo, tmp_path / "pool")
    client = deploy(pool=pool, shadow_rate=0.0)
    before, text = client.get("/v1/selection").json(), pool.read_text()
    missing = client.post("/v1/candidates", json={"name": "ghost", "sklearn": "nowhere.joblib"})
    assert missing.status_code == 422 and "candidate 'ghost'" in missing.json()["detail"]
    assert "no such file" in missing.json()["detail"]
    taken = client.post("/v1/candidates", json={"name": "lda", "sklearn": "x.joblib"})
    assert taken.status_code == 409
    malformed = client.post("/v1/candidates", json={"name": "two", "sklearn": "a", "onnx": "b"})
    assert malformed.status_code == 422
    lda = next(line for line in text.splitlines() if "lda" in line)
    source = lda.split("sklearn:")[1].strip(" }")
    for prior in (1.5, -0.2):
        odd = client.post(
            "/v1/candidates", json={"name": "lda2", "sklearn": source, "prior": prior}
        )
        assert odd.status_code == 422 and "prior" in odd.text, odd.text
    assert client.get("/v1/selection").json() == before and pool.read_text() == text
    assert client.delete("/v1/candidates/lda").status_code == 200
    last_two = client.delete("/v1/candidates/logreg")
    assert last_two.status_code == 409 and "at least two" in last_two.json()["detail"]
