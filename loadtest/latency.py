"""Client latency under load: does shadow evaluation stay off the critical path?

Starts Ray Serve locally with the demo pool, then for each setting sends a bounded number
of requests from concurrent clients over loopback HTTP and prints p50/p90/p99 latency and
throughput, each as a ratio to the baseline measured in the same run: the served model
called directly (`/v2/models/{name}/infer`), with no picker and no shadow work.

    python -m loadtest.latency --requests 600 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def measure(
    url: str, path: str, body: dict[str, Any], requests: int, concurrency: int
) -> dict[str, float]:
    def worker(count: int) -> list[float]:
        latencies = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(count):
                started = time.perf_counter()
                answer = client.post(path, json=body)
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)
        return latencies

    share = [requests // concurrency] * concurrency
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = np.concatenate([np.array(x) for x in pool.map(worker, share)])
    wall_s = time.perf_counter() - started
    p50, p90, p99 = np.percentile(latencies * 1000, [50, 90, 99])
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "rps": len(latencies) / wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="instances per request")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from service.app import build, demo_folder
    from service.demo_pool import ensure_demo
    from service.schemas import RuntimeKnobs
    from service.settings import Settings

    state_dir = Path(tempfile.mkdtemp(prefix="pickserve-load-"))
    demo = ensure_demo(demo_folder(Settings(state_dir=state_dir)))
    rows = demo.stream_features[: args.batch].tolist()
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    url = f"http://127.0.0.1:{args.port}"
    results: dict[str, dict[str, float]] = {}
    try:
        for shadow_rate in (0.0, 1.0):
            knobs = RuntimeKnobs(shadow_rate=shadow_rate, gamma=8.0, seed=1)
            settings = Settings(
                state_dir=state_dir, store_namespace=f"load{shadow_rate:g}", knobs=knobs
            )
            serve.run(build(settings), name="pickserve", route_prefix="/")
            served = httpx.get(f"{url}/v1/selection").json()["served_model"]
            if not results:
                v2 = {"inputs": [{"name": "x", "shape": [args.batch, 64], "datatype": "FP64",
                                  "data": np.ravel(rows).tolist()}]}  # fmt: skip
                measure(url, f"/v2/models/{served}/infer", v2, 50, args.concurrency)  # warm-up
                results["direct candidate (baseline)"] = measure(
                    url, f"/v2/models/{served}/infer", v2, args.requests, args.concurrency
                )
            results[f"router, shadow rate {shadow_rate:g}"] = measure(
                url, "/v1/predict", {"instances": rows}, args.requests, args.concurrency
            )
            metrics = httpx.get(f"{url}/metrics").text
            shadowed = [
                line
                for line in metrics.splitlines()
                if line.startswith("pickserve_shadow_items_total")
            ]
            results[f"router, shadow rate {shadow_rate:g}"]["shadow_lines"] = shadowed  # type: ignore[assignment]
    finally:
        serve.shutdown()
        ray.shutdown()
    baseline = results["direct candidate (baseline)"]
    for name, figures in results.items():
        row = {k: round(v, 2) for k, v in figures.items() if isinstance(v, float)}
        row["p50_vs_baseline"] = round(figures["p50_ms"] / baseline["p50_ms"], 2)
        row["p99_vs_baseline"] = round(figures["p99_ms"] / baseline["p99_ms"], 2)
        row["rps_vs_baseline"] = round(figures["rps"] / baseline["rps"], 2)
        print(json.dumps({"setting": name, **row, "shadow": figures.get("shadow_lines", [])}))


if __name__ == "__main__":
    main()
