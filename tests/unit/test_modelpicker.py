"""ModelPicker's formulas on tiny inputs, against a direct transcription of ALGORITHM.md."""

import math

import numpy as np
import pytest

from picker import (
    best_model,
    compact_classes,
    disagreement_variance,
    learning_rate,
    loss_increments,
    posterior,
    query_probability,
)


def naive_query_probability(
    preds: list[int], weights: np.ndarray, gamma: float, eta: float
) -> float:
    """A loop over every class, exactly as the formula reads."""
    if len(set(preds)) == 1:
        return 0.0
    mistakes_if = {
        c: sum(w for p, w in zip(preds, weights, strict=True) if p != c)
        for c in range(max(preds) + 2)
    }
    v = max(lbar * (1 - lbar) for lbar in mistakes_if.values())
    q = min(1.0, gamma * v)
    return min(1.0, max(q, eta)) if q > 0 else 0.0


def test_learning_rate_is_computed_afresh_from_t() -> None:
    for t in (1, 2, 10, 1000):
        assert learning_rate(t, 8) == pytest.approx(math.sqrt(math.log(8) / (2 * t)), rel=1e-15)


def test_learning_rate_rejects_step_zero_and_one_model() -> None:
    with pytest.raises(ValueError):
        learning_rate(0, 4)
    with pytest.raises(ValueError):
        learning_rate(1, 1)


def test_cumulative_eta_mistake_is_caught() -> None:
    """The known wrong re-implementation divides eta by sqrt(t) at every step.

    Its eta after 50 steps is ~1e-32 times ours; with it, 40 labels that show model 2 right
    and every other model wrong leave the posterior uniform, so argmax returns model 0.
    """
    k = 4
    cumulative = math.sqrt(math.log(k) / 2)
    for t in range(1, 51):
        cumulative /= math.sqrt(t)
    correct = learning_rate(50, k)
    assert correct > 1e20 * cumulative
    losses = np.array([40.0, 40.0, 0.0, 40.0])
    assert np.argmax(posterior(losses, cumulative)) == 0
    assert np.argmax(posterior(losses, correct)) == 2
    assert posterior(losses, correct)[2] > 0.95


def test_posterior_golden_values() -> None:
    weights = posterior(np.array([0.0, 1.0, 2.0]), math.log(2))
    np.testing.assert_allclose(weights, np.array([4, 2, 1]) / 7, rtol=1e-15)


def test_posterior_underflows_to_exact_zero() -> None:
    weights = posterior(np.array([0.0, 1e6]), 1.0)
    assert weights[1] == 0.0 and weights[0] == 1.0


def test_query_probability_golden_value() -> None:
    weights = np.array([0.5, 0.25, 0.25])
    # lbar_0 = 0.5 (models 1, 2 miss) -> v = 0.25; gamma 2 -> q = 0.5 > eta.
    assert query_probability([0, 1, 2], weights, 2.0, 0.1) == pytest.approx(0.5)
    # a small gamma is floored at eta
    assert query_probability([0, 1, 2], weights, 0.01, 0.1) == pytest.approx(0.1)


def test_query_probability_matches_naive_loop_on_many_classes() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        k = int(rng.integers(2, 12))
        preds = rng.integers(0, 1000, size=k)
        weights = posterior(rng.exponential(3.0, size=k), 0.7)
        eta = float(rng.uniform(0.01, 0.5))
        gamma = float(rng.uniform(0.1, 20))
        expected = naive_query_probability(preds.tolist(), weights, gamma, eta)
        assert query_probability(preds, weights, gamma, eta) == pytest.approx(
            expected, rel=1e-12, abs=1e-300
        )


def test_v_is_zero_when_disagreeing_models_have_underflowed_weight() -> None:
    weights = posterior(np.array([0.0, 0.0, 5e3]), 1.0)
    assert weights[2] == 0.0
    assert disagreement_variance(compact_classes([3, 3, 9]), weights) == 0.0
    assert query_probability([3, 3, 9], weights, 10.0, 0.01) == 0.0


def test_tiny_nonzero_weight_still_counts() -> None:
    weights = np.array([1.0 - 1e-20, 1e-20])
    assert disagreement_variance(compact_classes([0, 1]), weights) > 0.0


def test_compact_classes_relabels_per_row() -> None:
    compact = compact_classes(np.array([[7, 3, 7, 900], [1, 1, 1, 1]]))
    np.testing.assert_array_equal(compact, [[1, 0, 1, 2], [0, 0, 0, 0]])


def test_loss_increments_are_importance_weighted() -> None:
    np.testing.assert_array_equal(loss_increments([0, 1, 1], 1, 0.25), [4.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        loss_increments([0, 1], 1, 0.0)


def test_best_model_breaks_ties_at_random() -> None:
    rng = np.random.default_rng(3)
    picks = {int(best_model(np.array([1.0, 0.0, 0.0, 2.0]), rng)) for _ in range(100)}
    assert picks == {1, 2}
