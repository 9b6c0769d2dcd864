"""pickserve on a real two-node Ray cluster started on this machine with Ray's own CLI
(`ray start --head`, then `ray start --address=...` as a second node with resources of
its own): router replicas on both nodes, the Redis store shared by them, exact label sums
and a swap that reaches both nodes within 1 s; the embedded store refused there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from picker import loss_increments
from service.models.demo_data import DemoData
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def ray_node(*args: str) -> subprocess.Popen[bytes]:
    """A Ray node in the foreground (`--block`): terminating it stops that node only, not
    the session's own Ray instance (as `ray stop` would)."""
    ports = [free_port() for _ in range(4)]
    command = [RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats",
               "--node-ip-address=127.0.0.1", f"--node-manager-port={ports[0]}",
               f"--object-manager-port={ports[1]}", f"--metrics-export-port={ports[2]}",
               f"--dashboard-agent-listen-port={ports[3]}", *args]  # fmt: skip
    # One proxy (both nodes share this machine's address and port), and it would send
    # everything to its own node's replica: Ray Serve prefers local replicas by default.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled",
           "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def cluster() -> Iterator[str]:
    port = free_port()
    # Ray's socket paths must stay under 107 bytes: a short folder of its own
    temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
    head = ray_node("--head", f"--port={port}", "--include-dashboard=false",
                    f"--ray-client-server-port={free_port()}", '--resources={"node_a": 1}',
                    f"--temp-dir={temp_dir}")  # fmt: skip
    nodes = [head]
    try:
        address = f"127.0.0.1:{port}"
        wait_for_nodes(address, 1, head)
        nodes.append(ray_node(f"--address={address}", '--resources={"node_b": 1}'))
        wait_for_nodes(address, 2, nodes[-1])
        yield address
    finally:
        for node in reversed(nodes):
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_nodes(address: str, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        done = subprocess.run([RAY, "status", f"--address={address}"], capture_output=True,
                              text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # fmt: skip
        if done.returncode == 0 and done.stdout.count("node_") >= count:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} did not reach {count} nodes")


def test_two_nodes_share_one_state_and_swap_within_a_second(
    cluster: str, demo: DemoData, redis_server: RedisServer, tmp_path: Path
) -> None:
    http_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    deployed = subprocess.run(
        [sys.executable, "-m", "tests.integration.cluster_driver", cluster, str(http_port),
         str(tmp_path / "state"), redis_server.url],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    report = json.loads(deployed.stdout.strip().splitlines()[-1])
    assert len(report["nodes"]) == 2
    assert "embedded store is a file on one machine" in report["embedded_refused"]
    assert "use store=redis" in report["embedded_refused"]

    base = f"http://127.0.0.1:{http_port}"
    rows = demo.stream_features[:8].tolist()
    with httpx.Client(base_url=base, timeout=30) as client:
        seen = {client.post("/v1/predict", json={"instances": rows}).headers["x-pickserve-node"]
                for _ in range(40)}  # fmt: skip
        assert seen == set(report["nodes"])  # router replicas answer from both nodes
        increments = label_through_both_replicas(base, rows)
        selection = client.get("/v1/selection").json()
        stored = np.array(list(selection["losses"].values()))
        np.testing.assert_allclose(stored, sum(increments.values()), rtol=0, atol=1e-9)
        assert selection["labels"] == len(increments)
        assert_swap_reaches_every_node(client, base, rows, report["nodes"])


def label_through_both_replicas(base: str, rows: list[list[float]]) -> dict[str, np.ndarray]:
    """Two labelers, each posting every label twice (two replicas may answer): the loss
    increments of the accepted labels, each counted once."""
    increments: dict[str, np.ndarray] = {}
    lock = threading.Lock()

    def labeler() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(40):
                client.post("/v1/predict", json={"instances": rows})
                items = client.get("/v1/queries", params={"limit": 5}).json()["items"]
                for item in items:
                    predictions = list(item["predictions"].values())
                    body = {"labels": [{"item_id": item["item_id"], "label": predictions[-1]}]}
                    key = {"Idempotency-Key": uuid.uuid4().hex}
                    outcomes = [client.post("/v1/feedback", json=body, headers=key)
                                .json()["results"][0]["outcome"] for _ in range(2)]  # fmt: skip
                    assert outcomes == ["accepted", "accepted"]  # a repeat tells the truth
                    with lock:
                        increments[item["item_id"]] = loss_increments(
                            predictions, predictions[-1], item["q"]
                        )
                time.sleep(0.2)

    threads = [threading.Thread(target=labeler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(increments) >= 10
    return increments


def assert_swap_reaches_every_node(
    client: httpx.Client, base: str, rows: list[list[float]], nodes: list[str]
) -> None:
    """Label for a model that is not served until it is; then every node serves it
    within 1 s of the feedback answer that made the swap."""
    before = client.get("/v1/selection").json()
    target = next(m for m in before["posterior"] if m != before["served_model"])
    for _ in range(200):
        client.post("/v1/predict", json={"instances": rows})
        time.sleep(0.6)  # the shadow batch lands
        items = client.get("/v1/queries", params={"limit": 20}).json()["items"]
        labels = [{"item_id": i["item_id"], "label": i["predictions"][target]} for i in items]
        if not labels:
            continue
        answer = client.post("/v1/feedback", json={"labels": labels}).json()
        if answer["served_model"] == target:
            swapped_at = time.monotonic()
            break
    else:
        raise AssertionError(f"no swap to {target}")
    serving: dict[str, str] = {}
    with httpx.Client(base_url=base, timeout=30) as fresh:
        while time.monotonic() - swapped_at < 1.0 and len(serving) < len(nodes):
            answer = fresh.post("/v1/predict", json={"instances": rows[:1]})
            if answer.json()["model"] == target:
                serving[answer.headers["x-pickserve-node"]] = target
    assert set(serving) == set(nodes), f"after 1 s only {sorted(serving)} serve {target}"
