"""The demo's labels to its target, for both selectors, measured in one run.

Starts Ray Serve once, then for each seed and each selector (alternating, so that the
machine's noise falls on both alike) deploys pickserve with a fresh embedded store and
drives one of the demo's streams (`service.tools.demo.drive`; each has another best candidate)
with a labeler slower than the traffic: after each batch of 16 predictions it leases and
labels `--labels-per-batch` items. A run ends when the stream's best candidate is served
with posterior >= 0.9 (or after 40,000 items). Prints, per stream and selector, the labels
and items each run needed and their medians, the ratio of the medians (pool-based over
modelpicker), and writes them to benchmarks/results/demo_selectors.json.

    python benchmarks/demo_selectors.py [--seeds 10] [--labels-per-batch 2] [--streams ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import httpx
import ray
from ray import serve

from service.app import build, demo_folder
from service.config.knobs import RuntimeKnobs
from service.config.settings import Settings
from service.models.demo_data import STREAMS, ensure_demo
from service.tools.demo import drive
from tests.redis_server import free_port

SELECTORS = ("modelpicker", "pool-based")
RESULTS = Path(__file__).resolve().parent / "results" / "demo_selectors.json"


def run_once(
    port: int, state_dir: Path, selector: str, seed: int, per_batch: int, stream: str
) -> dict[str, Any]:
    settings = Settings(
        state_dir=state_dir, store="embedded", store_namespace=uuid.uuid4().hex,
        knobs=RuntimeKnobs(selector=selector, seed=seed, drift_action="off"),
    )  # fmt: skip
    serve.run(build(settings), name="pickserve", route_prefix="/")
    demo = ensure_demo(demo_folder(settings))
    target = demo.best_on(stream)
    started = time.monotonic()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        progress = drive(client, demo, target, max_items=40_000, seed=seed, stream=stream,
                         labels_per_batch=per_batch)  # fmt: skip
    selection = progress.selection
    reached = selection.get("served_model") == target
    serve.delete("pickserve")
    return {"stream": stream, "selector": selector, "seed": seed, "reached": reached,
            "labels": progress.labels_posted, "items": progress.items_served,
            "queued": selection.get("queries"), "seconds": round(time.monotonic() - started, 1),
            "swaps": [s["to_model"] for s in selection.get("swaps", [])]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--streams", nargs="+", choices=STREAMS, default=["today", "moved"])
    parser.add_argument("--labels-per-batch", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for stream in args.streams:
            for seed in range(args.seeds):
                for selector in SELECTORS if seed % 2 == 0 else SELECTORS[::-1]:
                    run = run_once(port, Path(folder), selector, seed, args.labels_per_batch,
                                   stream)  # fmt: skip
                    runs.append(run)
                    report(run)
    serve.shutdown()
    ray.shutdown()
    summary: dict[str, Any] = {}
    for stream in args.streams:
        rows: dict[str, Any] = {}
        summary[stream] = rows
        for selector in SELECTORS:
            mine = [r for r in runs if r["selector"] == selector and r["stream"] == stream]
            rows[selector] = {
                "reached": sum(r["reached"] for r in mine), "runs": len(mine),
                "median_labels": statistics.median(r["labels"] for r in mine),
                "median_items": statistics.median(r["items"] for r in mine),
            }  # fmt: skip
            print(f"{stream:8s} {selector:12s} reached {rows[selector]['reached']}/"
                  f"{len(mine)}: median {rows[selector]['median_labels']} labels, "
                  f"{rows[selector]['median_items']} items")  # fmt: skip
        rows["ratio"] = rows["pool-based"]["median_labels"] / rows["modelpicker"]["median_labels"]
        print(f"{stream:8s} labels to target, pool-based / modelpicker (medians): "
              f"{rows['ratio']:.2f}")  # fmt: skip
    RESULTS.write_text(json.dumps({"labels_per_batch": args.labels_per_batch,
                                   "summary": summary, "runs": runs}, indent=1) + "\n")  # fmt: skip
    return 0


def report(run: dict[str, Any]) -> None:
    print(f"{run['stream']:8s} {run['selector']:12s} seed {run['seed']}: {run['labels']:4d} "
          f"labels, {run['items']:6d} items, {run['queued']} queued, "
          f"{'reached' if run['reached'] else 'NOT reached'} ({run['seconds']} s); served "
          f"{' -> '.join(run['swaps']) or 'no swap'}", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
