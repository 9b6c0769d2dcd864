"""Labels people get wrong, over real Ray Serve: three labelers on the demo's shifted
stream, each with a token of their own, the knobs at their defaults (overlap_rate 0.1,
gold_rate 0.05, audit_overlap_rate 1, audit_gold_rate 0.25,
labeler_min_accuracy 0.8, weigh_labels on), and 40 gold items from the
stream.

    python benchmarks/labelers.py --json benchmarks/results/labelers.json

Scenarios (each a fresh store namespace, the same traffic):
- honest: all three answer the truth (the baseline);
- flipper: `eve` answers another class, at random, for 30 % of her items;
- partisan: `eve` asks for the candidates' predictions (include_predictions, which the
  label role may) and always answers what the model served at the start predicts (a
  labeler with a stake in it; it is the best on the training data, not on today's stream).

Each runs until the stream's best is served with posterior >= 0.9, or --max-items, once
per seed (--runs). The labelers take turns at leasing first, so each gets about a third. It
records the selection labels, every answer the labelers gave (selection labels, overlap
labels and gold answers: the people's work) and items served to that point, the model
served at the end, the labelers' figures (GET /v1/labelers), and when the posterior's
best, the served model and eve's flag changed. Figures, not assertions: the README quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELERS = ("ann", "bob", "eve")
TOKENS = {name: f"{name}-benchmark-token-0123456789" for name in (*LABELERS, "ops", "web")}
ROLES = {"ops": ["admin"], "web": ["infer"]}
SCENARIOS = ("honest", "flipper", "partisan")
BATCH, PER_LABELER = 16, 8


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def deploy(state_dir: Path, namespace: str, port: int) -> httpx.Client:
    from ray import serve

    from service.app import build
    from service.config.knobs import RuntimeKnobs
    from service.config.settings import Settings

    table = [{"name": n, "token": t, "roles": ROLES.get(n, ["label"])} for n, t in TOKENS.items()]
    settings = Settings(state_dir=state_dir, store_namespace=namespace,
                        tokens=json.dumps(table), knobs=RuntimeKnobs(seed=3))  # fmt: skip
    serve.run(build(settings), name="pickserve", route_prefix="/")
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)


class Labeler:
    def __init__(self, name: str, scenario: str, rng: np.random.Generator, n_classes: int,
                 partisan_for: str) -> None:  # fmt: skip
        self.name, self.scenario, self.rng = name, scenario, rng
        self.n_classes, self.partisan_for = n_classes, partisan_for

    @property
    def careless(self) -> bool:
        return self.name == "eve" and self.scenario != "honest"

    def answer(self, item: dict[str, Any], truth: int) -> int:
        if self.careless and self.scenario == "flipper" and self.rng.random() < 0.3:
            return int((truth + self.rng.integers(1, self.n_classes)) % self.n_classes)
        if self.careless and self.scenario == "partisan":
            return int(item["predictions"].get(self.partisan_for, truth))
        return truth

    def work(self, client: httpx.Client, truth: dict[str, int]) -> int:
        asked = {"limit": PER_LABELER, "include_predictions": self.careless}
        items = client.get("/v1/queries", params=asked, headers=bearer(self.name))
        items.raise_for_status()
        labels = [{"item_id": i["item_id"], "label": self.answer(i, truth[i["item_id"]])}
                  for i in items.json()["items"] if i["item_id"] in truth]  # fmt: skip
        if not labels:
            return 0
        posted = client.post("/v1/feedback", json={"labels": labels}, headers=bearer(self.name))
        if posted.status_code not in (200, 404, 409):
            posted.raise_for_status()
        return sum(r["outcome"] == "accepted" for r in posted.json()["results"])


def run(
    client: httpx.Client, demo: Any, scenario: str, max_items: int, seed: int
) -> dict[str, Any]:
    from service.models.pool_file import read_pool_spec

    features, labels = demo.stream("today")
    target = demo.summary["best_today"]
    partisan_for = demo.summary["best_on_training_distribution"]
    n_classes = len(read_pool_spec(demo.pool_file).class_names)
    rng = np.random.default_rng(seed)
    crowd = [Labeler(n, scenario, np.random.default_rng(seed + k), n_classes, partisan_for)
             for k, n in enumerate(LABELERS)]  # fmt: skip
    gold_rows = rng.choice(len(labels), 40, replace=False)
    body = {"items": [{"instance": features[r].tolist(), "label": int(labels[r])}
                      for r in gold_rows]}  # fmt: skip
    answer = client.post("/v1/gold", json=body, headers=bearer("ops"))
    answer.raise_for_status()
    truth = dict(zip(answer.json()["item_ids"], map(int, labels[gold_rows]), strict=True))
    served_items, answers, events, last = 0, 0, [], (None, None, None)
    started = time.perf_counter()
    selection: dict[str, Any] = {}
    while served_items < max_items:
        rows = rng.choice(len(labels), BATCH, replace=False)
        answer = client.post("/v1/predict", json={"instances": features[rows].tolist()},
                             headers=bearer("web"))  # fmt: skip
        answer.raise_for_status()
        served_items += BATCH
        for prediction, row in zip(answer.json()["predictions"], rows, strict=True):
            truth[prediction["item_id"]] = int(labels[row])
        turn = served_items // BATCH  # each labeler first in turn: a third of the items each
        for labeler in crowd[turn % 3 :] + crowd[: turn % 3]:
            answers += labeler.work(client, truth)
        selection = client.get("/v1/selection", headers=bearer("ops")).json()
        best = max(selection["posterior"], key=selection["posterior"].get)
        flagged = None
        if served_items % (BATCH * 10) == 0:
            figures = {r["name"]: r for r in client.get(
                "/v1/labelers", headers=bearer("ops")).json()["labelers"]}  # fmt: skip
            flagged = bool(figures.get("eve", {}).get("flagged"))
        now = (best, selection["served_model"], flagged if flagged is not None else last[2])
        if now != last:
            events.append({"items": served_items, "labels": selection["labels"], "best": now[0],
                           "served": now[1], "eve_flagged": now[2]})  # fmt: skip
            last = now
        if selection["served_model"] == target and selection["posterior"][target] >= 0.9:
            break
    figures = client.get("/v1/labelers", headers=bearer("ops")).json()["labelers"]
    return {
        "scenario": scenario, "target": target, "partisan_for": partisan_for,
        "converged": selection["served_model"] == target
        and selection["posterior"][target] >= 0.9,
        "items": served_items, "labels": selection["labels"], "answers": answers,
        "served_at_end": selection["served_model"],
        "posterior_of_target": round(selection["posterior"][target], 4),
        "posterior_of_partisan": round(selection["posterior"][partisan_for], 4),
        "seconds": round(time.perf_counter() - started, 1),
        "labelers": {r["name"]: {k: (round(v, 3) if isinstance(v, float) else v)
                                 for k, v in r.items() if k != "name"} for r in figures},
        "events": events,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--max-items", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="seeds per scenario")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from service.app import demo_folder
    from service.config.settings import Settings
    from service.models.demo_data import ensure_demo

    state_dir = Path(tempfile.mkdtemp(prefix="pickserve-labelers-"))
    demo = ensure_demo(demo_folder(Settings(state_dir=state_dir)))
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    results = []
    try:
        for seed in range(args.seed, args.seed + args.runs):
            for scenario in args.scenario:
                client = deploy(state_dir, uuid.uuid4().hex, args.port)
                result = {"seed": seed, **run(client, demo, scenario, args.max_items, seed)}
                results.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "events"}), flush=True)
                serve.delete("pickserve")
    finally:
        serve.shutdown()
        ray.shutdown()
    summary = {scenario: summarise([r for r in results if r["scenario"] == scenario])
               for scenario in args.scenario}  # fmt: skip
    print(json.dumps(summary, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "runs": results}, indent=1) + "\n")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the seeds: runs converged, median labels and items (of those that did), eve's
    median accuracy and how often she was flagged at the end."""
    done = [r for r in runs if r["converged"]]
    eve = [r["labelers"].get("eve", {}) for r in runs]
    return {
        "runs": len(runs), "converged": len(done),
        "median_labels": float(np.median([r["labels"] for r in done])) if done else None,
        "median_items": float(np.median([r["items"] for r in done])) if done else None,
        "median_answers": float(np.median([r["answers"] for r in done])) if done else None,
        "served_partisan_at_end": sum(r["served_at_end"] == r["partisan_for"] for r in runs),
        "eve_median_accuracy": float(np.median([e.get("accuracy", np.nan) for e in eve])),
        "eve_flagged_at_end": sum(bool(e.get("flagged")) for e in eve),
    }  # fmt: skip


if __name__ == "__main__":
    main()
