"""Labeler reliability (`picker.labelers`): Dawid and Skene's one-coin model fitted by EM
from overlaps and gold answers recovers each labeler's accuracy within its standard
error, its interval covers the truth, and a careless labeler is flagged while honest ones
are not. Items with one label and no gold answer say nothing and change nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from picker.labelers import NO_GOLD, estimate_labelers, label_weight, wilson_interval

CLASSES = 5


def simulate(
    accuracies: list[float], n_items: int, overlap: float, gold_rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each item goes to one labeler; a share `overlap` also to a second one; a share
    `gold_rate` has its answer known. A wrong label is uniform over the other classes."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, CLASSES, n_items)
    rows: list[tuple[int, int, int]] = []
    for item in range(n_items):
        who = rng.choice(len(accuracies), size=2 if rng.random() < overlap else 1, replace=False)
        for j in who:
            right = rng.random() < accuracies[j]
            label = truth[item] if right else (truth[item] + rng.integers(1, CLASSES)) % CLASSES
            rows.append((item, int(j), int(label)))
    gold = np.where(rng.random(n_items) < gold_rate, truth, NO_GOLD)
    items, labelers, labels = (np.array(x) for x in zip(*rows, strict=True))
    return items, labelers, labels, gold


def test_accuracies_are_recovered_within_their_standard_error() -> None:
    accuracies = [0.95, 0.9, 0.6]
    items, labelers, labels, gold = simulate(accuracies, 3000, overlap=0.3, gold_rate=0.02, seed=1)
    estimates = estimate_labelers(items, labelers, labels, gold, CLASSES, 3)
    for true, estimate in zip(accuracies, estimates, strict=True):
        checked = estimate.overlaps + estimate.gold
        standard_error = math.sqrt(true * (1 - true) / checked)
        assert abs(estimate.accuracy - true) < 4 * standard_error, (true, estimate)
        assert estimate.labels > checked > 0


def test_a_careless_labeler_is_flagged_and_honest_ones_are_not() -> None:
    items, labelers, labels, gold = simulate([0.95, 0.9, 0.6], 1500, overlap=0.2,
                                             gold_rate=0.0, seed=2)  # fmt: skip
    estimates = estimate_labelers(items, labelers, labels, gold, CLASSES, 3)
    assert [e.flagged(0.8) for e in estimates] == [False, False, True]
    assert min(range(3), key=lambda j: estimates[j].accuracy) == 2


def test_the_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    """Over many data sets, the one labeler checked against gold alone."""
    rng = np.random.default_rng(3)
    covered, runs = 0, 400
    for _ in range(runs):
        n = 60
        right = rng.random(n) < 0.8
        truth = rng.integers(0, CLASSES, n)
        labels = np.where(right, truth, (truth + rng.integers(1, CLASSES, n)) % CLASSES)
        (estimate,) = estimate_labelers(np.arange(n), np.zeros(n), labels, truth, CLASSES, 1)
        covered += estimate.low <= 0.8 <= estimate.high
    # the binomial standard error of the coverage over 400 runs is about 0.011
    assert abs(covered / runs - 0.95) < 4 * math.sqrt(0.95 * 0.05 / runs)


def test_single_labels_without_gold_say_nothing() -> None:
    items, labelers, labels, gold = simulate([0.9, 0.7], 800, overlap=0.3, gold_rate=0.05, seed=4)
    base = estimate_labelers(items, labelers, labels, gold, CLASSES, 2)
    # add 500 single-labeled items of labeler 1, all wrong: nothing can check them
    extra = np.arange(len(gold), len(gold) + 500)
    grown = estimate_labelers(
        np.concatenate([items, extra]), np.concatenate([labelers, np.ones(500, dtype=int)]),
        np.concatenate([labels, np.zeros(500, dtype=int)]),
        np.concatenate([gold, np.full(500, NO_GOLD)]), CLASSES, 2,
    )  # fmt: skip
    assert grown[1].accuracy == pytest.approx(base[1].accuracy, abs=1e-9)
    assert grown[1].labels == base[1].labels + 500 and grown[1].overlaps == base[1].overlaps


def test_renaming_the_labelers_renames_the_result() -> None:
    items, labelers, labels, gold = simulate([0.95, 0.8, 0.6], 900, overlap=0.3,
                                             gold_rate=0.02, seed=5)  # fmt: skip
    estimates = estimate_labelers(items, labelers, labels, gold, CLASSES, 3)
    order = np.array([2, 0, 1])  # labeler j becomes order[j]
    renamed = estimate_labelers(items, order[labelers], labels, gold, CLASSES, 3)
    for j in range(3):
        assert renamed[order[j]].accuracy == pytest.approx(estimates[j].accuracy, abs=1e-9)


def test_wilson_interval_golden_values() -> None:
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": [0, 7]}, "label is outside"),
        ({"labelers": [0, 3]}, "labeler index"),
        ({"items": [0, 9]}, "item index"),
        ({"items": [0, 0], "labelers": [1, 1]}, "same item twice"),
        ({"gold": [9, NO_GOLD]}, "gold answer"),
    ],
)
def test_malformed_evidence_is_refused(change: dict[str, list[int]], message: str) -> None:
    evidence = {"items": [0, 1], "labelers": [0, 1], "labels": [0, 1], "gold": [NO_GOLD, NO_GOLD]}
    evidence.update(change)
    with pytest.raises(ValueError, match=message):
        estimate_labelers(evidence["items"], evidence["labelers"], evidence["labels"],
                          evidence["gold"], CLASSES, 2)  # fmt: skip


def test_one_wrong_label_is_not_enough_to_flag_a_labeler() -> None:
    (alone,) = estimate_labelers([0], [0], [1], [0], n_classes=2, n_labelers=1)
    assert alone.high < 0.8 and alone.gold == 1  # the interval alone would flag them
    assert not alone.flagged(0.8) and alone.flagged(0.8, min_checked=1)


# ---- what a label weighs ------------------------------------------------------------------


def expected_mistakes(
    predictions: np.ndarray, label: int, accuracy: float, n_classes: int
) -> np.ndarray:
    """E[p != y | the labeler said `label`] per candidate, from the one-coin posterior with
    a uniform prior, by summing over the classes (no closed form used)."""
    likelihood = np.full(n_classes, (1.0 - accuracy) / (n_classes - 1))
    likelihood[label] = accuracy
    posterior = likelihood / likelihood.sum()
    return np.array([sum(posterior[c] for c in range(n_classes) if c != p) for p in predictions])


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_the_weight_is_the_expected_loss_under_the_labels_posterior(n_classes: int) -> None:
    """For any label, accuracy and predictions, the candidates' expected mistakes under the
    label's posterior differ exactly as w(a) [p != label] does: the weighted increment is
    that expected loss less a term common to every candidate."""
    rng = np.random.default_rng(n_classes)
    for _ in range(200):
        accuracy = float(rng.uniform(1.0 / n_classes, 1.0))
        label = int(rng.integers(n_classes))
        predictions = rng.integers(0, n_classes, size=7)
        expected = expected_mistakes(predictions, label, accuracy, n_classes)
        weighted = label_weight(accuracy, n_classes) * (predictions != label)
        np.testing.assert_allclose(expected - expected[0], weighted - weighted[0], atol=1e-12)


def test_weights_run_from_chance_to_perfect() -> None:
    assert label_weight(1.0, 10) == 1.0
    assert label_weight(0.1, 10) == 0.0  # at chance: the label says nothing
    assert label_weight(0.05, 10) == 0.0  # worse than chance is clipped, not reversed
    assert label_weight(0.75, 2) == pytest.approx(0.5)
    weights = [label_weight(a, 3) for a in np.linspace(0, 1, 21)]
    assert weights == sorted(weights)
    with pytest.raises(ValueError, match="accuracy"):
        label_weight(1.5, 3)


def test_the_weighted_order_of_expected_losses_is_the_order_of_true_mistakes() -> None:
    """Averaged over a one-coin labeler's mistakes, the weighted increments rank the
    candidates as their true mistakes do: simulated labels of a 0.6-accurate labeler on
    fixed truths, the weighted losses' order equals the order of the true mistake counts."""
    rng = np.random.default_rng(7)
    n_classes, n_items = 4, 4000
    truth = rng.integers(0, n_classes, size=n_items)
    errors = np.array([0.1, 0.2, 0.3])
    predictions = np.where(rng.random((3, n_items)) < errors[:, None],
                           (truth + rng.integers(1, n_classes, size=(3, n_items))) % n_classes,
                           truth)  # fmt: skip
    right = rng.random(n_items) < 0.6
    labels = np.where(right, truth, (truth + rng.integers(1, n_classes, size=n_items)) % n_classes)
    weight = label_weight(0.6, n_classes)
    weighted = (weight * (predictions != labels)).sum(axis=1)
    assert list(np.argsort(weighted)) == list(np.argsort((predictions != truth).sum(axis=1)))


