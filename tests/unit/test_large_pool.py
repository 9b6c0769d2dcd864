"""The large-pool mode (`picker.large_pool`): an active set evaluated on every item, the
whole pool on labeled items, every item's q floored at eta.

Every model's loss stays unbiased for its mistakes on every item seen, active or not
(q > 0 on every item and is decided before the coin), and the mode needs fewer model
evaluations than running every model on every item."""

import itertools

import numpy as np
import pytest

from picker import make_pool
from picker.large_pool import (
    active_query_probability,
    active_set,
    run_active_replay,
)
from picker.modelpicker import learning_rate, query_probability
from picker.replay import run_replay

RUNS = 4000


def _pool(rng: np.random.Generator, items: int, accuracy: list[float]) -> object:
    truth = rng.integers(0, 3, size=items)
    correct = rng.random((items, len(accuracy))) < np.asarray(accuracy)
    wrong = (truth[:, None] + rng.integers(1, 3, (items, len(accuracy)))) % 3
    return make_pool(np.where(correct, truth[:, None], wrong), truth)


def test_every_models_loss_is_unbiased_active_or_not() -> None:
    pool = _pool(np.random.default_rng(2024), 150, [0.9, 0.8, 0.7, 0.6, 0.5, 0.85, 0.75, 0.65])
    outcome = run_active_replay(pool, 2.0, 2, 150, RUNS, np.random.default_rng(5))
    assert 5 < outcome.labels.mean() < 140  # a real subsample, so 1/q matters
    error = outcome.losses - outcome.stream_errors
    standard_error = error.std(axis=0, ddof=1) / np.sqrt(RUNS)
    assert np.all(np.abs(error.mean(axis=0)) < 4 * standard_error)


def test_the_floor_is_what_keeps_the_models_outside_the_active_set_unbiased() -> None:
    """Items on which every model agrees get q = eta here and q = 0 in full ModelPicker:
    on a pool where all models make one shared mistake on such items, full ModelPicker's
    losses miss it and the large-pool mode's do not."""
    rng = np.random.default_rng(7)
    pool = _pool(rng, 120, [0.9, 0.7, 0.6, 0.8])
    predictions, truth = pool.predictions.copy(), pool.oracle.copy()
    predictions[:20] = (truth[:20, None] + 1) % 3  # all four wrong, all agreeing
    shared = make_pool(predictions, truth)
    full = run_replay(shared, "modelpicker", 2.0, 120, RUNS, np.random.default_rng(3))
    active = run_active_replay(shared, 2.0, 2, 120, RUNS, np.random.default_rng(3))
    for outcome, unbiased in ((full, False), (active, True)):
        error = outcome.losses - outcome.stream_errors
        standard_error = error.std(axis=0, ddof=1) / np.sqrt(RUNS)
        assert bool(np.all(np.abs(error.mean(axis=0)) < 4 * standard_error)) is unbiased


def test_the_active_set_is_the_lowest_losses_with_ties_by_the_order() -> None:
    losses = np.array([[3.0, 0.0, 2.0, 0.0, 5.0]])
    order = np.array([[0.1, 0.9, 0.2, 0.3, 0.0]])
    assert set(active_set(losses, 2, order)[0]) == {1, 3}
    assert set(active_set(losses, 3, order)[0]) == {1, 2, 3}
    assert set(active_set(np.zeros((1, 5)), 2, order)[0]) == {4, 0}  # ties: the order decides
    assert sorted(active_set(losses, 5, order)[0]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="2 to 5"):
        active_set(losses, 1, order)
    with pytest.raises(ValueError, match="2 to 5"):
        active_set(losses, 6, order)


def test_q_is_floored_at_eta_also_where_the_active_models_agree() -> None:
    eta = learning_rate(400, 1000)
    agree = np.array([[1, 1, 1], [0, 2, 2]])
    weights = np.full((2, 3), 1 / 3)
    q = active_query_probability(agree, weights, np.zeros(2), 1.0, eta)
    assert q[0] == pytest.approx(eta) and q[1] > eta


def test_with_no_mass_outside_q_is_modelpickers_over_the_active_set() -> None:
    rng = np.random.default_rng(3)
    predictions = rng.integers(0, 4, (200, 6))
    weights = rng.dirichlet(np.ones(6), size=200)
    eta = learning_rate(50, 40)
    ours = active_query_probability(predictions, weights, np.zeros(200), 1.5, eta)
    theirs = query_probability(predictions, weights, 1.5, eta)
    disagree = (predictions != predictions[:, :1]).any(axis=1)
    assert np.allclose(ours[disagree], theirs[disagree], rtol=1e-12, atol=0)


def test_mass_outside_is_counted_as_if_it_disagreed() -> None:
    """Active models agree, and 30 % of the posterior lies outside: those models might all
    predict another class, so v = 0.3 × 0.7 and q = gamma v."""
    agree = np.array([[2, 2, 2]])
    q = active_query_probability(agree, np.full((1, 3), 0.7 / 3), np.array([0.3]), 1.0, 0.01)
    assert q[0] == pytest.approx(0.21)


def test_evaluations_count_the_active_set_and_the_label_checks() -> None:
    pool = _pool(np.random.default_rng(1), 200, [0.9, 0.8, 0.7, 0.6, 0.5, 0.55, 0.65, 0.75])
    outcome = run_active_replay(pool, 2.0, 3, 200, 50, np.random.default_rng(2))
    assert np.array_equal(outcome.evaluations, 200 * 3 + outcome.labels * 5)
    assert outcome.evaluations.mean() < 200 * 8


def test_identification_goes_to_one_as_labels_grow() -> None:
    """Consistency: with a larger query scale the picker asks for more labels and, in the
    limit of every item labeled, returns the best model on the stream."""
    pool = _pool(np.random.default_rng(11), 400, [0.8, 0.75, 0.7, 0.6, 0.5, 0.72, 0.66, 0.55])
    identified = []
    for gamma in (0.5, 2.0, 8.0, 64.0):
        outcome = run_active_replay(pool, gamma, 2, 400, 200, np.random.default_rng(4))
        best = outcome.stream_errors.min(axis=1)
        chosen = outcome.stream_errors[np.arange(200), outcome.returned]
        identified.append(float(np.mean(chosen == best)))
    assert identified[-1] >= 0.97
    assert all(b >= a - 0.05 for a, b in itertools.pairwise(identified))
