"""The live state's operations on every backend: the same rules, the same answers."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from picker import loss_increments
from service.state.live import LiveState, new_op
from service.state.rules import Batch
from service.state.store.base import Retention, StoreError
from tests.integration.contract.conftest import Connect

MODELS = ["a", "b", "c"]
TTL = 3600.0
NOW = time.time()  # backends expire records by their own clock


def batch(ids: list[str], preds: list[list[int]] | None = None) -> Batch:
    predictions = np.array(preds or [[0, 1, 1]] * len(ids), dtype=np.int64)
    return Batch(ids, predictions, np.zeros((len(ids), 2)))


def state(connect: Connect, budget: int | None = None, **retention: float) -> LiveState:
    live = LiveState(connect(Retention(**retention)), Retention(**retention))  # type: ignore[arg-type]
    live.initialise(MODELS, served=0, budget=budget, now=NOW)
    return live


def queue_all(live: LiveState, ids: list[str], now: float = NOW) -> int:
    """gamma 1e6: every disagreement item is queued (until the budget)."""
    return live.observe(new_op("t"), batch(ids), 1e6, np.random.default_rng(0), now).queued


def test_initialise_is_one_step_idempotent_and_refuses_another_pool(connect: Connect) -> None:
    live = state(connect, budget=5)
    queue_all(live, ["x"])
    live.initialise(MODELS, served=2, budget=9, now=NOW)
    selection = live.selection()
    assert (selection.picker.step, selection.served, selection.picker.budget) == (1, 0, 5)
    with pytest.raises(StoreError, match="holds state for the pool"):
        live.initialise(["x", "y"], served=0, budget=None, now=NOW)


def test_observe_counts_steps_and_queues_within_the_budget(connect: Connect) -> None:
    live = state(connect, budget=3)
    assert queue_all(live, ["i1", "i2"]) == 2
    assert queue_all(live, ["i3", "i4"]) == 1  # the budget allows one more
    agree = Batch(["i5"], np.array([[2, 2, 2]]), np.zeros((1, 2)))
    assert live.observe(new_op("t"), agree, 1e6, np.random.default_rng(0), NOW).queued == 0
    picker = live.selection().picker
    assert (picker.step, picker.queries) == (5, 3)
    assert live.item("i3") is not None and live.item("i4") is None


def test_an_id_queued_twice_counts_once(connect: Connect) -> None:
    live = state(connect, budget=2)
    assert queue_all(live, ["dup"]) == 1
    assert queue_all(live, ["dup", "new"]) == 1  # "dup" exists: not queued, not counted
    picker = live.selection().picker
    assert (picker.step, picker.queries) == (3, 2)


def test_a_repeated_observe_op_counts_nothing_twice(connect: Connect) -> None:
    live = state(connect)
    rng = np.random.default_rng(0)
    first = live.observe("same-batch", batch(["i1", "i2"]), 1e6, rng, NOW)
    again = live.observe("same-batch", batch(["i1", "i2"]), 1e6, rng, NOW)
    assert first == again and first.queued == 2
    assert (live.selection().picker.step, live.selection().picker.queries) == (2, 2)


def test_set_budget_changes_the_current_round_only(connect: Connect) -> None:
    live = state(connect, budget=1)
    queue_all(live, ["i1", "i2"])
    live.set_budget(new_op("b"), 3)
    assert queue_all(live, ["i3", "i4", "i5"]) == 2
    assert live.selection().picker.budget == 3
    live.start_round(new_op("r"), None, NOW)
    assert live.selection().picker.budget is None


def test_config_budget_applies_once_per_config_change(connect: Connect) -> None:
    live = state(connect)
    live.apply_config_budget(new_op("c"), 10)
    assert live.selection().picker.budget == 10
    live.set_budget(new_op("b"), 4)  # an operator's choice for this round
    live.apply_config_budget(new_op("c"), 10)  # a replica (re)starts with the same config
    assert live.selection().picker.budget == 4
    live.apply_config_budget(new_op("c"), 20)  # the deployed config changed
    assert live.selection().picker.budget == 20


def test_lease_hands_each_item_to_one_labeler_until_it_expires(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, [f"i{n}" for n in range(5)])
    first = live.lease(3, NOW + 1, 60.0, TTL)
    second = live.lease(10, NOW + 2, 60.0, TTL)
    assert [i.item_id for i in first] == ["i0", "i1", "i2"]
    assert [i.item_id for i in second] == ["i3", "i4"]
    assert first[0].predictions == (0, 1, 1) and first[0].instance == (0.0, 0.0)
    assert live.lease(10, NOW + 3, 60.0, TTL) == []
    again = live.lease(10, NOW + 61.5, 60.0, TTL)
    assert sorted(i.item_id for i in again) == ["i0", "i1", "i2"]
    assert live.queue_depth(NOW + 61.5, TTL) == 5


def test_queue_depth_and_lease_ignore_expired_items(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, ["old"], now=NOW)
    queue_all(live, ["new"], now=NOW + TTL)
    later = NOW + TTL + 1
    assert live.queue_depth(later, TTL) == 1
    assert [i.item_id for i in live.lease(10, later, 60.0, TTL)] == ["new"]
    assert live.maintain(later, TTL) >= 1  # the expired entry leaves the queue
    assert live.label("l", "old", 1, later, TTL).outcome == "unknown"
    assert live.selection().picker.losses == (0.0, 0.0, 0.0)


def test_label_outcomes(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, ["i1"])
    assert live.label("l0", "nope", 1, NOW, TTL).outcome == "unknown"
    assert live.label("l1", "i1", 1, NOW, TTL).outcome == "accepted"
    # the same op repeated (a retry after an unclear outcome) is told the truth
    assert live.label("l1", "i1", 1, NOW, TTL).outcome == "accepted"
    assert live.label("l2", "i1", 1, NOW, TTL).outcome == "duplicate"
    picker = live.selection().picker
    q = live.item("i1").q  # type: ignore[union-attr]
    np.testing.assert_allclose(picker.losses, loss_increments([0, 1, 1], 1, q))
    assert picker.labels == 1
    assert live.queue_depth(NOW, TTL) == 0 and live.lease(5, NOW, 60.0, TTL) == []


def test_a_new_round_resets_and_makes_old_items_stale(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, ["i1", "i2"])
    live.label("l", "i1", 0, NOW, TTL)
    assert live.start_round(new_op("r"), 4, NOW) == 1
    picker = live.selection().picker
    assert (picker.losses, picker.step, picker.labels, picker.queries) == ((0.0,) * 3, 0, 0, 0)
    assert (picker.round, picker.budget) == (1, 4)
    result = live.label("l2", "i2", 0, NOW, TTL)
    assert (result.outcome, result.detail) == ("unknown", "this item belongs to an earlier round")
    assert live.lease(5, NOW, 60.0, TTL) == [] and live.queue_depth(NOW, TTL) == 0


def test_start_round_racing_labels_and_observations_loses_nothing(connect: Connect) -> None:
    """Writers label and observe while rounds start: every accepted label is in the tally of
    its own round, and every observed item is counted in exactly one round."""
    setup = state(connect)
    rng = np.random.default_rng(3)
    ids = [f"i{n}" for n in range(60)]
    preds = rng.integers(0, 3, (60, 3)).tolist()
    setup.observe(new_op("t"), batch(ids, preds), 1e6, np.random.default_rng(0), NOW)
    queued = {i: setup.item(i) for i in ids if setup.item(i) is not None}
    accepted: list[tuple[str, int]] = []
    observed = [60]
    lock = threading.Lock()

    def labeler(order: list[str]) -> None:
        live = LiveState(connect())
        for item_id in order:
            label = int(rng.integers(0, 3))
            if live.label(new_op("l"), item_id, label, NOW, TTL).outcome == "accepted":
                with lock:
                    accepted.append((item_id, label))

    def observer() -> None:
        live = LiveState(connect())
        for n in range(20):
            live.observe(new_op("t"), batch([f"o{n}-{k}" for k in range(3)]), 1.0,
                         np.random.default_rng(n), NOW)  # fmt: skip
            with lock:
                observed[0] += 3

    def rounds() -> None:
        live = LiveState(connect())
        for _ in range(3):
            time.sleep(0.01)
            live.start_round(new_op("r"), None, NOW)

    order = list(queued)
    threads = [threading.Thread(target=labeler, args=(o,)) for o in (order, order[::-1])]
    threads += [threading.Thread(target=observer), threading.Thread(target=rounds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    backend = connect()
    tallies = [backend.read([f"tally:{r}"])[f"tally:{r}"].value["picker"] for r in range(4)]
    expected = np.zeros(3)
    for item_id, label in accepted:
        item = queued[item_id]
        assert item is not None and item.round == 0
        expected += loss_increments(item.predictions, label, item.q)
    np.testing.assert_allclose(tallies[0]["losses"], expected, rtol=1e-12)
    assert tallies[0]["labels"] == len(accepted) == len({i for i, _ in accepted})
    assert sum(t["step"] for t in tallies) == observed[0]
    assert all(t["labels"] == 0 for t in tallies[1:])


def test_concurrent_reconciles_swap_once(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, [f"i{n}" for n in range(6)])
    for n in range(6):  # label 1: models b and c right, a wrong
        live.label(new_op("l"), f"i{n}", 1, NOW, TTL)
    results: list[bool] = []

    def reconcile() -> None:
        results.append(LiveState(connect()).reconcile(0.0, None, NOW))

    threads = [threading.Thread(target=reconcile) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    selection = live.selection()
    assert Counter(results) == {True: 1, False: 5}
    assert selection.version == 1 and selection.served == 1 and len(selection.swaps) == 1


def test_a_swap_decided_on_stale_losses_never_lands(connect: Connect) -> None:
    from service.state import rules

    live = state(connect)
    queue_all(live, ["i1", "i2", "i3"])
    live.label(new_op("l"), "i1", 1, NOW, TTL)  # a is behind: a swap to b is due
    stale = live.selection(recent_swaps=0)
    txn, _ = rules.swap("stale", stale, 0.0, None, NOW)
    assert txn is not None
    live.label(new_op("l"), "i2", 0, NOW, TTL)  # the losses move on
    assert live.backend.commit(txn).status == "conflict"
    assert live.selection().version == 0


def test_counters_are_added_once_per_op(connect: Connect) -> None:
    live = state(connect)
    live.add_counters("flush-1", {"x": 2.0})
    live.add_counters("flush-1", {"x": 2.0})  # a repeat after a lost answer
    live.add_counters("flush-2", {"x": 1.0})
    assert live.counters() == {"x": 3.0}


def test_retention_is_bounded_on_every_store(connect: Connect) -> None:
    live, now = state(connect, item_s=1.0, log_cap=3), time.time()
    queue_all(live, ["i1"], now)
    live.label(new_op("l"), "i1", 1, now, TTL)
    for n_labels in (1, 3, 7, 15, 31):  # five swaps back and forth, each outvoting the last
        ids = [new_op("x") for _ in range(n_labels)]
        queue_all(live, ids, now)  # predictions a=0, b=1, c=1, all queued with q = 1
        target = 0 if live.selection().served != 0 else 1
        for item_id in ids:
            live.label(new_op("l"), item_id, target, now, TTL)
        assert live.reconcile(0.0, None, now)
    assert len(live.selection().swaps) == 3
    time.sleep(1.3)
    live.maintain(time.time(), TTL)
    assert live.item("i1") is None  # the record's retention passed
    assert live.label(new_op("l"), "i1", 1, now, TTL).outcome == "unknown"


@pytest.mark.parametrize("item_id", ["a:b:c", "{x}", "0" * 64, "x.y-z_1", "item:item"])
def test_item_id_edge_cases(connect: Connect, item_id: str) -> None:
    live = state(connect)
    assert queue_all(live, [item_id, "other"]) == 2
    assert {i.item_id for i in live.lease(5, NOW, 60.0, TTL)} == {item_id, "other"}
    assert live.label(new_op("l"), item_id, 1, NOW, TTL).outcome == "accepted"
    assert live.item(item_id).status == "labeled"  # type: ignore[union-attr]
    assert live.item("other").status == "pending"  # type: ignore[union-attr]