def test_a_labeler_without_evidence_weighs_fully_and_a_flagged_one_less() -> None:
    honest, careless = estimate_labelers(
        items=[i for i in range(40) for _ in (0, 1)],
        labelers=[0, 1] * 40,
        labels=[c for i in range(40) for c in (i % 3, i % 3 if i % 2 else (i + 1) % 3)],
        gold=[i % 3 for i in range(40)],
        n_classes=3,
        n_labelers=2,
    )
    assert honest.weight(3) == pytest.approx(1.0, abs=0.05)
    assert careless.weight(3) < 0.7
    nothing = estimate_labelers([], [], [], [], n_classes=3, n_labelers=1)[0]
    assert nothing.weight(3) == 1.0


# ---- the audit ----------------------------------------------------------------------------


def labels_until_flagged(accuracy: float, base: float, audit: float, seed: int,
                         most: int = 400) -> int | None:  # fmt: skip
    """A labeler's labels, one at a time, each checked against a known answer with
    probability `audit` while `audited`, else `base`: how many labels they gave before
    they were flagged at 0.8 (None: not within `most`)."""
    rng = np.random.default_rng(seed)
    answers: list[int] = []  # 1 right, 0 wrong, on the checked labels
    for given in range(1, most + 1):
        estimate = estimate_labelers(np.arange(len(answers)), np.zeros(len(answers), int),
                                     np.array(answers, int), np.ones(len(answers), int),
                                     2, 1)[0] if answers else None  # fmt: skip
        if estimate is not None and estimate.flagged(0.8):
            return given - 1
        rate = audit if estimate is not None and estimate.audited(0.8) else base
        if rng.random() < rate:
            answers.append(int(rng.random() < accuracy))
    return None


