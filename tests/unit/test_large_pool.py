"""The large-pool mode (`picker.large_pool`): an active set evaluated on every item, the
whole pool on labeled items, every item's q floored at eta.

Every model's loss stays unbiased for its mistakes on every item seen, active or not
(q > 0 on every item and is decided before the coin), and the mode needs fewer model
evaluations than running every model on every item."""

import itertools

import numpy as np
import pytest

from picker import make_pool
from picker.elimination import Elimination, bet_sizes
from picker.large_pool import (
    ActiveReplay,
    active_query_probability,
    active_set,
    recall_order,
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
    weights = np.full((2, 3), 0.01)
    q = active_query_probability(agree, weights, 1.0, eta)
    assert q[0] == pytest.approx(eta) and q[1] > eta


def test_q_is_modelpickers_over_the_active_set_with_its_weights_renormalised() -> None:
    """The active models' weights are their share of the whole pool's posterior (summing
    to less than 1); q uses them renormalised, as if the active set were the pool."""
    rng = np.random.default_rng(3)
    predictions = rng.integers(0, 4, (200, 6))
    weights = rng.dirichlet(np.ones(6), size=200)
    eta = learning_rate(50, 40)
    ours = active_query_probability(predictions, 0.3 * weights, 1.5, eta)
    theirs = query_probability(predictions, weights, 1.5, eta)
    disagree = (predictions != predictions[:, :1]).any(axis=1)
    assert np.allclose(ours[disagree], theirs[disagree], rtol=1e-12, atol=0)
    assert np.all(ours[~disagree] == eta)


def test_evaluations_count_the_active_set_and_the_label_checks() -> None:
    pool = _pool(np.random.default_rng(1), 200, [0.9, 0.8, 0.7, 0.6, 0.5, 0.55, 0.65, 0.75])
    outcome = run_active_replay(pool, 2.0, 3, 200, 50, np.random.default_rng(2))
    assert np.array_equal(outcome.evaluations, 200 * 3 + outcome.labels * 5)
    assert outcome.evaluations.mean() < 200 * 8


@pytest.mark.parametrize(("delta", "least"), [(None, 0.97), (0.05, 0.95)])
def test_identification_goes_to_one_as_labels_grow(delta: float | None, least: float) -> None:
    """Consistency, with and without elimination: with a larger query scale the picker
    asks for more labels and, in the limit of every item labeled, returns the best model
    on the stream; identification never falls by more than 0.05 on the way."""
    pool = _pool(np.random.default_rng(11), 400, [0.8, 0.75, 0.7, 0.6, 0.5, 0.72, 0.66, 0.55])
    identified = []
    for gamma in (0.5, 2.0, 8.0, 64.0):
        outcome = run_active_replay(pool, gamma, 2, 400, 200, np.random.default_rng(4),
                                    delta=delta)  # fmt: skip
        best = outcome.stream_errors.min(axis=1)
        chosen = outcome.stream_errors[np.arange(200), outcome.returned]
        identified.append(float(np.mean(chosen == best)))
    assert identified[-1] >= least
    assert all(b >= a - 0.05 for a, b in itertools.pairwise(identified))


# --- elimination -------------------------------------------------------------------


def test_losses_stay_unbiased_when_stopped_at_each_models_elimination() -> None:
    """A model's L at its elimination (a stopping time) is unbiased for its mistakes on
    the items seen up to then; the models never eliminated, for all of the stream."""
    pool = _pool(np.random.default_rng(2024), 150, [0.9, 0.85, 0.5, 0.4, 0.35, 0.3])
    walk = ActiveReplay(pool, 2.0, 2, RUNS, np.random.default_rng(5), 0.3, None)
    outcome = walk.walk(150, None)
    assert walk.elimination is not None
    left_at = walk.elimination.eliminated_at
    assert (left_at >= 0).mean(axis=0)[2:].min() > 0.2  # the weak models do leave, often
    estimate = np.where(left_at >= 0, walk.elimination.loss_at_exit, outcome.losses)
    seen = np.cumsum(pool.errors()[walk.streams], axis=1)  # (runs, position, model)
    until = np.where(left_at >= 0, left_at, 149)
    mistakes = np.take_along_axis(seen, until[:, None, :], axis=1)[:, 0, :]
    error = estimate - mistakes
    standard_error = error.std(axis=0, ddof=1) / np.sqrt(RUNS)
    assert np.all(np.abs(error.mean(axis=0)) < 4 * standard_error)


def test_the_best_model_leaves_the_round_at_most_delta_of_the_time() -> None:
    """Ville's inequality: on a near-i.i.d. stream (2,000 of 40,000 items) where the runner-up
    is only 2 points behind, the best model is eliminated in at most delta of the
    realisations, while the clearly worse ones leave in most of them."""
    delta = 0.1
    pool = _pool(np.random.default_rng(8), 40_000, [0.8, 0.78, 0.76, 0.6, 0.55, 0.5, 0.45, 0.4])
    walk = ActiveReplay(pool, 1.0, 3, 400, np.random.default_rng(9), delta, None)
    outcome = walk.walk(2000, None)
    assert walk.elimination is not None
    left = walk.elimination.eliminated_at >= 0
    assert left[:, 0].mean() <= delta
    assert left[:, 3:].mean(axis=0).min() > 0.8
    # the returned model is always one still in the round
    assert not left[np.arange(400), outcome.returned].any()


def test_an_eliminated_model_is_never_active_again() -> None:
    losses = np.array([[0.0, np.inf, 1.0, np.inf, 2.0, 3.0]])
    for _ in range(20):
        order = np.random.default_rng(_).random((1, 6))
        assert set(active_set(losses, 3, order)[0]) == {0, 2, 4}


def test_evaluations_shrink_with_the_round() -> None:
    """The label checks run only the models still in the round: with elimination the
    same pool needs fewer evaluations than without, at the same labels' order."""
    pool = _pool(np.random.default_rng(3), 3000, [0.85, 0.8] + [0.3] * 30)
    kept = run_active_replay(pool, 2.0, 4, 3000, 20, np.random.default_rng(1), delta=None)
    cut = run_active_replay(pool, 2.0, 4, 3000, 20, np.random.default_rng(1), delta=0.05)
    assert np.all(np.isfinite(kept.losses))
    assert np.isinf(cut.losses).mean() > 0.5
    assert cut.evaluations.mean() < 0.5 * kept.evaluations.mean()


def test_bets_are_predictable_sizes_that_keep_the_wealth_positive() -> None:
    drift = np.array([[-3.0, 0.0, 2.0, 50.0]])
    spread = np.array([[9.0, 0.0, 80.0, 60.0]])
    bets = bet_sizes(drift, spread, 100, 0.1)
    assert bets[0, 0] == 0.0 and bets[0, 1] == 0.0  # no evidence of being behind: no bet
    assert 0.0 < bets[0, 2] < 0.05 == bets[0, 3]  # the cap eta / 2 binds only on the last
    assert np.all(1.0 + bets * (-1.0 / 0.1) >= 0.5)


def test_elimination_needs_a_level_in_zero_one() -> None:
    for delta in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="delta"):
            Elimination(1, 3, delta)


