"""The picker's state transitions, live decisions, budget and switching rule."""

import numpy as np
import pytest

from picker import (
    PickerConfig,
    PickerState,
    apply_increments,
    decide,
    initial_state,
    loss_increments,
    served_model,
    start_round,
)


def test_initial_state_is_uniform() -> None:
    state = initial_state(4, budget=10)
    np.testing.assert_allclose(state.weights(), 0.25)
    assert state.queries_left == 10


def test_state_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        PickerState(losses=(0.0,))
    with pytest.raises(ValueError):
        PickerState(losses=(0.0, -1.0))
    with pytest.raises(ValueError):
        PickerState(losses=(0.0, 0.0), step=-1)
    with pytest.raises(ValueError):
        PickerState.from_dict({"version": 99, "losses": [0, 0]})


def test_decide_advances_step_and_counts_queries() -> None:
    preds = np.array([[0, 1, 1], [2, 2, 2], [0, 0, 1]])
    state, decisions = decide(
        initial_state(3), PickerConfig(gamma=5.0), preds, np.random.default_rng(1)
    )
    assert state.step == 3
    np.testing.assert_array_equal(decisions.steps, [1, 2, 3])
    assert decisions.q[1] == 0.0  # agreement
    assert decisions.q[0] == 1.0  # eta_1 = sqrt(ln 3 / 2) > 0.7, v = 2/9, gamma v > 1
    assert state.queries == int(decisions.query.sum())


def test_budget_caps_queries_in_order() -> None:
    preds = np.tile([0, 1], (50, 1))
    state, decisions = decide(
        initial_state(2, budget=3), PickerConfig(gamma=100.0), preds, np.random.default_rng(0)
    )
    assert decisions.query.sum() == 3
    assert np.all(decisions.query[:3])
    assert state.queries_left == 0
    _, later = decide(state, PickerConfig(gamma=100.0), preds, np.random.default_rng(0))
    assert not later.query.any()


def test_decide_rejects_wrong_model_count() -> None:
    with pytest.raises(ValueError):
        decide(
            initial_state(3), PickerConfig(), np.zeros((1, 4), dtype=int), np.random.default_rng(0)
        )


def test_config_validation() -> None:
    for bad in ({"gamma": 0.0}, {"gamma": float("nan")}, {"budget": -1}, {"switch_margin": 1.0}):
        with pytest.raises(ValueError):
            PickerConfig(**bad)  # type: ignore[arg-type]


def test_delayed_labels_apply_in_any_order() -> None:
    labels = [([0, 1, 1], 1, 0.5), ([1, 1, 0], 0, 0.25), ([2, 0, 0], 2, 1.0)]
    forward = initial_state(3)
    for preds, y, q in labels:
        forward = apply_increments(forward, loss_increments(preds, y, q))
    backward = initial_state(3)
    for preds, y, q in reversed(labels):
        backward = apply_increments(backward, loss_increments(preds, y, q))
    assert forward == backward
    assert forward.losses == (6.0, 5.0, 1.0)  # [2,0,0] + [4,4,0] + [0,1,1]


def test_new_round_resets_losses_and_step() -> None:
    state = apply_increments(PickerState((0.0, 0.0), step=40, queries=3, labels=3), (2.0, 0.0))
    fresh = start_round(state, budget=7)
    assert fresh == PickerState((0.0, 0.0), round=1, budget=7)


def test_served_model_follows_best_with_margin() -> None:
    assert served_model(np.array([0.2, 0.8]), None) == 1
    assert served_model(np.array([0.5, 0.5]), 0) == 0  # a tie never swaps
    assert served_model(np.array([0.45, 0.55]), 0, margin=0.2) == 0
    assert served_model(np.array([0.35, 0.65]), 0, margin=0.2) == 1
