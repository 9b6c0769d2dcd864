"""The pool selectors: their formulas against brute force, and their state discipline."""

import json
import math

import numpy as np
import pytest

from picker.coda import Coda, beta_pdf_cdf, diagonal_betas, entropy_bits, pbest_direct
from picker.model_selector import ModelSelector, expected_entropy, log_belief
from picker.modelpicker import compact_classes
from picker.pool_based import PoolBased, log_rising, normal_cdf
from picker.selectors import POOL_METHODS, make_selector, selector_from_dict


def noisy_pool(rng, n=120, accuracies=(0.55, 0.6, 0.65, 0.7, 0.75), n_classes=4):
    truth = rng.integers(0, n_classes, n)
    columns = []
    for accuracy in accuracies:
        wrong = (truth + rng.integers(1, n_classes, n)) % n_classes
        columns.append(np.where(rng.random(n) < accuracy, truth, wrong))
    return np.stack(columns, axis=1), truth


def brute_expected_entropy(predictions, log_p, g, n_classes):
    """Model Selector's loop: every class c, the belief re-weighted by g on agreement."""
    p = np.exp(log_p)
    result = np.zeros(predictions.shape[0])
    for c in range(n_classes):
        new = p * g ** (predictions == c)
        new /= new.sum(axis=1, keepdims=True)
        safe = np.maximum(new, 1e-300)
        result += -(new * np.log(safe)).sum(axis=1) / n_classes
    return result


@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_model_selector_entropy_matches_the_loop(n_classes):
    rng = np.random.default_rng(n_classes)
    predictions = rng.integers(0, n_classes, (50, 6))
    correct = rng.integers(0, 8, 6)
    g = 0.54 / 0.46
    log_p = log_belief(correct, math.log(g))
    closed = expected_entropy(compact_classes(predictions), log_p, g, n_classes)
    assert np.allclose(closed, brute_expected_entropy(predictions, log_p, g, n_classes))


def test_model_selector_belief_and_choice():
    predictions = np.array([[0, 0, 0], [0, 1, 1], [1, 0, 1], [2, 2, 0]])
    selector = ModelSelector(predictions, 3, 0.4)
    selector.add_label(1, 1)
    g = 0.6 / 0.4
    assert np.allclose(selector.belief(), np.array([1, g, g]) / (1 + 2 * g))
    item = selector.choose(np.random.default_rng(0))
    assert item in (2, 3)  # the unanimous item 0 and the labeled item 1 are never chosen
    selector.add_label(2, 1)
    selector.add_label(3, 0)
    assert selector.choose(np.random.default_rng(0)) is None
    assert selector.correct_counts().tolist() == [1, 1, 3]
    assert selector.best(np.random.default_rng(0)) == 2


def test_coda_fast_pbest_matches_direct_integration():
    rng = np.random.default_rng(3)
    predictions, _ = noisy_pool(rng, n=80, n_classes=3)
    selector = Coda(predictions, 3)
    for item, label in [(0, 1), (5, 2), (9, 0)]:
        selector.add_label(item, label)
    alpha, beta = diagonal_betas(selector.dirichlets)
    before = pbest_direct(alpha, beta)
    mixture = selector.class_prior @ before
    expected = np.zeros(selector.n_items)
    for x in range(selector.n_items):
        after = np.zeros(3)
        for c in range(3):
            hit = predictions[x] == c
            a_row, b_row = alpha[c] + hit, beta[c] + ~hit
            row = pbest_direct(a_row[None], b_row[None])[0]
            after[c] = entropy_bits(mixture + selector.class_prior[c] * (row - before[c]))
        expected[x] = entropy_bits(mixture) - selector.item_class_prior[x] @ after
    assert np.allclose(selector.information_gain(), expected, atol=1e-10)


