"""Reproduce the reference figures of tests/data/benchmarks/README.md (300 realisations).

For every reference point: ModelPicker's gamma is calibrated to the reference label count
(100 realisations, another seed), then both methods are replayed over 300 fresh
realisations. Prints a Markdown table: ours beside the reference.
"""

import argparse
import json
import time
from pathlib import Path

from picker import load_pool
from picker.calibrate import replay_at_labels

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "benchmarks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reference = json.loads((DATA / "reference.json").read_text())
    print("| data | method | reference labels → ident. | ours: labels → ident. (gap, points) |")
    print("|---|---|---|---|")
    started = time.perf_counter()
    for name, spec in reference.items():
        if name.startswith("_"):
            continue
        pool = load_pool(DATA / name / "predictions.npy", DATA / name / "oracle.npy")
        for method in ("modelpicker", "random"):
            for labels, identified in spec[method]:
                ours = replay_at_labels(
                    pool, method, labels, spec["stream_size"], args.runs, args.seed
                )
                print(
                    f"| {name} | {method} | {labels} → {identified:.2f} | "
                    f"{ours.labels:.0f} → {ours.identified:.2f} ({ours.gap:.2f}) |",
                    flush=True,
                )
    print(f"\n{args.runs} realisations per point, {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
