"""Labels to identification 0.9 on the benchmark sets: every selector, one table and plot.

For each set (at its stream size) and method, a curve of (mean labels, identification) over
`--runs` realisations: ModelPicker over a grid of gamma, random sampling of disagreements over
a grid of budgets, the pool selectors over the same budgets (one pass per realisation serves
every budget). "Labels to 0.9" interpolates linearly at the first crossing of 0.9; "largest
fall" is the largest drop in identification from one budget to a later one.

    python benchmarks/label_frontier.py run --set glue-rte --method coda   # one curve
    python benchmarks/label_frontier.py report --plot docs/label-frontier.png

`run` adds its curve to benchmarks/results/label_frontier.json; `report` prints the
Markdown table from that file and draws the plot.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from picker import load_pool
from picker.calibrate import calibrate_pool
from picker.pool_replay import pool_replay
from picker.replay import replay

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "benchmarks"
RESULTS = ROOT / "benchmarks" / "results" / "label_frontier.json"
SETS = {"emocontext": 1000, "gas-drift": 2500, "glue-rte": 277}
BUDGETS = {
    "emocontext": [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 120, 140, 160, 200, 250, 300],
    "gas-drift": [10, 20, 30, 40, 50, 60, 80, 100, 120, 140, 160, 200, 250, 300, 400],
    "glue-rte": [5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 100, 120, 150],
}
GAMMAS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32]
METHODS = (
    "modelpicker",
    "random",
    "model-selector",
    "model-selector-calibrated",
    "coda",
    "pool-based",
)
CALIBRATED = "model-selector-calibrated"  # eps from `calibrate`, no labels


def crossing(points: list[tuple[float, float]], target: float = 0.9) -> float | None:
    """Labels at the first point where identification reaches `target`, interpolated."""
    points = sorted(points)
    previous = (0.0, 0.0)
    for labels, identified in points:
        if identified >= target:
            x0, y0 = previous
            if identified == y0:
                return labels
            return x0 + (target - y0) * (labels - x0) / (identified - y0)
        previous = (labels, identified)
    return None


def largest_fall(points: list[tuple[float, float]]) -> float:
    best, fall = 0.0, 0.0
    for _, identified in sorted(points):
        best = max(best, identified)
        fall = max(fall, best - identified)
    return fall


def run_curve(name: str, method: str, runs: int, seed: int) -> list[dict[str, Any]]:
    pool = load_pool(DATA / name / "predictions.npy", DATA / name / "oracle.npy")
    size = SETS[name]
    if method in ("modelpicker", "random"):
        params = GAMMAS if method == "modelpicker" else BUDGETS[name]
        results = [
            replay(pool, method, float(p), size, runs, np.random.default_rng([seed, i]))  # type: ignore[arg-type]
            for i, p in enumerate(params)
        ]
    elif method == CALIBRATED:
        # Model Selector's own label-free grid search (the majority vote for the labels),
        # over budgets up to the set's largest, on other realisations (seed + 1).
        eps = calibrate_pool(pool, "model-selector", max(BUDGETS[name]), size, runs, seed + 1)
        results = pool_replay(
            pool, "model-selector", BUDGETS[name], size, runs, np.random.default_rng(seed),
            eps["eps"],
        )  # fmt: skip
    else:
        results = pool_replay(pool, method, BUDGETS[name], size, runs, np.random.default_rng(seed))
    return [r.to_dict() for r in results]


def load_results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def report(plot: Path | None) -> None:
    results = load_results()
    print(
        "| set | "
        + " | ".join(m.replace(CALIBRATED, "model-selector, ε by calibrate") for m in METHODS)
        + " |"
    )
    print("|---|" + "---|" * len(METHODS))
    ratios: dict[str, list[float]] = {m: [] for m in METHODS}
    for name in SETS:
        cells = []
        base = None
        for method in METHODS:
            entry = results.get(f"{name}/{method}")
            if entry is None:
                cells.append("—")
                continue
            points = [(p["labels"], p["identified"]) for p in entry["points"]]
            needed = crossing(points)
            fall = largest_fall(points)
            if method == "modelpicker":
                base = needed
            text = "not reached" if needed is None else f"{needed:.0f}"
            if needed is not None and base is not None and method != "modelpicker":
                ratios[method].append(needed / base)
                text += f" ({needed / base:.2f}×)"
            if fall > 0.05:
                text += f", falls {fall:.2f}"
            cells.append(text)
        print(f"| {name} | " + " | ".join(cells) + " |")
    means = []
    for method in METHODS[1:]:
        values = ratios[method]
        if len(values) == len(SETS):
            means.append(f"{method} {math.exp(np.mean(np.log(values))):.2f}×")
    print("\ngeometric mean of labels to 0.9 over ModelPicker's: " + ", ".join(means))
    if plot is not None:
        draw(results, plot)


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SETS), figsize=(15, 4.2))
    for axis, name in zip(axes, SETS, strict=True):
        for method in METHODS:
            entry = results.get(f"{name}/{method}")
            if entry is None:
                continue
            points = sorted((p["labels"], p["identified"]) for p in entry["points"])
            label = "model-selector, ε by calibrate" if method == CALIBRATED else method
            axis.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
        axis.axhline(0.9, color="grey", linewidth=0.8, linestyle=":")
        axis.set_title(f"{name} (n={SETS[name]})")
        axis.set_xlim(0, max(BUDGETS[name]))
        axis.set_xlabel("labels")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("identification probability")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument("--set", choices=SETS, nargs="+", default=list(SETS))
    run.add_argument("--method", choices=METHODS, nargs="+", default=list(METHODS))
    run.add_argument("--runs", type=int, default=100)
    run.add_argument("--seed", type=int, default=0)
    show = commands.add_parser("report")
    show.add_argument("--plot", type=Path)
    args = parser.parse_args()
    if args.command == "report":
        report(args.plot)
        return
    for name in args.set:
        for method in args.method:
            started = time.perf_counter()
            points = run_curve(name, method, args.runs, args.seed)
            seconds = time.perf_counter() - started
            results = load_results()  # re-read: other runs may have written meanwhile
            results[f"{name}/{method}"] = {
                "runs": args.runs,
                "seconds": round(seconds, 1),
                "points": points,
            }
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
            print(f"{name}/{method}: {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
