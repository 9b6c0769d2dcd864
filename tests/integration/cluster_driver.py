"""Deploys pickserve on a Ray cluster given by address, from a process of its own (a test's
own process already holds the session's local Ray instance). Prints one JSON line.

    python -m tests.integration.cluster_driver ADDRESS HTTP_PORT STATE_DIR REDIS_URL
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from ray import serve

from service.app import StartupError, build
from service.config.knobs import RuntimeKnobs
from service.config.settings import Settings
from service.state.store.base import StoreError


def main() -> int:
    address, port, state_dir, redis_url = sys.argv[1:5]
    ray.init(address=address, log_to_driver=False)
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    common = {"state_dir": Path(state_dir), "router_replicas": 2, "router_replicas_per_node": 1,
              "knobs": RuntimeKnobs(shadow_rate=1.0, gamma=50.0, seed=5, queue_target=None,
                                   drift_action="off")}  # fmt: skip
    try:  # the embedded store cannot be shared by replicas on two nodes
        build(Settings(store="embedded", **common))
        refused = None
    except (StoreError, StartupError) as error:
        refused = str(error)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": int(port)})
    settings = Settings(store="redis", redis_url=redis_url, store_namespace="cluster", **common)
    serve.run(build(settings), name="pickserve", route_prefix="/")
    print(json.dumps({"nodes": nodes, "embedded_refused": refused}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
