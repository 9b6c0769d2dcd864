"""Faults and concurrency over real HTTP: two replicas, restarts, swaps under load."""

from __future__ import annotations

import difflib
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from ray import serve

from picker import loss_increments
from service.models.demo_data import DemoData
from tests.integration.conftest import APP, Deploy, settled_metrics
from tests.integration.test_api import fill_queue
from tests.redis_server import RedisServer


def selection_state(client: httpx.Client) -> dict[str, Any]:
    selection = client.get("/v1/selection").json()
    keys = (
        "round",
        "step",
        "queries",
        "labels",
        "losses",
        "served_model",
        "selection_version",
        "swaps",
    )
    return {k: selection[k] for k in keys}


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_concurrent_labels_through_two_replicas(deploy: Deploy, demo: DemoData, store: str) -> None:
    client = deploy(store=store, router_replicas=2, shadow_rate=1.0, gamma=50.0)
    items = fill_queue(client, demo, n=64)
    labels = {item["item_id"]: int(demo.stream_labels[i % 64]) for i, item in enumerate(items)}
    # every label is posted twice, by different threads, in different orders
    posts = [[{"item_id": i, "label": y}] for i, y in labels.items()] * 2
    posts = posts[::2] + posts[1::2][::-1]

    def post(body: list[dict[str, Any]]) -> tuple[str, str]:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            answer = own.post("/v1/feedback", json={"labels": body})
            return answer.json()["results"][0]["outcome"], answer.headers["x-pickserve-replica"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(post, posts))
    outcomes = Counter(outcome for outcome, _ in results)
    assert outcomes == {"accepted": len(labels), "duplicate": len(labels)}
    assert len({replica for _, replica in results}) == 2, "both replicas took labels"
    expected = sum(
        loss_increments(list(item["predictions"].values()), labels[item["item_id"]], item["q"])
        for item in items
    )
    selection = client.get("/v1/selection").json()
    np.testing.assert_allclose(list(selection["losses"].values()), expected, rtol=1e-9)
    assert selection["labels"] == len(labels)
    # /metrics reads the same whichever replica answers, once the counters settled: the
    # last shadow batches (shadow_rate 1) may still be evaluated and flushed (0.5 s apart)
    settled_metrics(client)
    scrapes: dict[str, set[str]] = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for answer in pool.map(lambda _: httpx.get(f"{client.base_url}/metrics"), range(16)):
            shared = stored_figures(answer.text)
            scrapes.setdefault(answer.headers["x-pickserve-replica"], set()).add(shared)
    texts = set.union(*scrapes.values())
    assert len(scrapes) == 2
    assert len(texts) == 1, "\n".join(
        difflib.unified_diff(*[t.splitlines() for t in list(texts)[:2]], lineterm="")
    )
    assert f'pickserve_labels_total{{outcome="accepted"}} {float(len(labels))}' in texts.pop()


# Gauges of the answering replica's own view (the metrics table says so): its probe of each
# model, its paced shadow rate, and the active set of the selection it last read.
REPLICA_GAUGES = ("pickserve_model_healthy", "pickserve_shadow_rate", "pickserve_active_models",
                  "pickserve_eliminated_models")  # fmt: skip


def stored_figures(metrics: str) -> str:
    """/metrics without the REPLICA_GAUGES: what the store holds, the same on every replica."""
    return "\n".join(line for line in metrics.splitlines()
                     if not line.removeprefix("# HELP ").removeprefix("# TYPE ")
                     .startswith(REPLICA_GAUGES))  # fmt: skip


def test_app_restart_keeps_selection_and_queue(deploy: Deploy, demo: DemoData) -> None:
    client = deploy(shadow_rate=1.0, gamma=50.0, lease_s=1.0, namespace="restart-app")
    items = fill_queue(client, demo, n=48)
    for item in items[:10]:
        label = int(next(iter(item["predictions"].values())))
        client.post("/v1/feedback", json={"labels": [{"item_id": item["item_id"], "label": label}]})
    before = selection_state(client)
    serve.delete(APP)
    client = deploy(shadow_rate=1.0, gamma=50.0, lease_s=1.0, namespace="restart-app")
    assert selection_state(client) == before
    time.sleep(1.1)  # the leases taken before the restart run out
    again = client.get("/v1/queries", params={"limit": 500}).json()["items"]
    assert sorted(i["item_id"] for i in again) == sorted(i["item_id"] for i in items[10:])