def test_beta_grid_integrates_to_one():
    pdf, cdf = beta_pdf_cdf(np.array([2.0, 5.0, 30.0]), np.array([2.0, 1.5, 4.0]))
    assert np.allclose(cdf[:, -1], 1.0, atol=1e-3)
    assert np.all(np.diff(cdf, axis=1) >= 0) and np.all(pdf >= 0)


def test_coda_prior_follows_the_consensus():
    # Model 0 always agrees with the majority, model 2 never: P(best) favours model 0.
    predictions = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]])
    selector = Coda(predictions, 2)
    assert np.argmax(selector.accuracies()) in (0, 1)
    assert selector.accuracies()[2] == selector.accuracies().min()
    assert np.isclose(selector.accuracies().sum(), 1.0)


def test_pool_based_helpers():
    base, count = np.array([0.5, 2.0, 3.0]), np.array([0.0, 1.0, 3.0])
    expected = [math.lgamma(b + c) - math.lgamma(b) for b, c in zip(base, count, strict=True)]
    assert np.allclose(log_rising(base, count), expected)
    assert np.allclose(normal_cdf(np.array([0.0, 1.96])), [0.5, 0.975], atol=1e-3)


def test_pool_based_is_exact_once_everything_is_labeled():
    rng = np.random.default_rng(5)
    predictions, truth = noisy_pool(rng)
    selector = PoolBased(predictions, 4)
    for item in range(selector.n_items):
        selector.add_label(item, int(truth[item]))
    assert np.allclose(selector.accuracies(), (predictions == truth[:, None]).mean(axis=0))
    assert selector.choose(rng) is None


def test_pool_based_choice_goes_where_the_leaders_split():
    rng = np.random.default_rng(8)
    predictions, truth = noisy_pool(rng, n=200)
    selector = PoolBased(predictions, 4)
    for _ in range(15):
        item = selector.choose(rng)
        assert item is not None and item not in selector.labels
        assert len(set(predictions[item])) > 1
        selector.add_label(item, int(truth[item]))
    assert selector.temperature in selector_temperatures()


def selector_temperatures():
    from picker.pool_based import TEMPERATURES

    return set(TEMPERATURES.tolist())


def label_some(selector, truth, rng, count):
    for _ in range(count):
        item = selector.choose(rng)
        if item is None:
            break
        selector.add_label(item, int(truth[item]))


@pytest.mark.parametrize("method", POOL_METHODS)
def test_labels_in_any_order_give_the_same_state(method):
    rng = np.random.default_rng(11)
    predictions, truth = noisy_pool(rng)
    first = make_selector(method, predictions, 4)
    label_some(first, truth, rng, 12)
    items = list(first.labels)
    second = make_selector(method, predictions, 4)
    for item in reversed(items):
        second.add_label(item, int(truth[item]))
    assert np.allclose(first.accuracies(), second.accuracies(), atol=1e-9)
    assert second.choose(np.random.default_rng(1)) == first.choose(np.random.default_rng(1))


@pytest.mark.parametrize("method", POOL_METHODS)
def test_round_trip_through_json(method):
    rng = np.random.default_rng(12)
    predictions, truth = noisy_pool(rng)
    selector = make_selector(method, predictions, 4)
    label_some(selector, truth, rng, 9)
    restored = selector_from_dict(json.loads(json.dumps(selector.to_dict())))
    assert restored.labels == selector.labels
    assert restored.param == selector.param
    assert np.allclose(restored.accuracies(), selector.accuracies(), atol=1e-9)
    assert restored.choose(np.random.default_rng(2)) == selector.choose(np.random.default_rng(2))


