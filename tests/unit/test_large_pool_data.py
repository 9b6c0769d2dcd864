"""The recorded 1,000-candidate pool (tests/data/large-pool) is what its builder makes:
one candidate of each family, rebuilt from its recipe alone, predicts exactly the
recorded column, and the pool is a real large pool (many families, a spread of accuracy)."""

from pathlib import Path

import numpy as np

from service.models.large_pool import FAMILIES, N_CANDIDATES, N_STREAM, predictions, recipe

DATA = Path(__file__).resolve().parents[1] / "data" / "large-pool"


def test_each_family_rebuilt_alone_predicts_its_recorded_column() -> None:
    recorded = np.load(DATA / "predictions.npy")
    oracle = np.load(DATA / "oracle.npy")
    assert recorded.shape == (N_STREAM, N_CANDIDATES)
    picked = [1000 - len(FAMILIES) + i for i in range(len(FAMILIES))]  # the last of each
    rebuilt, labels = predictions(picked)
    assert np.array_equal(labels, oracle)
    assert np.array_equal(rebuilt, recorded[:, picked])
    assert {recipe(i).family for i in picked} == set(FAMILIES)


def test_the_pool_spreads_from_chance_to_good() -> None:
    recorded = np.load(DATA / "predictions.npy").astype(np.int64)
    accuracy = (recorded == np.load(DATA / "oracle.npy")[:, None]).mean(axis=0)
    assert accuracy.max() > 0.7 and accuracy.min() < 0.3  # chance is 0.2 (5 classes)
    top = np.sort(accuracy)[-20:]
    assert top[-1] - top[0] < 0.1  # the leaders are close: selection is not trivial
