"""Property tests of the picker (STYLE.md): invariants over generated inputs."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from picker import (
    PickerConfig,
    PickerState,
    apply_increments,
    decide,
    initial_state,
    item_query_probability,
    learning_rate,
    loss_increments,
    make_pool,
    posterior,
    query_probability,
)
from picker.replay import run_replay

n_models = st.integers(min_value=2, max_value=30)


@st.composite
def item_and_losses(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    k = draw(n_models)
    preds = draw(arrays(np.int64, k, elements=st.integers(0, 1500)))
    losses = draw(arrays(np.float64, k, elements=st.floats(0, 1e4)))
    step = draw(st.integers(1, 10**6))
    return preds, losses, learning_rate(step, k)


@given(item_and_losses())
def test_weights_are_a_distribution(case: tuple[np.ndarray, np.ndarray, float]) -> None:
    _, losses, eta = case
    weights = posterior(losses, eta)
    assert np.all(weights >= 0)
    assert abs(weights.sum() - 1.0) < 1e-12


@given(item_and_losses(), st.floats(1e-3, 1e3))
def test_q_is_a_probability(case: tuple[np.ndarray, np.ndarray, float], gamma: float) -> None:
    preds, losses, eta = case
    q = float(query_probability(preds, posterior(losses, eta), gamma, eta))
    assert 0.0 <= q <= 1.0
    if q > 0:
        assert q >= min(1.0, eta)


@given(item_and_losses(), st.integers(0, 1500), st.floats(1e-3, 1e3))
def test_q_is_zero_when_models_agree(
    case: tuple[np.ndarray, np.ndarray, float], cls: int, gamma: float
) -> None:
    preds, losses, eta = case
    agreeing = np.full_like(preds, cls)
    assert query_probability(agreeing, posterior(losses, eta), gamma, eta) == 0.0


@given(item_and_losses(), st.floats(1e-3, 1e3), st.randoms(use_true_random=False))
def test_permuting_models_permutes_the_result(
    case: tuple[np.ndarray, np.ndarray, float], gamma: float, random
) -> None:
    preds, losses, eta = case
    perm = np.array(random.sample(range(len(preds)), len(preds)))
    weights = posterior(losses, eta)
    np.testing.assert_allclose(posterior(losses[perm], eta), weights[perm], rtol=1e-12, atol=1e-300)
    q = query_probability(preds, weights, gamma, eta)
    q_perm = query_probability(preds[perm], weights[perm], gamma, eta)
    np.testing.assert_allclose(q_perm, q, rtol=1e-12)
    label = int(preds[0])
    np.testing.assert_array_equal(
        loss_increments(preds[perm], label, 0.5), loss_increments(preds, label, 0.5)[perm]
    )


@given(
    st.lists(st.floats(0, 1e6), min_size=2, max_size=40),
    st.integers(0, 10**9),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 100),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_state_survives_a_json_round_trip(
    losses, step, queries, labels, round_number, budget
) -> None:
    state = PickerState(tuple(losses), step, queries, labels, round_number, budget)
    assert PickerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@settings(max_examples=50)
@given(st.integers(2, 10), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_incremental_update_equals_batch_formula(k: int, n_labels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    preds = rng.integers(0, 4, size=(n_labels, k))
    labels = rng.integers(0, 4, size=n_labels)
    qs = rng.uniform(0.05, 1.0, size=n_labels)
    state = initial_state(k)
    for p, y, q in zip(preds, labels, qs, strict=True):
        state = apply_increments(state, loss_increments(p, int(y), float(q)))
    batch = ((preds != labels[:, None]) / qs[:, None]).sum(axis=0)
    np.testing.assert_allclose(state.loss_array, batch, rtol=1e-12)
    assert state.labels == n_labels


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_same_seed_gives_the_same_run(seed: int) -> None:
    rng = np.random.default_rng(99)
    pool = make_pool(rng.integers(0, 3, size=(60, 4)), rng.integers(0, 3, size=60))
    first = run_replay(pool, "modelpicker", 3.0, 50, 8, np.random.default_rng(seed))
    second = run_replay(pool, "modelpicker", 3.0, 50, 8, np.random.default_rng(seed))
    np.testing.assert_array_equal(first.losses, second.losses)
    np.testing.assert_array_equal(first.returned, second.returned)
    state_a, dec_a = decide(
        initial_state(4),
        PickerConfig(gamma=2.0),
        pool.predictions[:20],
        np.random.default_rng(seed),
    )
    state_b, dec_b = decide(
        initial_state(4),
        PickerConfig(gamma=2.0),
        pool.predictions[:20],
        np.random.default_rng(seed),
    )
    assert state_a == state_b
    np.testing.assert_array_equal(dec_a.query, dec_b.query)


@given(item_and_losses(), st.floats(1e-3, 1e3))
def test_single_item_path_equals_batch_form(
    case: tuple[np.ndarray, np.ndarray, float], gamma: float
) -> None:
    preds, losses, eta = case
    weights = posterior(losses, eta)
    single = item_query_probability(preds, weights, gamma, eta)
    batch = float(query_probability(preds[None, :], weights, gamma, eta)[0])
    assert (single == 0.0) == (batch == 0.0)
    assert single == pytest.approx(batch, rel=1e-9)


def test_single_item_path_handles_huge_class_ids() -> None:
    weights = np.array([0.5, 0.25, 0.25])
    assert item_query_probability(np.array([10**9, 5, 5]), weights, 2.0, 0.1) == pytest.approx(0.5)
