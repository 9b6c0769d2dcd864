"""The large-pool mode over real Ray Serve (`active_models`), on the demo pool with an
active set of 3: shadow batches run only the active set, the items the picker queues run
through every other candidate before a labeler sees them, and the loop still converges on
the stream's best with no failed request. Candidates the elimination test takes out of the
round are never run, checked or served again in it, and the round says who left and why;
the active set and the eliminations survive a replica kill and a Redis restart."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import ray
import yaml

from service.models.demo_data import DemoData
from service.tools.demo import drive
from tests.integration.conftest import Deploy, demo_models_in, ray_metrics
from tests.integration.test_candidates_runtime import Labeler
from tests.integration.test_serving_path import metric
from tests.integration.test_state_over_http import router_replicas
from tests.redis_server import RedisServer

ACTIVE = 3


def test_shadow_runs_the_active_set_and_queued_items_run_through_the_rest(
    deploy: Deploy, demo: DemoData
) -> None:
    # the moved stream's best (knn-3) is not the model served at start: a swap is needed
    target = demo.best_on("moved")
    full = drive(deploy(active_models="all", shadow_rate=1.0, gamma=1.0, seed=5), demo, target,
                 max_items=12_000, stream="moved")  # fmt: skip
    assert full.selection["served_model"] == target
    # elimination off: every candidate stays in the round, so the set is exactly 3 wide
    client = deploy(active_models=ACTIVE, shadow_rate=1.0, gamma=1.0, seed=5,
                    elimination_delta="off")  # fmt: skip
    models = len(client.get("/v1/selection").json()["posterior"])
    assert models > ACTIVE and client.get("/v1/selection").json()["served_model"] != target
    progress = drive(client, demo, target, max_items=12_000, stream="moved")
    assert progress.selection["served_model"] == target  # posterior >= 0.9, no request failed
    text = quiet_metrics(client)
    done = metric(text, 'pickserve_shadow_items_total{outcome="done"}')
    shadow = metric(text, 'pickserve_model_evaluations_total{purpose="shadow"}')
    checks = metric(text, 'pickserve_model_evaluations_total{purpose="labeling"}')
    queries = metric(text, "pickserve_queries_total")
    assert done > 0 and shadow == ACTIVE * done
    # every queued item was checked on the rest (and a few the budget or a repeat kept out)
    assert checks >= (models - ACTIVE) * queries > 0
    per_item = (shadow + checks) / done
    assert per_item < models
    # what a labeler is handed carries every candidate's prediction
    client.post("/v1/predict", json={"instances": demo.stream_features[:64].tolist()})
    items = []
    for _ in range(100):
        items = client.get("/v1/queries", params={"limit": 50}).json()["items"]
        if items:
            break
        client.post("/v1/predict", json={"instances": demo.stream_features[:64].tolist()})
    assert items
    assert active_shown(client) is not None
    for item in items:
        assert len(item["predictions"]) == models
        assert all(0 <= c < 10 for c in item["predictions"].values())
    print(f"\nlarge-pool mode: {progress.items_served} items, {progress.labels_posted} labels, "
          f"{per_item:.2f} evaluations per shadow item; every candidate: {full.items_served} "
          f"items, {full.labels_posted} labels, {models} evaluations per item")  # fmt: skip


def quiet_metrics(client: httpx.Client, timeout_s: float = 60.0) -> str:
    """/metrics once no shadow batch is in flight: the traffic has stopped, so the
    shadow counters stop moving when the last batches (up to max_in_flight of them,
    evaluated but not yet observed) are written. Read before that, evaluations count
    items that `done` does not count yet."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        text = client.get("/metrics").text
        shadow = [line for line in text.splitlines()
                  if line.startswith(("pickserve_shadow_items_total", "pickserve_model_evaluations_total"))]  # fmt: skip
        if shadow == last:
            return text
        assert time.monotonic() < deadline, "shadow work did not settle"
        last = shadow
        time.sleep(1.5)  # three flushes of the replicas' counters (0.5 s apart)