# --- recall --------------------------------------------------------------------------


def test_the_first_active_set_is_recalled_by_the_prior() -> None:
    prior = np.array([0.5, 0.9, 0.1, 0.9, 0.7, 0.2])
    order = recall_order(prior, 6, 200, np.random.default_rng(0))
    first = active_set(np.zeros((200, 6)), 3, order)
    assert all(set(row) == {1, 3, 4} for row in first)
    two = active_set(np.zeros((200, 6)), 2, order)
    assert all(set(row) == {1, 3} for row in two)
    # equal scores (and no prior at all) come in random order
    ties = active_set(np.zeros((200, 6)), 1 + 1, recall_order(np.zeros(6), 6, 200,
                      np.random.default_rng(1)))  # fmt: skip
    assert len({tuple(sorted(row)) for row in ties}) > 5
    with pytest.raises(ValueError, match="one finite score per model"):
        recall_order(np.array([0.1, np.nan]), 2, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="one finite score per model"):
        recall_order(np.zeros(3), 2, 1, np.random.default_rng(0))


def test_a_recalled_model_loses_its_place_when_its_labels_say_so() -> None:
    """A misleading prior (the worst models recalled first) does not hold the active set:
    it follows the losses as labels arrive, and the best model is found as often as with
    the right prior."""
    accuracy = np.array([0.85, 0.83] + [0.6] * 18 + [0.3, 0.3])
    pool = _pool(np.random.default_rng(21), 2000, list(accuracy))
    found = []
    for prior in (accuracy, -accuracy):
        walk = ActiveReplay(pool, 2.0, 2, 100, np.random.default_rng(6), 0.05, prior)
        outcome = walk.walk(2000, None)
        assert all(set(row) == ({0, 1} if prior[0] > 0 else {20, 21})
                   for row in active_set(np.zeros((100, 22)), 2, walk.order))  # fmt: skip
        best = outcome.stream_errors.min(axis=1)
        found.append(
            float(np.mean(outcome.stream_errors[np.arange(100), outcome.returned] == best))
        )
    assert min(found) >= 0.9 and abs(found[0] - found[1]) <= 0.05
