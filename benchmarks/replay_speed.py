"""Replay speed: 500 realisations of a 10,000-item stream, 100 models, 1,000 classes.

Prints (1) the vectorised replay's wall time; (2) its speed-up over running realisations
one at a time, measured in this same process against two loops of the same formulas: the
replay engine itself called with runs=1, and a plain per-item loop over the tuned
single-item path (each loop is timed on a few runs and scaled per run, since all 500 would
take many minutes); (3) the cost of the query decision the service makes for a shadow
batch (`service.state.rules.observe_batch`: learning rates, posterior, q, coins, budget cap, and
the transaction to store), with k=100 and 1,000 classes, for a batch of one item and per
item in a batch of 16. Store I/O is not included.
"""

import argparse
import json
import time
import timeit
from collections.abc import Callable

import numpy as np

from picker import (
    PickerState,
    best_model,
    item_query_probability,
    learning_rate,
    loss_increments,
    make_pool,
    posterior,
)
from picker.replay import run_replay
from service.state import rules
from service.state.store.base import Retention


def synthetic_pool(n_items: int, n_models: int, n_classes: int, seed: int) -> object:
    """Models of accuracy 0.5..0.8 whose mistakes fall on random classes."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, size=n_items)
    accuracy = np.linspace(0.5, 0.8, n_models)
    right = rng.random((n_items, n_models)) < accuracy
    wrong = (truth[:, None] + rng.integers(1, n_classes, size=(n_items, n_models))) % n_classes
    return make_pool(np.where(right, truth[:, None], wrong), truth)


def one_run_loop(
    predictions: np.ndarray, oracle: np.ndarray, gamma: float, rng: np.random.Generator
) -> int:
    """The same formulas, one item of one realisation at a time."""
    k = predictions.shape[1]
    losses = np.zeros(k)
    for t, item in enumerate(rng.permutation(len(oracle)), start=1):
        eta = learning_rate(t, k)
        q = item_query_probability(predictions[item], posterior(losses, eta), gamma, eta)
        if q > 0 and rng.random() < q:
            losses += loss_increments(predictions[item], int(oracle[item]), q)
    return int(best_model(losses, rng))


def _decision_timer(predictions: np.ndarray, models: int, gamma: float) -> Callable[[int], float]:
    """µs per item of the service's decision (rules.observe_batch) for a batch size."""
    rng = np.random.default_rng(4)
    losses = tuple(float(x) for x in rng.exponential(5.0, size=models))
    current = rules.Selection(
        rules.Meta(tuple(f"m{i}" for i in range(models)), 0),
        rules.Tally(PickerState(losses, step=5000)),
    )

    def decision_us(batch_size: int) -> float:
        batch = rules.Batch([f"i{n}" for n in range(batch_size)], predictions[:batch_size],
                            np.zeros((batch_size, 64)))  # fmt: skip

        def decide() -> object:
            return rules.observe_batch("op", current, set(), batch, gamma, rng, 0.0, Retention())

        repeats = 2_000
        best = min(timeit.repeat(decide, number=repeats, repeat=5))
        return best / repeats / batch_size * 1e6

    return decision_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--loop-runs", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=5.0)
    args = parser.parse_args()
    pool = synthetic_pool(args.items, args.models, args.classes, seed=1)

    started = time.perf_counter()
    outcome = run_replay(
        pool, "modelpicker", args.gamma, args.items, args.runs, np.random.default_rng(2)
    )
    vectorised_s = time.perf_counter() - started

    started = time.perf_counter()
    for run in range(args.loop_runs):
        run_replay(pool, "modelpicker", args.gamma, args.items, 1, np.random.default_rng([3, run]))
    engine_per_run_s = (time.perf_counter() - started) / args.loop_runs

    started = time.perf_counter()
    for run in range(args.loop_runs):
        one_run_loop(pool.predictions, pool.oracle, args.gamma, np.random.default_rng([3, run]))
    loop_per_run_s = (time.perf_counter() - started) / args.loop_runs

    decision_us = _decision_timer(pool.predictions, args.models, args.gamma)
    engine_speedup = engine_per_run_s * args.runs / vectorised_s
    print(json.dumps({
        "runs": args.runs, "items": args.items, "models": args.models, "classes": args.classes,
        "mean_labels": round(float(outcome.labels.mean()), 1),
        "vectorised_s": round(vectorised_s, 2),
        "engine_one_run_s": round(engine_per_run_s, 3),
        "speedup_vs_engine_one_run_at_a_time": round(engine_speedup, 1),
        "item_loop_one_run_s": round(loop_per_run_s, 3),
        "speedup_vs_item_loop": round(loop_per_run_s * args.runs / vectorised_s, 1),
        "decision_us_batch_of_1": round(decision_us(1), 1),
        "decision_us_per_item_batch_of_16": round(decision_us(16), 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
