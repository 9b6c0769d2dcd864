"""Re-ranking a label queue after one label: 10,000 queued items over 100 models.

A synthetic pool with errors that models share, as real pools have: each model is right
with its own probability (0.55 to 0.75); when wrong, it picks the item's one decoy class
with probability 0.7, else a random other class. After 20 labels, each further label is
timed from `add_label` (the belief updated: EM over the whole queue, calibration,
per-pattern counts) through `choose` (every item re-scored, the next one picked). Model
Selector's re-rank of the same queue, whose belief is a count per model, is timed in the
same run as the baseline. Median of 15 labels.

    python benchmarks/rerank_speed.py                           # the synthetic pool
    python benchmarks/rerank_speed.py --pool tests/data/large-pool   # a recorded one

With `--pool`, the queue is a recorded pool's items (its predictions.npy and oracle.npy):
the 1,000-candidate pool's 5,000 items, say.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from picker.selectors import make_selector

ITEMS, MODELS, WARM, TIMED = 10_000, 100, 20, 15


def synthetic(n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    truth = rng.integers(0, n_classes, ITEMS)
    accuracy = np.linspace(0.55, 0.75, MODELS)
    right = rng.random((ITEMS, MODELS)) < accuracy
    decoy = (truth + rng.integers(1, n_classes, ITEMS)) % n_classes
    other = (truth[:, None] + rng.integers(1, n_classes, (ITEMS, MODELS))) % n_classes
    wrong = np.where(rng.random((ITEMS, MODELS)) < 0.7, decoy[:, None], other)
    return np.where(right, truth[:, None], wrong), truth


def median_rerank(
    method: str, predictions: np.ndarray, truth: np.ndarray, n_classes: int
) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    selector = make_selector(method, predictions, n_classes)
    built = time.perf_counter() - started
    for _ in range(WARM):
        item = selector.choose(rng)
        assert item is not None
        selector.add_label(item, int(truth[item]))
    seconds = []
    item = selector.choose(rng)
    for _ in range(TIMED):
        assert item is not None
        started = time.perf_counter()
        selector.add_label(item, int(truth[item]))
        item = selector.choose(rng)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), built


def recorded(folder: Path) -> None:
    predictions, truth = np.load(folder / "predictions.npy"), np.load(folder / "oracle.npy")
    n_classes = int(max(predictions.max(), truth.max())) + 1
    print(f"{folder}: {predictions.shape[0]} items x {predictions.shape[1]} models, "
          f"{n_classes} classes", flush=True)  # fmt: skip
    ours, built = median_rerank("pool-based", predictions.astype(np.int64), truth, n_classes)
    base, _ = median_rerank("model-selector", predictions.astype(np.int64), truth, n_classes)
    print(f"pool-based: one label, re-rank {ours * 1e3:.0f} ms; build the belief {built:.2f} s; "
          f"model-selector re-rank {base * 1e3:.1f} ms ({ours / base:.1f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, help="a recorded pool's folder")
    args = parser.parse_args()
    if args.pool is not None:
        recorded(args.pool)
        return
    print(
        "| classes | pool-based: one label, re-rank | pool-based: build the queue's belief "
        "| model-selector re-rank (baseline) | ratio |"
    )
    print("|---|---|---|---|---|")
    for n_classes in (2, 10):
        predictions, truth = synthetic(n_classes, np.random.default_rng(n_classes))
        ours, built = median_rerank("pool-based", predictions, truth, n_classes)
        base, _ = median_rerank("model-selector", predictions, truth, n_classes)
        print(
            f"| {n_classes} | {ours * 1e3:.0f} ms | {built:.2f} s | {base * 1e3:.1f} ms "
            f"| {ours / base:.1f}× |",
            flush=True,
        )


if __name__ == "__main__":
    main()
