"""The demo's labels to its target, for both selectors, measured in one run.

Starts Ray Serve once, then for each seed and each selector (alternating, so that the
machine's noise falls on both alike) deploys pickserve with a fresh embedded store and
drives the demo's "today" stream (`service.demo.drive`) with a labeler slower than the
traffic: after each batch of 16 predictions it leases and labels `--labels-per-batch`
items. A run ends when the stream's best candidate is served with posterior >= 0.9.
Prints, per selector, the labels and items each run needed and their medians, the ratio
of the medians (pool-based over modelpicker), and writes them to
benchmarks/results/demo_selectors.json.

    python benchmarks/demo_selectors.py [--seeds 5] [--labels-per-batch 2]
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
from service.demo import drive
from service.demo_pool import ensure_demo
from service.schemas import RuntimeKnobs
from service.settings import Settings
from tests.redis_server import free_port

SELECTORS = ("modelpicker", "pool-based")
RESULTS = Path(__file__).resolve().parent / "results" / "demo_selectors.json"


def run_once(
    port: int, state_dir: Path, selector: str, seed: int, per_batch: int
) -> dict[str, Any]:
    settings = Settings(
        state_dir=state_dir, store="embedded", store_namespace=uuid.uuid4().hex,
        knobs=RuntimeKnobs(selector=selector, seed=seed, drift_action="off"),
    )  # fmt: skip
    serve.run(build(settings), name="pickserve", route_prefix="/")
    demo = ensure_demo(demo_folder(settings))
    target = demo.summary["best_today"]
    started = time.monotonic()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        progress = drive(client, demo, target, max_items=40_000, seed=seed,
                         labels_per_batch=per_batch)  # fmt: skip
    selection = progress.selection
    reached = selection.get("served_model") == target
    serve.delete("pickserve")
    return {"selector": selector, "seed": seed, "reached": reached,
            "labels": progress.labels_posted, "items": progress.items_served,
            "queued": selection.get("queries"), "seconds": round(time.monotonic() - started, 1),
            "swaps": [s["to_model"] for s in selection.get("swaps", [])]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--labels-per-batch", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for selector in SELECTORS if seed % 2 == 0 else SELECTORS[::-1]:
                run = run_once(port, Path(folder), selector, seed, args.labels_per_batch)
                runs.append(run)
                print(f"{selector:12s} seed {seed}: {run['labels']:4d} labels, "
                      f"{run['items']:6d} items, {run['queued']} queued, "
                      f"{'reached' if run['reached'] else 'NOT reached'} ({run['seconds']} s)",
                      flush=True)  # fmt: skip
    serve.shutdown()
    ray.shutdown()
    summary: dict[str, Any] = {}
    for selector in SELECTORS:
        mine = [r for r in runs if r["selector"] == selector]
        summary[selector] = {
            "reached": sum(r["reached"] for r in mine), "runs": len(mine),
            "median_labels": statistics.median(r["labels"] for r in mine),
            "median_items": statistics.median(r["items"] for r in mine),
        }  # fmt: skip
    ratio = summary["pool-based"]["median_labels"] / summary["modelpicker"]["median_labels"]
    for selector, row in summary.items():
        print(f"{selector:12s} reached {row['reached']}/{row['runs']}: median "
              f"{row['median_labels']} labels, {row['median_items']} items")  # fmt: skip
    print(f"labels to target, pool-based / modelpicker (medians): {ratio:.2f}")
    RESULTS.write_text(json.dumps({"labels_per_batch": args.labels_per_batch,
                                   "summary": summary, "ratio": ratio, "runs": runs},
                                  indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
