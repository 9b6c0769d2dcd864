"""Each rule that used to be written in several places is now one function; these are its
own tests, and the places that call it are checked to give what they gave before."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from picker import initial_state, loss_increments
from picker.modelpicker import best_model, importance_weighted
from picker.pool_based import MIN_LABELS_FOR_TEMPERATURE, PoolBased
from service.models.loaders import predicted_classes
from service.models.pool_file import NO_CLASS
from service.state.rules.candidates import backfilled_loss
from service.state.rules.labels import pool_lease_limit
from service.state.rules.swaps import change_record


def test_the_importance_weighted_loss_is_mistakes_over_q_for_one_label_or_many() -> None:
    assert importance_weighted([True, False, True], 0.25).tolist() == [4.0, 0.0, 4.0]
    rows = importance_weighted(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([0.5, 0.1]))
    assert rows.tolist() == [[2.0, 0.0], [10.0, 10.0]]
    assert loss_increments([0, 1, 2], 1, 0.5).tolist() == [2.0, 0.0, 2.0]
    for bad in (0.0, -0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="q must be in"):
            importance_weighted([True], bad)
    with pytest.raises(ValueError, match="q must be in"):
        importance_weighted(np.ones((2, 2)), np.array([0.5, 0.0]))


def test_a_backfilled_loss_is_the_sum_the_store_made_label_by_label() -> None:
    rng = np.random.default_rng(3)
    labeled = [
        {"label": int(rng.integers(3)), "q": float(rng.uniform(0.01, 1))} for _ in range(200)
    ]
    predictions = rng.integers(0, 3, 200).tolist()
    applied = 0.0  # what apply_label does for each candidate, one label at a time
    for entry, predicted in zip(labeled, predictions, strict=True):
        applied += float(loss_increments([predicted], entry["label"], entry["q"])[0])
    assert backfilled_loss(labeled, predictions) == applied  # to the last bit
    by_hand = sum(
        float(p != e["label"]) / e["q"] for e, p in zip(labeled, predictions, strict=True)
    )
    assert backfilled_loss(labeled, predictions) == pytest.approx(by_hand, rel=1e-12)


def test_the_best_model_is_the_first_tied_one_without_a_generator_and_any_with_one() -> None:
    losses = np.array([2.0, 1.0, 1.0, 3.0, 1.0])
    assert int(best_model(losses)) == 1
    rng = np.random.default_rng(0)
    picks = Counter(int(best_model(losses, rng)) for _ in range(3000))
    assert set(picks) == {1, 2, 4} and min(picks.values()) > 800
    runs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    assert best_model(runs).tolist() == [1, 0]


def test_a_predicted_class_is_the_most_probable_or_none_when_not_finite() -> None:
    probabilities = np.array([[0.1, 0.9], [np.nan, 0.5], [0.7, 0.3], [np.inf, 0.0]])
    assert predicted_classes(probabilities).tolist() == [1, NO_CLASS, 0, NO_CLASS]
    assert predicted_classes(probabilities, no_class=-7).tolist() == [1, -7, 0, -7]
    assert predicted_classes(np.zeros((0, 3))).tolist() == []


def test_the_pool_based_lease_budget_counts_labels_and_items_held() -> None:
    free = initial_state(3)
    assert pool_lease_limit(free, 10, held=99) == 10  # no budget: the labeler's limit
    state = initial_state(3, budget=20)
    assert pool_lease_limit(state, 10, held=0) == 10
    assert pool_lease_limit(state, 10, held=15) == 5
    assert pool_lease_limit(state, 10, held=25) == 0
    from dataclasses import replace

    assert pool_lease_limit(replace(state, labels=18), 10, held=1) == 1


def test_every_swap_log_entry_has_one_shape() -> None:
    picker = initial_state(2)
    record = change_record("candidate_added", "c", "c", picker, 5.0, reason="r")
    assert record == {"time": 5.0, "kind": "candidate_added", "from_model": "c",
                      "to_model": "c", "labels": 0, "round": picker.round,
                      "trigger_item": None, "reason": "r"}  # fmt: skip


def pool(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, 60)
    columns = [np.where(rng.random(60) < a, truth, (truth + 1) % 3) for a in (0.6, 0.7, 0.8)]
    return np.stack(columns, axis=1), truth


def test_the_pool_based_posterior_is_uniform_until_calibrated_then_p_best() -> None:
    predictions, truth = pool(1)
    selector = PoolBased(predictions, 3)
    for item in range(MIN_LABELS_FOR_TEMPERATURE - 1):
        selector.add_label(item, int(truth[item]))
        assert selector.posterior(np.random.default_rng(0)).tolist() == [1 / 3] * 3
    selector.add_label(MIN_LABELS_FOR_TEMPERATURE, int(truth[MIN_LABELS_FOR_TEMPERATURE]))
    posterior = selector.posterior(np.random.default_rng(0))
    assert posterior.tolist() == selector.p_best(np.random.default_rng(0)).tolist()
    assert posterior.sum() == pytest.approx(1.0) and posterior.max() > 1 / 3


def test_the_ranking_holds_the_open_items_best_first_and_its_head_is_choose() -> None:
    predictions, truth = pool(2)
    selector = PoolBased(predictions, 3)
    for item in range(6):
        selector.add_label(item, int(truth[item]))
    ranking = selector.ranking(np.random.default_rng(0))
    disagree = (predictions != predictions[:, :1]).any(axis=1)
    open_items = set(np.flatnonzero(disagree)) - set(range(6))
    assert sorted(ranking.tolist()) == sorted(open_items)
    scores = selector.item_scores()[ranking]
    assert (np.diff(scores) <= 0).all()
    heads = Counter(int(selector.ranking(np.random.default_rng(s))[0]) for s in range(400))
    chosen = Counter(selector.choose(np.random.default_rng(s)) for s in range(400))
    assert set(heads) == set(chosen)
