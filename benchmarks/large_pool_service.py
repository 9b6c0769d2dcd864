"""The large-pool mode over real Ray Serve, on the 1,000-candidate pool: start-up time,
resident memory per replica, predict p50 against the demo pool in the same run, model
evaluations per shadow item, and the loop converging on the stream's best.

    python benchmarks/large_pool_service.py --max-items 200000   # 25 minutes here
    python benchmarks/large_pool_service.py --json benchmarks/results/large_pool_service.json

In one Ray instance it serves the demo pool (10 candidates) and the large pool (1,000,
built by `service.models.large_pool.write_pool` on first use and kept in --cache), each
as its own pickserve application with the default `active_models` (auto: 20 for the large
pool, every candidate for the demo). It then
1. times the large pool's deployment (`serve.run` until it answers);
2. reads every replica's resident memory;
3. drives both with wrk, one connection, alternated for a few rounds, with shadow work off
   so that the figure is the predict path's (8 instances a request);
   A third application serves the large pool with `max_resident_models` (--max-resident):
   its start-up and memory are measured beside the others';
4. runs the loop on the large pool: its 5,000-item stream is served in batches, every
   queued item is labeled from the stream's truth, until the stream's best candidate is
   served with posterior >= 0.9 (or --max-items, two passes by default); a failed
   request stops the run;
5. reads the evaluations from /metrics: per shadow item, the active set's and the label
   checks', against the 1,000 that every candidate on every item would cost;
6. runs the loop on the bounded application for --bounded-items, and reads its loads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # loadtest, when run as benchmarks/x.py

from loadtest.soak import replica_memory_mib  # noqa: E402
from loadtest.wrk import require_wrk, run_wrk  # noqa: E402
from service.models import large_pool  # noqa: E402

RECORDED = ROOT / "tests" / "data" / "large-pool"
LOOP_KNOBS = {"gamma": 2.0, "shadow_rate": 1.0, "queue_target": None, "seed": 3}


class Stream:
    """The large pool's stream, in the shape `service.tools.demo.drive` reads."""

    def __init__(self) -> None:
        _, _, self.features, self.labels = large_pool.dataset()

    def stream(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.features, self.labels.astype(np.int64)


def deploy(name: str, state_dir: Path, pool: Path, knobs: dict[str, Any], **more: Any) -> None:
    from ray import serve

    from service.app import build
    from service.config.knobs import RuntimeKnobs
    from service.config.settings import Settings

    settings = Settings(state_dir=state_dir, store_namespace=name, pool=pool,
                        knobs=RuntimeKnobs(**knobs), **more)  # fmt: skip
    serve.run(build(settings), name=name, route_prefix=f"/{name}")


def bodies(features: np.ndarray, count: int = 32) -> list[str]:
    rng = np.random.default_rng(0)
    rows = [rng.choice(len(features), 8, replace=False) for _ in range(count)]
    return [json.dumps({"instances": features[r].round(4).tolist()}) for r in rows]


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def stream_best() -> str:
    predictions = np.load(RECORDED / "predictions.npy")
    truth = np.load(RECORDED / "oracle.npy")
    return large_pool.recipe(int((predictions == truth[:, None]).mean(axis=0).argmax())).name


def latency(base: str, demo: Any, stream: Stream, rounds: int) -> dict[str, Any]:
    """Predict p50 with one connection, the two apps alternated, shadow work off."""
    demo_bodies = bodies(demo.stream("today")[0])
    large_bodies = bodies(stream.features)
    runs: dict[str, list[float]] = {"demo": [], "large": []}
    failed = 0
    for name, sample in (("demo", demo_bodies), ("large", large_bodies)):
        run_wrk(f"{base}/{name}/v1/predict", sample, 1, 3)  # warm-up
    for _ in range(rounds):
        for name, sample in (("demo", demo_bodies), ("large", large_bodies)):
            result = run_wrk(f"{base}/{name}/v1/predict", sample, 1, 10)
            runs[name].append(result.p50_ms)
            failed += result.failed
    p50 = {name: statistics.median(values) for name, values in runs.items()}
    return {"p50_ms": p50, "rounds": runs, "large_minus_demo_ms": p50["large"] - p50["demo"],
            "failed": failed}  # fmt: skip


def loop(base: str, stream: Stream, max_items: int, app: str = "large") -> dict[str, Any]:
    from service.tools.demo import drive

    target = stream_best()
    with httpx.Client(base_url=f"{base}/{app}", timeout=120) as client:
        started = time.perf_counter()
        progress = drive(client, stream, target, max_items=max_items, stream="stream",  # type: ignore[arg-type]
                         seed=1)  # fmt: skip
        seconds = time.perf_counter() - started
        text = client.get("/metrics").text
        selection = client.get("/v1/selection").json()
    done = metric(text, 'pickserve_shadow_items_total{outcome="done"}')
    shed = metric(text, 'pickserve_shadow_items_total{outcome="shed"}')
    shadow = metric(text, 'pickserve_model_evaluations_total{purpose="shadow"}')
    checks = metric(text, 'pickserve_model_evaluations_total{purpose="labeling"}')
    return {"target": target, "served": selection["served_model"],
            "posterior": selection["posterior"][target], "items": progress.items_served,
            "labels": progress.labels_posted, "seconds": round(seconds, 1),
            "shadow_items": done, "shed": shed,
            "evaluations_per_shadow_item": round((shadow + checks) / max(done, 1), 2),
            "active_per_item": round(shadow / max(done, 1), 2),
            "checks_per_item": round(checks / max(done, 1), 2),
            "every_candidate_per_item": len(selection["posterior"]),
            "eliminated": len(selection["eliminated_models"] or []),
            "model_loads": metric(text, "pickserve_model_loads_total"),
            "model_load_seconds": round(metric(text, "pickserve_model_load_seconds_total"), 1),
            "errors": {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith("pickserve_errors_total{")}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", type=int, default=large_pool.N_CANDIDATES)
    parser.add_argument(
        "--max-items",
        type=int,
        default=2 * large_pool.N_STREAM,
        help="items of the loop on the large pool, every model resident (0: no loop)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="wrk alternations")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "pickserve")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--max-resident", type=int, default=40, help="max_resident_models of the bounded deployment"
    )
    parser.add_argument(
        "--bounded-items",
        type=int,
        default=20_000,
        help="items of the loop on the bounded deployment (0: none)",
    )
    args = parser.parse_args()
    require_wrk()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from service.app import demo_folder
    from service.config.settings import Settings
    from service.models.demo_data import ensure_demo

    report: dict[str, Any] = {"candidates": args.candidates}
    started = time.perf_counter()
    pool = large_pool.write_pool(args.cache / f"large-pool-{args.candidates}", args.candidates)
    report["pool_ready_s"] = round(time.perf_counter() - started, 1)
    state_dir = Path(tempfile.mkdtemp(prefix="pickserve-large-"))
    demo = ensure_demo(demo_folder(Settings(state_dir=state_dir)))
    stream = Stream()
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    base = f"http://127.0.0.1:{args.port}"
    try:
        quiet = {"shadow_rate": 0.0}
        started = time.perf_counter()
        deploy("demo", state_dir, demo.pool_file, quiet)
        report["demo_startup_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        deploy("large", state_dir, pool, quiet)
        report["large_startup_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        deploy("bounded", state_dir, pool, quiet, max_resident_models=args.max_resident)
        report["bounded_startup_s"] = round(time.perf_counter() - started, 1)
        report["max_resident_models"] = args.max_resident
        report["memory_mib"] = {"large": replica_memory_mib("large"),
                                "bounded": replica_memory_mib("bounded"),
                                "demo": replica_memory_mib("demo")}  # fmt: skip
        print(json.dumps(report), flush=True)
        report["latency"] = latency(base, demo, stream, args.rounds)
        print(json.dumps(report["latency"]), flush=True)
        if args.max_items:
            deploy("large", state_dir, pool, LOOP_KNOBS)  # the knobs change in place
            report["loop"] = loop(base, stream, args.max_items)
            report["memory_mib_after_loop"] = replica_memory_mib("large")
            print(json.dumps(report["loop"]), flush=True)
        if args.bounded_items:
            deploy("bounded", state_dir, pool, LOOP_KNOBS, max_resident_models=args.max_resident)
            report["bounded_loop"] = loop(base, stream, args.bounded_items, "bounded")
            report["memory_mib_after_bounded_loop"] = replica_memory_mib("bounded")
            print(json.dumps(report["bounded_loop"]), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