def test_an_audit_tells_a_careless_labeler_apart_within_tens_of_labels() -> None:
    """At the default overlap of 0.1 a labeler right 70 % of the time gives hundreds of
    labels before the evidence flags them; checking all of theirs once they look below
    the bar (audit_overlap_rate 1) flags them within about a hundred."""
    audited = [labels_until_flagged(0.7, 0.1, 1.0, seed) for seed in range(6)]
    plain = [labels_until_flagged(0.7, 0.1, 0.1, seed) for seed in range(6)]
    print(audited, plain)  # seen: [37, 47, 138, 34, 23, 29] [178, None, 169, None, 265, None]
    assert all(n is not None and n < 150 for n in audited)
    later = [math.inf if n is None else n for n in plain]  # None: not within 400 labels
    assert np.median(later) > 3 * np.median(audited)  # type: ignore[arg-type]
    # an honest labeler is never flagged, audited or not
    assert labels_until_flagged(1.0, 0.1, 1.0, 0) is None


def test_who_is_audited() -> None:
    (none,) = estimate_labelers([], [], [], [], 2, 1)
    assert not none.audited(0.8)  # nothing checked: nothing to go on
    (once_wrong,) = estimate_labelers([0], [0], [1], [0], 2, 1)
    assert once_wrong.audited(0.8) and not once_wrong.flagged(0.8)
    right = estimate_labelers(np.arange(30), np.zeros(30, int), np.zeros(30, int),
                              np.zeros(30, int), 2, 1)[0]  # fmt: skip
    assert not right.audited(0.8)
    wrong = estimate_labelers(np.arange(30), np.zeros(30, int), np.ones(30, int),
                              np.zeros(30, int), 2, 1)[0]  # fmt: skip
    assert wrong.flagged(0.8) and not wrong.audited(0.8)  # flagged: the audit is over


def test_a_gold_item_several_labelers_answered_counts_as_gold_only() -> None:
    """Checked labels are overlaps plus gold answers: a gold answer is not also an overlap
    (it would count twice towards the floor of the flag and the end of an audit)."""
    # item 0: gold, answered by both; item 1: an overlap item; item 2: labeled by one only
    found = estimate_labelers([0, 0, 1, 1, 2], [0, 1, 0, 1, 0], [1, 1, 0, 0, 2],
                              [1, NO_GOLD, NO_GOLD], 3, 2)  # fmt: skip
    assert [(e.labels, e.overlaps, e.gold) for e in found] == [(3, 1, 1), (2, 1, 1)]