def active_shown(client: httpx.Client) -> list[str] | None:
    answer = client.get("/v1/selection")
    assert answer.status_code == 200, answer.text
    shown: list[str] | None = answer.json()["active_models"]
    return shown


def test_eliminated_candidates_leave_the_round_and_are_never_run_or_served_again(
    deploy: Deploy, demo: DemoData
) -> None:
    """With elimination on, and at most 4 of the 10 models resident in each replica
    (max_resident_models): the others are loaded when a shadow batch or a label check
    needs them (counted), the served model keeps answering, and the loop ends on the
    stream's best with no failed request."""
    target = demo.best_on("moved")
    client = deploy(active_models=ACTIVE, shadow_rate=1.0, gamma=1.0, seed=5,
                    settings={"max_resident_models": 4})  # fmt: skip
    progress = drive(client, demo, target, max_items=12_000, stream="moved")
    assert progress.selection["served_model"] == target  # posterior >= 0.9, no request failed
    selection = client.get("/v1/selection").json()
    out = selection["eliminated_models"]
    assert out and target not in out and selection["served_model"] not in out
    assert not set(out) & set(active_shown(client) or [])
    assert all(selection["posterior"][name] == 0.0 for name in out)
    (current,) = client.get("/v1/rounds", params={"limit": 1}).json()["rounds"]
    records = current["eliminated"]
    assert [r["model"] for r in records] == out
    for record in records:
        assert record["wealth"] >= record["threshold"] == pytest.approx(20.0)  # 1 / 0.05
        assert record["loss"] > record["leader_loss"] and record["leader"] not in out
        # no swap to it after it left
        assert not [s for s in current["swaps"]
                    if s["to_model"] == record["model"] and s["labels"] >= record["labels"]]  # fmt: skip
    # what is queued from now on carries no prediction of theirs: they are not run
    quiet_metrics(client)  # the last batches, evaluated before they left, are queued
    while client.get("/v1/queries", params={"limit": 500}).json()["items"]:
        pass  # lease what was queued before
    items: list[dict[str, object]] = []
    for _ in range(100):
        client.post("/v1/predict", json={"instances": demo.stream_features[:64].tolist()})
        items = client.get("/v1/queries", params={"limit": 50}).json()["items"]
        if items:
            break
    assert items
    in_round = set(selection["posterior"]) - set(out)
    for item in items:
        assert set(item["predictions"]) == in_round  # type: ignore[arg-type]
    text = quiet_metrics(client)
    assert metric(text, "pickserve_eliminated_models") == len(out)
    assert metric(text, "pickserve_model_loads_total") > 0
    assert metric(text, "pickserve_model_load_seconds_total") > 0
    # what each replica holds, per replica, in Ray's metrics: the router's and the
    # Candidates deployment's, each at most 4 (Ray exports them every few seconds)
    deadline = time.monotonic() + 60
    while True:
        held = {deployment: float(value) for deployment, value in re.findall(
            r'^ray_pickserve_resident_models\{[^}]*deployment="(\w+)"[^}]*\} (\S+)$',
            ray_metrics(), re.M)}  # fmt: skip
        if {"Router", "Candidates"} <= set(held):
            break
        assert time.monotonic() < deadline, "no resident-model gauge in Ray's metrics"
        time.sleep(2.0)
    assert all(1 <= n <= 4 for n in held.values()), held


def settled_rounds(client: httpx.Client) -> dict[str, object]:
    """/v1/rounds once two reads 1 s apart agree: the drive's last shadow batches, answered
    after their predictions, have landed (what was acknowledged is what must survive)."""
    deadline = time.monotonic() + 30
    last = client.get("/v1/rounds").json()
    while True:
        time.sleep(1.0)
        now: dict[str, object] = client.get("/v1/rounds").json()
        if now == last:
            return now
        assert time.monotonic() < deadline, "the round kept changing"
        last = now


