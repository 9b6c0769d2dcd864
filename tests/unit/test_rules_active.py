"""The large-pool mode's active set in the service (`service.state.rules.active`): a pure
function of the stored selection, so every replica (and a restarted one) runs the same
set; q and the coins over it; observing a batch that brings its own decisions."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from picker import PickerState, learning_rates, posterior
from picker.large_pool import active_query_probability
from service.config.knobs import RuntimeKnobs
from service.models.pool_file import CandidateSpec
from service.state.drift import DriftConfig, Monitor
from service.state.rules import (
    Batch,
    Meta,
    Selection,
    Tally,
    active_columns,
    decide_active,
    round_order,
)
from service.state.rules.observe import observe_batch
from service.state.store.base import Retention

NAMES = tuple(f"m{i}" for i in range(8))
LOSSES = (5.0, 0.5, 3.0, 0.0, 4.0, 1.0, 2.0, 6.0)


def selection(served: int = 3, round_number: int = 0, monitor: int | None = None,
              losses: tuple[float, ...] = LOSSES, step: int = 40) -> Selection:  # fmt: skip
    picker = PickerState(losses, round=round_number, step=step)
    watched = None if monitor is None else Monitor.start(monitor, 3)
    return Selection(Meta(NAMES, served, round=round_number), Tally(picker, monitor=watched))


def test_the_active_set_is_the_lowest_losses() -> None:
    assert active_columns(selection(), 3) == (1, 3, 5)
    assert active_columns(selection(), 5) == (1, 2, 3, 5, 6)


def test_every_candidate_when_the_pool_is_small_the_knob_all_or_the_round_pool_based() -> None:
    assert active_columns(selection(), 8) is None
    assert active_columns(selection(), 20) is None
    assert active_columns(selection(), None) is None
    pooled = selection()
    pooled = Selection(pooled.meta, Tally(pooled.picker, selector="pool-based"))
    assert active_columns(pooled, 3) is None


def test_the_served_and_the_watched_model_are_always_active() -> None:
    columns = active_columns(selection(served=7, monitor=0), 3)
    assert columns is not None and {0, 7} <= set(columns) and len(columns) == 3
    assert 3 in columns  # the lowest loss keeps its place; the others made room


def test_it_is_a_function_of_the_stored_state_alone() -> None:
    """What a restarted replica reads back gives the same set; ties are broken in an
    order fixed per round (the same on every replica), and another round may break
    them otherwise."""
    tied = selection(losses=(0.0,) * 8)
    again = Selection(Meta.from_dict(tied.meta.to_dict()), Tally.from_dict(tied.tally.to_dict()))
    assert active_columns(tied, 3) == active_columns(again, 3)
    rounds = {active_columns(selection(losses=(0.0,) * 8, round_number=r, served=0), 3)
              for r in range(12)}  # fmt: skip
    assert len(rounds) > 3


def test_q_is_the_pickers_over_the_active_set_with_its_floor() -> None:
    current = selection()
    columns = (1, 3, 5)
    predictions = np.array([[0, 0, 0], [0, 1, 2], [1, 1, 0]])
    q, coins = decide_active(current, predictions, columns, 2.0, np.random.default_rng(0))
    eta = learning_rates(41 + np.arange(3), 8)
    weights = posterior(np.broadcast_to(np.array(LOSSES), (3, 8)), eta)[:, list(columns)]
    np.testing.assert_allclose(q, active_query_probability(predictions, weights, 2.0, eta))
    assert q[0] == pytest.approx(eta[0])  # all agree: the floor, not 0
    assert q[1] > q[0] and coins.dtype == np.bool_


def test_a_batch_with_its_own_decisions_queues_what_its_coins_chose_within_the_budget() -> None:
    current = selection()
    predictions = np.full((4, 8), -2)
    predictions[:, [1, 3, 5]] = [[0, 1, 1]] * 4
    predictions[[0, 2]] = np.arange(8) % 3  # the rows the coins chose: every candidate
    q = np.array([0.3, 0.2, 0.5, 0.4])
    coins = np.array([True, False, True, False])
    batch = Batch(["a", "b", "c", "d"], predictions, np.zeros((4, 2)), NAMES,
                  decided=(q, coins), columns=(1, 3, 5))  # fmt: skip
    rng = np.random.default_rng(0)
    txn, observed = observe_batch("op", current, set(), batch, 1.0, rng, 0.0, Retention())
    assert observed.queued == 2 and txn is not None
    stored = {k: v.value for k, v in txn.put.items() if k.startswith("item:")}
    assert set(stored) == {"item:a", "item:c"}
    assert stored["item:a"]["q"] == 0.3 and min(stored["item:c"]["predictions"]) >= 0
    capped = Selection(current.meta, Tally(PickerState(LOSSES, step=40, budget=1)))
    _, observed = observe_batch("op", capped, set(), batch, 1.0, rng, 0.0, Retention())
    assert observed.queued == 1


def test_the_drift_monitor_counts_the_watched_model_alone_in_the_large_pool_mode() -> None:
    current = selection(monitor=3)
    predictions = np.full((6, 8), -2)
    predictions[:, [1, 3, 5]] = [[0, 1, 2]] * 6  # the active models all disagree
    batch = Batch([f"i{n}" for n in range(6)], predictions, np.zeros((6, 2)), NAMES,
                  decided=(np.full(6, 0.1), np.zeros(6, dtype=bool)), columns=(1, 3, 5))  # fmt: skip
    config = DriftConfig(50, 1e-4, 3)
    txn, _ = observe_batch("op", current, set(), batch, 1.0, np.random.default_rng(0), 0.0,
                           Retention(), config)  # fmt: skip
    assert txn is not None
    monitor = txn.put["tally:0"].value["monitor"]
    assert monitor["reference"] == [0, 6, 0, 0] and monitor["reference_disagreements"] == 0
    elsewhere = Batch(batch.item_ids, predictions, batch.instances, NAMES, decided=batch.decided,
                      columns=(1, 5, 6))  # fmt: skip
    txn, _ = observe_batch("op", current, set(), elsewhere, 1.0, np.random.default_rng(0), 0.0,
                           Retention(), config)  # fmt: skip
    assert txn is not None and txn.put["tally:0"].value["monitor"]["reference"] == [0, 0, 0, 0]


def test_a_rounds_first_active_set_is_recalled_by_the_pool_files_priors() -> None:
    fresh = selection(losses=(0.0,) * 8, served=0)
    priors = {"m5": 0.9, "m2": 0.7, "m6": 0.8}
    assert active_columns(fresh, 3, priors) == (0, 5, 6)  # the served model, then the best two
    order = round_order(NAMES, 4, priors)
    assert list(np.argsort(order)[:3]) == [5, 6, 2]
    assert sorted(order.tolist()) == [i / 8 for i in range(8)]
    # once labels have moved the losses, the losses decide (a prior only orders ties)
    assert active_columns(selection(), 3, priors) == (1, 3, 5)


def test_a_prior_outside_zero_one_is_refused_with_the_field_named() -> None:
    for bad in (-0.1, 1.5, "high"):
        with pytest.raises(ValidationError, match="prior"):
            CandidateSpec(name="a", sklearn="a.joblib", prior=bad)
    assert CandidateSpec(name="a", sklearn="a.joblib", prior=0.75).prior == 0.75


def test_the_knob_takes_a_number_from_two_auto_or_all() -> None:
    for good in (2, 50, "auto", "all", "7"):
        RuntimeKnobs(active_models=good)
    for bad in (1, 0, -3, "some", 2.5, True):
        with pytest.raises(ValidationError, match="a whole number from 2"):
            RuntimeKnobs(active_models=bad)
