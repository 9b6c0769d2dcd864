"""The large-pool mode over real Ray Serve (`active_models`), on the demo pool with an
active set of 3: shadow batches run only the active set, the items the picker queues run
through every other candidate before a labeler sees them, and the loop still converges on
the stream's best with no failed request."""

from __future__ import annotations

import time

import httpx
import ray

from service.models.demo_data import DemoData
from service.tools.demo import drive
from tests.integration.conftest import Deploy
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
    client = deploy(active_models=ACTIVE, shadow_rate=1.0, gamma=1.0, seed=5)
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


def test_the_active_set_survives_a_replica_kill_and_a_redis_restart(
    deploy: Deploy, demo: DemoData, redis_server: RedisServer
) -> None:
    """Nothing about the active set is stored: it follows from the stored losses, so
    after the router replica is killed and Redis restarts, the new replica shows the same
    set (the lowest losses with the served model) and the gauge its size."""
    client = deploy(active_models=ACTIVE, shadow_rate=1.0, gamma=1.0, seed=5)
    drive(client, demo, "no-such-model", max_items=600, stream="moved")
    selection = client.get("/v1/selection").json()
    before = active_shown(client)
    assert before is not None and len(before) == ACTIVE
    assert selection["served_model"] in before
    losses = selection["losses"]
    leaders = sorted(losses, key=lambda name: losses[name])[: ACTIVE - 1]
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
    assert client.get("/v1/selection").json()["losses"] == losses
    assert active_shown(client) == before