@pytest.mark.parametrize("method", POOL_METHODS)
def test_bad_labels_are_refused_and_change_nothing(method):
    rng = np.random.default_rng(13)
    predictions, _ = noisy_pool(rng, n=40)
    selector = make_selector(method, predictions, 4)
    selector.add_label(3, 1)
    before = selector.to_dict()
    for item, label in [(-1, 0), (40, 0), (2, 4), (2, -1), (3, 2)]:
        with pytest.raises(ValueError):
            selector.add_label(item, label)
    selector.add_label(3, 1)  # the same label again is a no-op
    assert selector.to_dict() == before


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="models >= 2"):
        make_selector("pool-based", np.zeros((5, 1), dtype=int))
    with pytest.raises(ValueError, match="integer"):
        make_selector("coda", np.zeros((5, 2)))
    with pytest.raises(ValueError, match="eps"):
        make_selector("model-selector", np.zeros((5, 2), dtype=int), 2, 0.7)
    with pytest.raises(ValueError, match="unknown pool method"):
        make_selector("oracle", np.zeros((5, 2), dtype=int))
    with pytest.raises(ValueError, match="version"):
        selector_from_dict({"version": 99})


def test_pool_based_keeps_asking_when_the_belief_is_certain():
    # Thirty models that mostly agree: EM is certain of every item (p_right is 0 or 1),
    # so no item scores above 0; the selector still draws labels among the disagreement
    # items, and stops only when every one of them is labeled.
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 5, 300)
    right = rng.random((300, 30)) < np.linspace(0.8, 0.9, 30)
    predictions = np.where(right, truth[:, None], (truth[:, None] + 1) % 5)
    selector = PoolBased(predictions, 5)
    assert np.all(selector.item_scores() == 0)
    first = selector.choose(rng)
    assert first is not None and selector.disagreement()[first]
    label_some(selector, truth, rng, 1000)
    assert set(selector.labels) == set(np.flatnonzero(selector.disagreement()).tolist())


def naive_p_best(selector, rng, draws):
    """Each unlabeled item's class drawn on its own from the belief, then the best counted:
    what p_best computes when every pattern's Dirichlet is as sharp as before five labels."""
    wins = np.zeros(selector.n_models)
    unlabeled = [x for x in range(selector.n_items) if x not in selector.labels]
    base = selector.correct_counts().astype(float)
    for _ in range(draws):
        totals = base.copy()
        for x in unlabeled:
            y = rng.choice(selector.n_classes, p=selector.resp[x])
            totals += selector.predictions[x] == y
        top = totals == totals.max()
        wins += top / top.sum()
    return wins / draws


def test_pool_based_p_best_matches_drawing_each_item_on_its_own():
    rng = np.random.default_rng(8)
    predictions, truth = noisy_pool(rng, n=60, accuracies=(0.6, 0.62, 0.66, 0.7, 0.72))
    selector = PoolBased(predictions, 4, labels={x: int(truth[x]) for x in range(4)})
    assert selector.strength == 1e6  # under five labels: items of a pattern independent
    fast = selector.p_best(np.random.default_rng(1), draws=4000)
    slow = naive_p_best(selector, np.random.default_rng(2), draws=1500)
    assert fast.sum() == pytest.approx(1.0) and (fast >= 0).all()
    assert np.abs(fast - slow).max() < 0.05
    assert selector.p_best(np.random.default_rng(1), draws=4000).tolist() == fast.tolist()


def test_pool_based_p_best_is_certain_once_everything_is_labeled():
    rng = np.random.default_rng(9)
    predictions, truth = noisy_pool(rng)
    labels = {x: int(truth[x]) for x in range(len(truth))}
    correct = (predictions == truth[:, None]).sum(axis=0)
    weights = PoolBased(predictions, 4, labels=labels).p_best(rng, draws=50)
    expected = (correct == correct.max()) / (correct == correct.max()).sum()
    assert weights.tolist() == expected.tolist()


def test_pool_based_p_best_concentrates_on_the_best_as_labels_grow():
    rng = np.random.default_rng(10)
    predictions, truth = noisy_pool(rng, n=400, accuracies=(0.5, 0.55, 0.6, 0.65, 0.8))
    selector = PoolBased(predictions, 4, labels={x: int(truth[x]) for x in range(5)})
    early = selector.p_best(np.random.default_rng(0))
    for x in range(5, 200):
        selector.add_label(x, int(truth[x]))
    late = selector.p_best(np.random.default_rng(0))
    assert late[4] > 0.99 and late[4] >= early[4]


