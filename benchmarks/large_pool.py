"""Large pools: labels and model evaluations ModelPicker needs for identification 0.9,
with every model evaluated on every item and in the large-pool mode (`--active-models`).

    python benchmarks/large_pool.py build    # the 1,000-candidate pool's prediction matrix
    python benchmarks/large_pool.py run --set glue-rte --runs 40
    python benchmarks/large_pool.py run --set large-pool --stream-size 5000 --runs 10

`build` fits the 1,000 candidates of `service.models.large_pool` and writes the stream's
predictions and labels into tests/data/large-pool/. `run` replays ModelPicker over a grid
of gamma for each mode and prints, per mode, the curve and the labels and evaluations at
identification 0.9 (interpolated at the first crossing), with their ratios to the full pool
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from label_frontier import crossing  # this folder's: scripts run as benchmarks/x.py

from picker import load_pool
from picker.data import Pool
from picker.large_pool import DEFAULT_ACTIVE_MODELS, DEFAULT_DELTA, run_modelpicker
from picker.replay import summarise

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SETS = {"glue-rte": DATA / "benchmarks" / "glue-rte", "large-pool": DATA / "large-pool"}


def build() -> None:
    from service.models.large_pool import N_CANDIDATES, predictions

    started = time.perf_counter()
    matrix, labels = predictions(range(N_CANDIDATES))
    folder = SETS["large-pool"]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "predictions.npy", matrix)
    np.save(folder / "oracle.npy", labels)
    accuracy = (matrix == labels[:, None]).mean(axis=0)
    print(json.dumps({"items": matrix.shape[0], "models": matrix.shape[1],
                      "best": round(float(accuracy.max()), 4),
                      "median": round(float(np.median(accuracy)), 4),
                      "worst": round(float(accuracy.min()), 4),
                      "seconds": round(time.perf_counter() - started, 1)}))  # fmt: skip


def at_target(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Labels and evaluations at identification 0.9, each interpolated at the first
    crossing as the label frontier does (both grow with gamma)."""
    return {
        "labels": crossing([(r["labels"], r["identified"]) for r in rows]),
        "evaluations": crossing([(r["evaluations"], r["identified"]) for r in rows]),
    }


def curve(
    pool: Pool, active: int | None, args: argparse.Namespace, stream_size: int
) -> list[dict[str, Any]]:
    rows = []
    for index, gamma in enumerate(args.gamma):
        rng = np.random.default_rng([7, index])
        outcome = run_modelpicker(pool, gamma, active, stream_size, args.runs, rng, None,
                                  args.delta)  # fmt: skip
        rows.append(summarise(outcome, "modelpicker", gamma, active).to_dict())
    return rows


def largest_drop(rows: list[dict[str, Any]]) -> float:
    """How far identification falls, at most, from one gamma to a larger one."""
    found = [r["identified"] for r in rows]
    return round(max([0.0] + [a - b for i, a in enumerate(found) for b in found[i + 1 :]]), 4)


def plot(report: dict[str, Any], path: Path) -> None:
    """Identification against labels and against model evaluations, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, (by_labels, by_evaluations) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, entry in report.items():
        if not isinstance(entry, dict):
            continue
        rows = entry["curve"]
        name = "every model" if mode == "all" else f"{mode} active"
        found = [r["identified"] for r in rows]
        by_labels.plot([r["labels"] for r in rows], found, marker="o", label=name)
        by_evaluations.plot([r["evaluations"] for r in rows], found, marker="o", label=name)
    by_labels.set_xlabel("mean labels per stream")
    by_evaluations.set_xlabel("mean model evaluations per stream")
    by_evaluations.set_xscale("log")
    by_evaluations.xaxis.set_minor_formatter(NullFormatter())
    for axes in (by_labels, by_evaluations):
        axes.set_ylabel("identification probability")
        axes.set_ylim(0, 1.02)
        axes.axhline(0.9, color="grey", linewidth=0.8, linestyle=":")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(f"{report['set']}: {report['models']} models, stream {report['stream_size']}, "
                    f"{report['runs']} realisations")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(args: argparse.Namespace) -> None:
    folder = SETS[args.set]
    pool = load_pool(folder / "predictions.npy", folder / "oracle.npy")
    stream_size = args.stream_size or pool.n_items
    report: dict[str, Any] = {"set": args.set, "models": pool.n_models,
                              "stream_size": stream_size, "runs": args.runs}  # fmt: skip
    full = None
    for active in [None, *args.active_models]:
        started = time.perf_counter()
        rows = curve(pool, active, args, stream_size)
        target = at_target(rows)
        mode = "all" if active is None else str(active)
        entry = {"curve": rows, "at_0.9": target, "largest_drop": largest_drop(rows),
                 "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        if active is None:
            full = target
        elif full is not None and full["labels"] and target["labels"]:
            entry["labels_ratio"] = round(target["labels"] / full["labels"], 3)
            entry["evaluations_ratio"] = round(target["evaluations"] / full["evaluations"], 3)
        report[mode] = entry
        print(json.dumps({"mode": mode, **{k: v for k, v in entry.items() if k != "curve"}}),
              flush=True)  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    if args.plot is not None:
        plot(report, args.plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="fit the 1,000 candidates and record their predictions")
    runner = commands.add_parser("run", help="labels and evaluations to identification 0.9")
    runner.add_argument("--set", choices=sorted(SETS), default="glue-rte")
    runner.add_argument("--stream-size", type=int)
    runner.add_argument("--runs", type=int, default=40)
    runner.add_argument("--gamma", type=float, nargs="+", default=[0.5, 1, 1.5, 2, 3, 4, 6, 8])
    runner.add_argument("--active-models", type=int, nargs="+", default=[DEFAULT_ACTIVE_MODELS])
    runner.add_argument("--delta", type=float, default=DEFAULT_DELTA,
                        help="the elimination's level (0: no elimination)")  # fmt: skip
    runner.add_argument("--json", type=Path)
    runner.add_argument("--plot", type=Path, help="identification vs labels and evaluations")
    args = parser.parse_args()
    if args.command == "run" and not args.delta:
        args.delta = None
    if args.command == "build":
        build()
    else:
        run(args)


if __name__ == "__main__":
    main()
