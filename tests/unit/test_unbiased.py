"""The importance-weighted loss is unbiased: E[L_i] = model i's mistakes on the stream.

q_t depends on the past, yet sum_t z_t [f_i != y_t] / q_t minus the true count is a
martingale with mean 0. Checked over 4,000 realisations with a 4-standard-error bound per
model; the unweighted count (what a 1/q-less update would give) fails the same check.
"""

import numpy as np

from picker import make_pool
from picker.replay import run_replay

RUNS = 4000


def test_importance_weighted_loss_is_unbiased() -> None:
    rng = np.random.default_rng(2024)
    truth = rng.integers(0, 3, size=150)
    accuracy = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = rng.random((150, 5)) < accuracy
    preds = np.where(correct, truth[:, None], (truth[:, None] + rng.integers(1, 3, (150, 5))) % 3)
    pool = make_pool(preds, truth)
    outcome = run_replay(pool, "modelpicker", 2.0, 150, RUNS, np.random.default_rng(5))
    assert 5 < outcome.labels.mean() < 140  # a real subsample, so 1/q matters
    error = outcome.losses - outcome.stream_errors
    standard_error = error.std(axis=0, ddof=1) / np.sqrt(RUNS)
    assert np.all(np.abs(error.mean(axis=0)) < 4 * standard_error)
    unweighted = run_replay(pool, "random", 40.0, 150, RUNS, np.random.default_rng(5))
    bias = unweighted.losses - unweighted.stream_errors
    bias_se = bias.std(axis=0, ddof=1) / np.sqrt(RUNS)
    assert np.all(np.abs(bias.mean(axis=0)) > 4 * bias_se)