# ---- labels that may be wrong (label_accuracy) ---------------------------------------------


def test_a_label_at_chance_says_nothing_and_a_sure_one_is_the_truth():
    """A label from a labeler at chance (a = 1/C) leaves every item's belief as if the
    item were unlabeled; a label of accuracy 1 is the plain label, to the bit."""
    rng = np.random.default_rng(21)
    predictions, truth = noisy_pool(rng, n=80)
    labels = {x: int(truth[x]) for x in range(3)}
    plain = PoolBased(predictions, 4, labels=labels)
    sure = PoolBased(predictions, 4, labels=labels, label_accuracy=dict.fromkeys(labels, 1.0))
    assert sure.resp.tolist() == plain.resp.tolist()
    with_chance = PoolBased(predictions, 4, labels={**labels, 10: int((truth[10] + 1) % 4)},
                            label_accuracy={10: 0.25})  # fmt: skip
    np.testing.assert_allclose(with_chance.resp, plain.resp, atol=1e-12)
    np.testing.assert_allclose(with_chance.accuracies(), plain.accuracies(), atol=1e-12)


def test_a_label_that_may_be_wrong_moves_the_belief_part_way():
    """The item's probability of its label lies between the label-free belief and 1, and
    grows with the labeler's accuracy; P(best) draws its class instead of counting it."""
    rng = np.random.default_rng(22)
    predictions, truth = noisy_pool(rng, n=80)
    x, label = 7, int(truth[7])
    free = PoolBased(predictions, 4).resp[x, label]
    shares = [PoolBased(predictions, 4, labels={x: label}, label_accuracy={x: a}).resp[x, label]
              for a in (0.4, 0.7, 0.9)]  # fmt: skip
    assert free < shares[0] < shares[1] < shares[2] < 1.0
    assert PoolBased(predictions, 4, labels={x: label}).resp[x, label] == 1.0


def test_labels_of_a_labeler_who_errs_weigh_less_in_p_best():
    """A labeler who always answers what a weak model predicts: taken as the truth, the
    labels make it look best; at the labeler's accuracy on the consensus they matter less
    and the truly best model keeps more of P(best)."""
    rng = np.random.default_rng(23)
    predictions, truth = noisy_pool(rng, n=300, accuracies=(0.5, 0.55, 0.6, 0.65, 0.8))
    honest = {x: int(truth[x]) for x in range(0, 30)}
    partisan = {x: int(predictions[x, 0]) for x in range(30, 130)}
    labels = {**honest, **partisan}
    trusted = PoolBased(predictions, 4, labels=labels).p_best(np.random.default_rng(0))
    weighed = PoolBased(predictions, 4, labels=labels, label_accuracy=dict.fromkeys(partisan, 0.4))
    best = weighed.p_best(np.random.default_rng(0))
    assert trusted[0] > 0.9  # taken as the truth, her labels make the weakest model best
    assert best[4] > 0.9  # weighed at her accuracy, the best stays best


def test_an_accuracy_out_of_range_or_without_a_label_is_refused():
    predictions = np.array([[0, 1], [1, 1], [0, 0]])
    with pytest.raises(ValueError, match="accuracy"):
        PoolBased(predictions, 2, labels={0: 1}, label_accuracy={0: 0.0})
    with pytest.raises(ValueError, match="no label"):
        PoolBased(predictions, 2, labels={0: 1}, label_accuracy={1: 0.5})
    selector = PoolBased(predictions, 2)
    with pytest.raises(ValueError, match="accuracy"):
        selector.add_label(0, 1, accuracy=1.5)
    assert selector.labels == {}
