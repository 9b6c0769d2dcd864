"""Elimination in the service (`service.state.rules.elimination`): a label moves every
candidate's evidence with the picker's rule (the same numbers as the replay's test), a
candidate that left the round is never active, label-checked, served or charged again,
and the round records who left and on what evidence; the evidence survives the store's
serialised form and candidates added or removed."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from picker import PickerState, learning_rate
from picker.elimination import Elimination, Evidence
from service.config.knobs import RuntimeKnobs, elimination_level
from service.state.rules import (
    Item,
    Meta,
    Selection,
    Tally,
    active_columns,
    apply_label,
    label_check_columns,
    swap_target,
)
from service.state.rules.candidates import add_candidate, remove_candidate
from service.state.rules.documents import item_key, tally_key
from service.state.store.base import Doc

NAMES = tuple(f"m{i}" for i in range(6))
DELTA = 0.05


def item(item_id: str, predictions: tuple[int, ...], q: float = 0.3) -> Item:
    return Item(item_id, 0, q, predictions, (0.0, 1.0), created_at=100.0)


def label(tally: Tally, it: Item, y: int, delta: float | None = DELTA) -> Tally:
    outcome, _, txn = apply_label(f"op-{it.item_id}", it.item_id, Doc(1, it.to_dict()),
                                  Doc(1, tally.to_dict()), y, 101.0, 1e6, "alice", delta)  # fmt: skip
    assert outcome == "accepted" and txn is not None
    return Tally.from_dict(txn.put[tally_key(0)].value)  # through the stored form


def start(step: int = 500) -> Tally:
    return Tally(PickerState((0.0,) * len(NAMES), step=step), models=NAMES)


def labels_until_out(tally: Tally, most: int = 400) -> tuple[Tally, int]:
    """m0 is always right, m5 always wrong, the rest right on every other item: label
    until m5 leaves the round."""
    for n in range(most):
        predictions = (1, 1 if n % 2 else 0, 1, 1 if n % 2 else 0, 1, 0)
        tally = label(tally, item(f"i{n}", predictions), 1)
        if tally.out()[5]:
            return tally, n + 1
    raise AssertionError("m5 never left the round")


def test_a_clearly_worse_candidate_leaves_and_the_round_records_why() -> None:
    tally, labels = labels_until_out(start())
    assert tally.out().tolist() == [False, False, False, False, False, True]
    (record,) = [e for e in tally.eliminated if e["model"] == "m5"]
    assert record["labels"] == labels and record["leader"] == "m0"
    assert record["wealth"] >= record["threshold"] == pytest.approx(1 / DELTA)
    assert record["loss"] > record["leader_loss"]
    weights = tally.weights()
    assert weights[5] == 0.0 and weights.sum() == pytest.approx(1.0)
    assert tally.best() == 0


def test_a_candidate_out_of_the_round_is_charged_nothing_more() -> None:
    tally, _ = labels_until_out(start())
    frozen = tally.picker.losses[5]
    after = label(tally, item("late", (1, 1, 1, 1, 1, 0)), 1)
    assert after.picker.losses[5] == frozen
    assert after.picker.losses[0] == tally.picker.losses[0]
    assert after.picker.labels == tally.picker.labels + 1


def test_without_delta_nothing_leaves_and_the_losses_are_modelpickers() -> None:
    tally = start()
    for n in range(300):
        tally = label(tally, item(f"i{n}", (1, 1, 1, 1, 1, 0)), 1, delta=None)
    assert not tally.out().any() and tally.evidence is None
    assert tally.picker.losses[5] == pytest.approx(300 / 0.3)


def test_the_service_moves_the_evidence_exactly_as_the_replay_does() -> None:
    """The same labels through the stored rule (one at a time, the round's step) and the
    replay's vectorised test (one realisation) give the same wealth, bit for bit."""
    rng = np.random.default_rng(7)
    tally, replay = start(step=1), Elimination(1, len(NAMES), DELTA)
    losses = np.zeros((1, len(NAMES)))
    for n in range(120):
        predictions = tuple(int(p) for p in rng.integers(0, 2, len(NAMES)))
        q, y = float(rng.uniform(0.2, 1.0)), int(rng.integers(0, 2))
        step = tally.picker.step
        leader = np.array([int(np.argmin(np.where(np.isfinite(losses[0]), losses[0], np.inf)))])
        mistakes = (np.asarray(predictions) != y).astype(float)[None, :]
        replay.observe(step, np.array([0]), mistakes, np.array([q]), leader, losses,
                       learning_rate(step, len(NAMES)))  # fmt: skip
        tally = label(tally, item(f"i{n}", predictions, q), y)
        losses[0] = np.where(np.isfinite(losses[0]), tally.picker.loss_array, np.inf)
        tally = replace(tally, picker=replace(tally.picker, step=step + 7))
    assert tally.evidence is not None
    assert list(tally.evidence.log_wealth) == replay.log_wealth[0].tolist()
    assert tally.out().tolist() == (replay.eliminated_at[0] >= 0).tolist()


def test_an_eliminated_candidate_is_never_active_checked_or_served() -> None:
    tally, _ = labels_until_out(start())
    current = Selection(Meta(NAMES, served=5), tally)
    for size in (2, 3, 4, None):
        columns = active_columns(current, size)
        assert columns is not None and 5 not in columns
        assert 5 not in label_check_columns(current, columns)
    assert set(label_check_columns(current, (0, 1))) == {2, 3, 4}
    # no margin keeps an eliminated model served
    assert swap_target(current, margin=0.99, min_labels=10_000) == 0


def test_added_and_removed_candidates_keep_the_evidence_in_pool_order() -> None:
    tally, _ = labels_until_out(start())
    current = Selection(Meta(NAMES, served=0), tally)
    grown = add_candidate("op-add", current, {"name": "m6", "path": "m6.joblib"}, [], [], {}, 1.0)
    after = Tally.from_dict(grown.put[tally_key(0)].value)
    assert after.out().tolist() == [False] * 5 + [True, False]
    assert after.evidence is not None and after.evidence.log_wealth[6] == 0.0
    shrunk = remove_candidate("op-rm", Selection(Meta((*NAMES, "m6"), served=0), after), 2,
                              {}, 2.0)  # fmt: skip
    left = Tally.from_dict(shrunk.put[tally_key(0)].value)
    assert left.out().tolist() == [False, False, False, False, True, False]
    assert item_key("x") not in shrunk.put


def test_the_level_applies_in_the_large_pool_mode_only() -> None:
    assert elimination_level(RuntimeKnobs(active_models=3), 10) == 0.05
    assert elimination_level(RuntimeKnobs(active_models=3, elimination_delta=0.01), 10) == 0.01
    assert elimination_level(RuntimeKnobs(active_models=3, elimination_delta="off"), 10) is None
    assert elimination_level(RuntimeKnobs(active_models="all"), 10) is None
    assert elimination_level(RuntimeKnobs(), 20) is None  # auto: 20 active, all of the pool
    assert elimination_level(RuntimeKnobs(), 21) == 0.05
    for bad in (0, 1, 1.5, -0.1, "sometimes"):
        with pytest.raises(ValueError, match="elimination_delta"):
            RuntimeKnobs(elimination_delta=bad)


def test_evidence_round_trips_and_refuses_ragged_fields() -> None:
    evidence = Evidence((0.5, -1.0), (0.25, 1.0), (0.1, math.log(3.0)), (False, True))
    assert Evidence.from_dict(evidence.to_dict()) == evidence
    with pytest.raises(ValueError, match="one entry per model"):
        Evidence.from_dict({**evidence.to_dict(), "out": [False]})
