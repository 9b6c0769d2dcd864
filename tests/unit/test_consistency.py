"""Consistency on a synthetic pool with known accuracies, and what is unbiased.

Four models with independent errors at accuracies 0.60, 0.64, 0.68, 0.72. As labels grow, the
probability of returning the most accurate model must go to 1, for pool-based (budgets up
to every disagreement item) and for ModelPicker (gamma up to labeling every disagreement).

Unbiased: ModelPicker's importance-weighted loss (tests/unit/test_unbiased.py). pool-based's
accuracy estimate is model-based, so not unbiased at a small budget; what is unbiased in it
is the sampling within a prediction pattern: its choice depends on an item only through the
models' predictions, so among items with the same predictions it picks uniformly at random,
and each pattern's labeled items are a simple random sample of it (checked below). The
pattern-level label counts that update the belief are then unbiased for the pattern's class
frequencies, and the estimate is exact once the disagreement items are labeled.
"""

import numpy as np

from picker import make_pool
from picker.pool_based import PoolBased
from picker.pool_replay import pool_replay
from picker.replay import replay

ACCURACIES = np.array([0.60, 0.64, 0.68, 0.72])


def synthetic_pool(n: int = 800, n_classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n)
    right = rng.random((n, ACCURACIES.size)) < ACCURACIES
    wrong = (truth[:, None] + rng.integers(1, n_classes, (n, ACCURACIES.size))) % n_classes
    return make_pool(np.where(right, truth[:, None], wrong), truth)


def test_pool_based_identification_goes_to_one() -> None:
    pool = synthetic_pool()
    results = pool_replay(pool, "pool-based", [2, 150, 300], 300, 20, np.random.default_rng(1))
    identified = [r.identified for r in results]
    assert results[-1].labels < 300  # it stopped: every disagreement item was labeled
    assert identified[0] < 0.9 <= identified[1]
    assert identified[2] == 1.0


def test_modelpicker_identification_goes_to_one() -> None:
    pool = synthetic_pool()
    identified = [
        replay(pool, "modelpicker", gamma, 400, 60, np.random.default_rng([2, i])).identified
        for i, gamma in enumerate([0.05, 1.0, 1e4])
    ]
    assert identified[0] < 0.9
    assert identified[-1] >= 0.98
    assert identified[-1] > identified[0]


def test_pool_based_samples_uniformly_within_a_pattern() -> None:
    # Items 0..5 share one prediction pattern; the others are distinct. Whichever of the six
    # is labeled first must be uniform over them, whatever their true classes.
    predictions = np.array([[0, 1, 1]] * 6 + [[1, 0, 1], [2, 2, 0], [0, 2, 1], [1, 1, 0]])
    counts = np.zeros(6)
    rng = np.random.default_rng(3)
    runs = 1200
    for _ in range(runs):
        selector = PoolBased(predictions, 3)
        while True:
            item = selector.choose(rng)
            assert item is not None
            if item < 6:
                counts[item] += 1
                break
            selector.add_label(item, 0)
    expected = runs / 6
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # the 0.999 quantile of chi-square with 5 degrees of freedom
