"""A pool-based round's live state on every backend: admission, the belief's order of the
queue, the budget in labels, replicas that agree, and faults that lose no label."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from picker.pool_based import PoolBased
from service.state.live import LiveState, new_op
from service.state.rules import Batch
from service.state.store.base import Retention, StoreError
from service.state.store.redis_store import RedisBackend
from tests.integration.contract.conftest import Connect, concurrently
from tests.redis_server import RedisServer

MODELS = ["a", "b", "c", "d"]
TTL = 3600.0
LEASE = 60.0


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four models of accuracy 0.55-0.85 on 3 classes; (predictions, truth)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    right = rng.random((n, 4)) < np.array([0.55, 0.65, 0.75, 0.85])
    wrong = (truth[:, None] + rng.integers(1, 3, (n, 4))) % 3
    return np.where(right, truth[:, None], wrong), truth


def pool_state(connect: Connect, preds: np.ndarray, budget: int | None = None) -> LiveState:
    live = LiveState(connect(), n_classes=3)
    live.initialise(MODELS, served=0, budget=budget, now=time.time(), selector="pool-based")
    ids = [f"i{k}" for k in range(len(preds))]
    live.observe(new_op("t"), Batch(ids, preds, np.zeros((len(ids), 2))), 1.0,
                 np.random.default_rng(0), time.time())  # fmt: skip
    return live


def test_disagreement_items_join_the_pool_and_the_queue_goes_in_the_beliefs_order(
    connect: Connect,
) -> None:
    preds, truth = synthetic(120)
    live = pool_state(connect, preds)
    disagree = [k for k in range(len(preds)) if len(set(preds[k])) > 1]
    assert live.selection().picker.queries == len(disagree)  # agreement items stay out
    labels: dict[int, int] = {}
    for _ in range(12):  # one item at a time: each lease is re-ranked after the last label
        now = time.time()
        (item,) = live.lease(1, now, LEASE, TTL)
        expected = PoolBased(preds[disagree], 3, labels=dict(labels))
        scores = expected.item_scores()
        row = disagree.index(int(item.item_id[1:]))
        assert scores[row] == pytest.approx(scores.max(), rel=1e-9)  # the belief's top item
        label = int(truth[int(item.item_id[1:])])
        assert live.label(new_op("l"), item.item_id, label, now, TTL).outcome == "accepted"
        labels[row] = label
    selection = live.selection()
    assert selection.picker.labels == 12 and sum(selection.weights()) == pytest.approx(1.0)


def test_the_budget_counts_labels_and_leases_never_give_one_item_twice(connect: Connect) -> None:
    preds, truth = synthetic(200, seed=1)
    live = pool_state(connect, preds, budget=9)
    assert live.selection().picker.queries > 9  # admissions are not capped by the budget
    now = time.time()

    def labeler(_: int) -> list[str]:
        return [i.item_id for i in LiveState(connect(), n_classes=3).lease(4, now, LEASE, TTL)]

    handed = [i for batch in concurrently(labeler, 3) for i in batch]
    assert len(handed) == len(set(handed)) and 0 < len(handed) <= 12
    # labels for what was handed out, then leases again: never past 9 labels in all
    for item_id in handed:
        live.label(new_op("l"), item_id, int(truth[int(item_id[1:])]), now, TTL)
    labeled = live.selection().picker.labels
    more = live.lease(20, time.time(), LEASE, TTL)
    assert len(more) == max(0, 9 - labeled)


def test_every_replica_derives_the_same_belief_from_the_store(connect: Connect) -> None:
    preds, truth = synthetic(150, seed=2)
    live = pool_state(connect, preds)
    for _ in range(4):
        for item in live.lease(5, time.time(), LEASE, TTL):
            live.label(new_op("l"), item.item_id, int(truth[int(item.item_id[1:])]), time.time(),
                       TTL)  # fmt: skip
    first = live.selection()
    other = LiveState(connect(), n_classes=3).selection()  # a fresh replica: reads the items
    assert first.posterior == other.posterior and first.picker.labels == 20
    assert first.posterior is not None and max(first.posterior) > 1 / 4


def test_labels_until_the_pool_is_exhausted_identify_the_best(connect: Connect) -> None:
    preds, truth = synthetic(60, seed=3)
    live = pool_state(connect, preds)
    while leased := live.lease(10, time.time(), LEASE, TTL):
        for item in leased:
            live.label(new_op("l"), item.item_id, int(truth[int(item.item_id[1:])]), time.time(),
                       TTL)  # fmt: skip
    selection = live.selection()
    correct = (preds == truth[:, None]).sum(axis=0)
    assert selection.picker.labels == selection.picker.queries  # every pool item labeled
    assert selection.best == int(np.argmax(correct)) and max(selection.weights()) == 1.0
    assert live.reconcile(0.0, None, time.time()) and live.selection().served == selection.best


def test_redis_kill_9_loses_no_acknowledged_label_of_a_pool_based_round(tmp_path: Path) -> None:
    preds, truth = synthetic(80, seed=4)
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:

        def connect(retention: Retention | None = None) -> RedisBackend:
            return RedisBackend.from_url(server.url, "pool-kill", retention)

        live = pool_state(connect, preds)  # type: ignore[arg-type]
        acknowledged = []
        for item in live.lease(15, time.time(), LEASE, TTL):
            answer = live.label(new_op("l"), item.item_id, int(truth[int(item.item_id[1:])]),
                                time.time(), TTL)  # fmt: skip
            assert answer.outcome == "accepted"
            acknowledged.append(item.item_id)
        before = live.selection()
        server.stop(kill=True)
        with pytest.raises(StoreError):
            live.selection()
        server.start()
        fresh = LiveState(connect(), n_classes=3)  # a replica started after the restart
        after = fresh.selection()
        assert after.picker.labels == len(acknowledged) == 15
        assert after.posterior == before.posterior
        assert all(fresh.item(i).status == "labeled" for i in acknowledged)  # type: ignore[union-attr]
    finally:
        server.stop()


def test_a_selector_change_applies_in_place_before_any_item_else_in_a_new_round(
    connect: Connect,
) -> None:
    live = LiveState(connect(), n_classes=3)
    live.initialise(MODELS, served=0, budget=None, now=time.time())
    assert live.apply_config_selector("pool-based", time.time()) == 0  # nothing queued yet
    assert live.selection().tally.selector == "pool-based"
    preds, _ = synthetic(30, seed=5)
    live.observe(new_op("t"), Batch([f"i{k}" for k in range(30)], preds, np.zeros((30, 2))), 1.0,
                 np.random.default_rng(0), time.time())  # fmt: skip
    assert live.apply_config_selector("pool-based", time.time()) == 0  # the same: no-op
    assert live.apply_config_selector("modelpicker", time.time()) == 1  # items queued
    # a second replica seeing the same change starts no second round
    assert LiveState(connect()).apply_config_selector("modelpicker", time.time()) == 1
    (closed, current) = live.rounds(2)[1], live.rounds(2)[0]
    assert current.tally.selector == "modelpicker" and closed.tally.selector == "pool-based"
    assert closed.tally.closed and closed.tally.posterior is not None
    assert current.tally.started_by == {"reason": "selector", "selector": "modelpicker"}


def test_a_candidate_added_to_a_pool_based_round_joins_every_item_of_its_pool(
    connect: Connect,
) -> None:
    preds, truth = synthetic(80, seed=6)
    live = pool_state(connect, preds)
    for item in live.lease(10, time.time(), LEASE, TTL):
        live.label(new_op("l"), item.item_id, int(truth[int(item.item_id[1:])]), time.time(), TTL)
    before = live.selection()
    assert before.posterior is not None and len(before.posterior) == 4

    def classes_of(features: np.ndarray) -> np.ndarray:  # the newcomer: class 0 on all
        return np.zeros(len(features), dtype=np.int64)

    live.add_candidate(new_op("add"), {"name": "e", "sklearn": "e.joblib"}, classes_of, time.time())
    after = live.selection()
    assert after.picker.labels == 10 and after.posterior is not None
    assert len(after.posterior) == 5
    pool = live.pending_items(after)
    assert len(pool) == after.picker.queries  # labeled items too, all with five predictions
    assert all(doc.value["predictions"][4] == 0 for doc in pool.values())
    assert sum(doc.value["status"] == "labeled" for doc in pool.values()) == 10
    live.remove_candidate(new_op("rm"), "e", time.time())
    kept = live.pending_items(live.selection()).values()
    assert all(len(doc.value["predictions"]) == 4 for doc in kept)
    assert live.selection().posterior == before.posterior  # the same items, labels, belief


def test_weighted_labels_reach_the_belief_at_their_labelers_accuracy(connect: Connect) -> None:
    """A label applied with weight w (weigh_labels) is, to the pool-based belief, a label
    from a labeler of accuracy (w (C - 1) + 1) / C: the same queue order, in every replica
    that reads the items, as PoolBased built with those accuracies; a label of weight 1
    is the truth."""
    preds, truth = synthetic(120, seed=3)
    live = pool_state(connect, preds)
    disagree = [k for k in range(len(preds)) if len(set(preds[k])) > 1]
    labels: dict[int, int] = {}
    accuracy: dict[int, float] = {}
    for step in range(10):
        now = time.time()
        (item,) = live.lease(1, now, LEASE, TTL, by="ann" if step % 2 else "eve")
        weight = 1.0 if step % 2 else 0.4  # eve's labels weigh 0.4: accuracy 0.6 on 3 classes
        row = disagree.index(int(item.item_id[1:]))
        expected = PoolBased(preds[disagree], 3, labels=dict(labels), label_accuracy=accuracy)
        scores = expected.item_scores()
        assert scores[row] == pytest.approx(scores.max(), rel=1e-9)  # the weighted belief's top
        label = int(truth[int(item.item_id[1:])])
        by = "ann" if step % 2 else "eve"
        outcome = live.label(new_op("l"), item.item_id, label, now, TTL, by, weight=weight)
        assert outcome.outcome == "accepted"
        labels[row] = label
        if weight != 1.0:
            accuracy[row] = (weight * 2 + 1.0) / 3
    other = LiveState(connect(), n_classes=3)  # another replica's view
    belief = other.beliefs.belief(other.selection(recent_swaps=0, belief=False))
    assert belief.selector is not None
    ids = [f"i{k}" for k in disagree]  # the belief's rows, by item id
    shown = {belief.ids[row]: a for row, a in belief.selector.label_accuracy.items()}
    assert shown == pytest.approx({ids[row]: a for row, a in accuracy.items()})
    given = {belief.ids[row]: label for row, label in belief.selector.labels.items()}
    assert given == {ids[row]: label for row, label in labels.items()}


def test_a_quarantine_in_a_pool_based_round_is_exact_and_every_replica_sees_it(
    connect: Connect,
) -> None:
    """Quarantine in a pool-based round: the losses and the belief are those of the same
    round without the labeler's labels (a replica that read the belief before sees the
    new one), her items wait again; the lift gives back the losses and the belief before."""
    from service.state.store.memory import MemoryBackend

    preds, truth = synthetic(150, seed=4)

    def labeled(live: LiveState, skip: str | None = None) -> None:
        ids = sorted(live.backend.members("pool:0", 10_000), key=lambda i: int(i[1:]))
        for k, item_id in enumerate(ids[:30]):
            by = ("ann", "bob", "eve")[k % 3]
            if by != skip:
                label = int(truth[int(item_id[1:])])
                live.label(f"op-{item_id}", item_id, label, time.time(), TTL, by)

    live, reader = pool_state(connect, preds), None
    labeled(live)
    reader = LiveState(connect(), n_classes=3)  # another replica, which reads the belief now
    before_belief = reader.beliefs.belief(reader.selection(recent_swaps=0, belief=False))
    before = live.selection().picker
    without = pool_state(lambda: MemoryBackend(), preds)
    labeled(without, skip="eve")
    expected = without.selection().picker
    answer = live.set_quarantine(new_op("q"), "eve", True, time.time(), "ops")
    assert answer["changed"] and answer["items"] == 10
    after = live.selection().picker
    assert after.losses == expected.losses and after.labels == expected.labels == 20
    seen = reader.beliefs.belief(reader.selection(recent_swaps=0, belief=False))
    fresh = without.beliefs.belief(without.selection(recent_swaps=0, belief=False))
    assert seen.selector is not None and fresh.selector is not None
    assert seen.labels == 20 and seen.posterior == fresh.posterior
    assert {seen.ids[r]: c for r, c in seen.selector.labels.items()} == {
        fresh.ids[r]: c for r, c in fresh.selector.labels.items()}  # fmt: skip
    live.set_quarantine(new_op("q"), "eve", False, time.time(), "ops")
    assert live.selection().picker.losses == before.losses
    again = reader.beliefs.belief(reader.selection(recent_swaps=0, belief=False))
    assert again.labels == 30 and again.posterior == before_belief.posterior