def test_redis_restart_keeps_state_and_service_recovers(
    deploy: Deploy, demo: DemoData, tmp_path: Any
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        client = deploy(
            store="redis", redis_url=server.url, shadow_rate=1.0, gamma=50.0, lease_s=1.0
        )
        items = fill_queue(client, demo, n=32)
        first = items[0]
        label = int(next(iter(first["predictions"].values())))
        client.post(
            "/v1/feedback", json={"labels": [{"item_id": first["item_id"], "label": label}]}
        )
        before = selection_state(client)
        server.stop()
        down = client.get("/v1/selection")
        assert down.status_code == 503 and "state store unavailable" in down.text
        assert client.get("/v2/health/ready").status_code == 503
        # clients are still answered by the last known model while the store is down
        served = client.post("/v1/predict", json={"instances": demo.stream_features[:2].tolist()})
        assert served.status_code == 200 and served.json()["model"] == before["served_model"]
        server.start()
        deadline = time.monotonic() + 10
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        after = selection_state(client)
        # What was acknowledged before the outage is intact. The 2 items served during it
        # may still be shadowed once Redis is back (redis-py retries), adding to t and queries.
        growing = ("step", "queries")
        assert {k: v for k, v in after.items() if k not in growing} == {
            k: v for k, v in before.items() if k not in growing
        }
        for key in growing:
            assert before[key] <= after[key] <= before[key] + 2
        time.sleep(1.1)
        again = client.get("/v1/queries", params={"limit": 500}).json()["items"]
        assert {i["item_id"] for i in items[1:]} <= {i["item_id"] for i in again}
    finally:
        server.stop()


def test_hot_swap_under_load_fails_no_request(deploy: Deploy, demo: DemoData) -> None:
    client = deploy(router_replicas=2, shadow_rate=1.0, gamma=50.0)
    items = fill_queue(client, demo, n=64)
    items += fill_queue(client, demo, n=64, offset=64)
    names = list(items[0]["predictions"])
    stop = threading.Event()
    failures: list[str] = []
    seen: Counter[str] = Counter()
    sent = [0]

    def load() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            rows = demo.stream_features[:4].tolist()
            while not stop.is_set() and sent[0] < 5000:
                try:
                    answer = own.post("/v1/predict", json={"instances": rows})
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code}: {answer.text[:200]}")
                    else:
                        seen[answer.json()["model"]] += 1
                except httpx.HTTPError as error:
                    failures.append(repr(error))
                sent[0] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        # Labels that agree with a model that is not served, a few at a time, until the
        # served model changes: three swaps, each checked on every replica 1 s later.
        swaps_before = len(client.get("/v1/selection").json()["swaps"])
        unlabeled = list(items)
        for _ in range(3):
            served = client.get("/v1/selection").json()["served_model"]
            favourite = next(n for n in names if n != served and any(
                i["predictions"][n] != i["predictions"][served] for i in unlabeled))  # fmt: skip
            answer = {"served_model": served}
            while answer["served_model"] == served:
                assert unlabeled, "ran out of items before the served model changed"
                chunk, unlabeled = unlabeled[:4], unlabeled[4:]
                labels = [{"item_id": i["item_id"], "label": i["predictions"][favourite]}
                          for i in chunk]  # fmt: skip
                answer = client.post("/v1/feedback", json={"labels": labels}).json()
            time.sleep(1.0)  # every replica serves the new model within 1 s
            for _ in range(10):
                served_now = client.post(
                    "/v1/predict", json={"instances": demo.stream_features[:1].tolist()}
                ).json()
                assert served_now["model"] == answer["served_model"]
                assert served_now["selection_version"] == answer["selection_version"]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    swaps = client.get("/v1/selection").json()["swaps"]
    assert len(swaps) - swaps_before >= 3
    assert failures == [] and sent[0] > 50
    assert len(seen) >= 2, f"clients saw only {dict(seen)}"


def deploy_config(settings_args: dict[str, Any], knobs: dict[str, Any]) -> None:
    """Deploy the way `serve deploy deploy/serve.yaml` and KubeRay do: a declarative config
    applied by the Serve controller (the call the `serve deploy` REST handler makes)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = {"applications": [{
        "name": APP, "route_prefix": "/", "import_path": "service.app:build_app",
        "args": settings_args, "deployments": [{"name": "Router", "user_config": knobs}],
    }]}  # fmt: skip
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))


def wait_until(condition: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_knobs_change_through_user_config_without_a_restart(
    serve_port: int, state_dir: Any, demo: DemoData
) -> None:
    args = {"state_dir": str(state_dir), "store_namespace": "reconfigure"}
    deploy_config(args, {"shadow_rate": 1.0, "gamma": 50.0, "seed": 1})
    client = httpx.Client(base_url=f"http://127.0.0.1:{serve_port}", timeout=30)
    try:
        wait_until(lambda: client.get("/v2/health/ready").status_code == 200)
        replica = client.get("/v2/health/live").headers["x-pickserve-replica"]
        fill_queue(client, demo, n=8)
        step = client.get("/v1/selection").json()["step"]
        deploy_config(args, {"shadow_rate": 0.0, "gamma": 50.0, "seed": 1, "label_budget": 3})
        wait_until(lambda: client.get("/v1/selection").json()["label_budget"] == 3)
        assert client.get("/v2/health/live").headers["x-pickserve-replica"] == replica
        client.post("/v1/predict", json={"instances": demo.stream_features[:8].tolist()})
        time.sleep(0.5)
        assert client.get("/v1/selection").json()["step"] == step  # shadow rate 0 now
    finally:
        client.close()
        serve.delete(APP)