def test_the_active_set_survives_a_replica_kill_and_a_redis_restart(
    deploy: Deploy, demo: DemoData, redis_server: RedisServer
) -> None:
    """The active set follows from the stored losses and eliminations, so after the
    router replica is killed and Redis restarts, the new replica shows the same set (the
    lowest losses with the served model), the same eliminations and the gauge its size."""
    client = deploy(store="redis", active_models=ACTIVE, shadow_rate=1.0, gamma=1.0, seed=5)
    drive(client, demo, "no-such-model", max_items=600, stream="moved")
    rounds = settled_rounds(client)  # the drive's last shadow batches land first
    selection = client.get("/v1/selection").json()
    losses, out = selection["losses"], selection["eliminated_models"]
    assert out, "no candidate left the round: nothing to keep"
    assert len(losses) - len(out) > ACTIVE, "too few left for an active set of 3"
    before = active_shown(client)
    assert before is not None and len(before) == ACTIVE
    assert selection["served_model"] in before
    leaders = sorted(set(losses) - set(out), key=lambda name: losses[name])[: ACTIVE - 1]
    assert set(leaders) - {selection["served_model"]} <= set(before)
    assert metric(client.get("/metrics").text, "pickserve_active_models") == ACTIVE
    (name,) = router_replicas()
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    redis_server.stop(kill=True)
    redis_server.start()
    deadline = time.monotonic() + 60
    while router_replicas() in ([], [name]) or client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the replica was not replaced"
        time.sleep(0.5)
    after = client.get("/v1/selection").json()
    assert after["losses"] == losses and after["eliminated_models"] == out
    assert active_shown(client) == before
    assert client.get("/v1/rounds").json() == rounds


def test_a_candidate_added_mid_round_is_label_checked_from_then_on(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    """In the large-pool mode a candidate added mid-round is outside the active set at
    first; it joins through the label checks: every item queued from then on carries its
    prediction, and its loss is exactly Σ [f(x) != y] / q over every label of the round,
    the ones before it came (backfilled) and after."""
    folder = tmp_path / "pool"
    models = demo_models_in(demo, folder)
    names = [c["name"] for c in yaml.safe_load(demo.pool_file.read_text())["candidates"]]
    accuracy = demo.summary["accuracy"]["today"]
    newcomer = min(names, key=lambda n: accuracy[n])  # the weakest: it will not be active
    kept = [n for n in names if n != newcomer]
    pool = folder / "pool.yaml"
    pool.write_text("n_features: 64\nclasses: 10\ninitial: svc-rbf\ncandidates:\n" + "".join(
        f"  - {{name: {m}, sklearn: {models / f'{m}.joblib'}}}\n" for m in kept))  # fmt: skip
    client = deploy(pool=pool, active_models=ACTIVE, shadow_rate=1.0, gamma=30.0,
                    elimination_delta="off")  # fmt: skip
    labeler = Labeler(client, demo)
    for _ in range(3):
        labeler.serve_and_label(160)
    assert labeler.applied
    added = client.post("/v1/candidates", json={"name": newcomer,
                                                "sklearn": f"models/{newcomer}.joblib"})  # fmt: skip
    assert added.status_code == 200, added.text
    assert newcomer not in (active_shown(client) or [])
    before = len(labeler.applied)
    for _ in range(3):
        labeler.serve_and_label(160)
    assert len(labeler.applied) > before
    assert newcomer not in (active_shown(client) or [])  # checked on labels, not run on all
    model = joblib.load(models / f"{newcomer}.joblib")
    predicted = model.predict(np.array([f for f, _, _ in labeler.applied]))
    expected = 0.0
    for p, (_, label, q) in zip(predicted, labeler.applied, strict=True):
        expected += float(int(p) != label) / q
    assert client.get("/v1/selection").json()["losses"][newcomer] == pytest.approx(
        expected, rel=1e-12
    )
    client.post("/v1/predict", json={"instances": demo.stream_features[:64].tolist()})
    time.sleep(1.0)
    items = client.get("/v1/queries", params={"limit": 50}).json()["items"]
    assert items and all(len(i["predictions"]) == len(kept) + 1 for i in items)
