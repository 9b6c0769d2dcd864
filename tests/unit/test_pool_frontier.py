"""pool-based on the real benchmark pools: identification never falls by more than 0.05 as
the budget grows, at 6 budgets per set, and reaches 0.9 within ModelPicker's labels to 0.9.

Every budget is measured on the same realisations (one pass serves every budget), so a fall
is a realisation whose answer turned wrong, not sampling noise between budgets. The README's
table has the same check with 100 realisations per set (benchmarks/label_frontier.py); here
fewer realisations keep the suite fast. glue-rte's stream is its whole pool, so its
realisations differ only in tie-breaking.
"""

from pathlib import Path

import numpy as np
import pytest

from picker import load_pool
from picker.pool_replay import pool_replay

DATA = Path(__file__).resolve().parent.parent / "data" / "benchmarks"
# set: (stream size, realisations, six budgets; the last within ModelPicker's labels to 0.9)
CASES = {
    "emocontext": (1000, 16, [30, 50, 70, 90, 110, 140]),
    "gas-drift": (2500, 12, [20, 40, 60, 80, 120, 160]),
    "glue-rte": (277, 8, [10, 20, 30, 40, 60, 80]),
}


@pytest.mark.parametrize("name", CASES)
def test_pool_based_never_falls(name: str) -> None:
    size, runs, budgets = CASES[name]
    pool = load_pool(DATA / name / "predictions.npy", DATA / name / "oracle.npy")
    results = pool_replay(pool, "pool-based", budgets, size, runs, np.random.default_rng(7))
    identified = [r.identified for r in results]
    peak = np.maximum.accumulate(identified)
    assert float((peak - identified).max()) <= 0.05, identified
    assert identified[-1] >= 0.9, identified
