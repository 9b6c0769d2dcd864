"""Overlap items, gold items and the labelers' evidence on every backend."""

from __future__ import annotations

import time

import numpy as np

from service.state.labelers import estimates
from service.state.live import LiveState, new_op
from service.state.rules import Batch
from service.state.rules import labelers as rules
from service.state.store.base import Retention
from tests.integration.contract.conftest import Connect, concurrently

MODELS = ["a", "b", "c"]
TTL, LEASE = 3600.0, 60.0
NOW = time.time()  # backends expire records by their own clock
ALL = 1.0  # overlap_rate: every labeled item waits for a second labeler


def state(connect: Connect) -> LiveState:
    live = LiveState(connect(Retention()), Retention())
    live.initialise(MODELS, served=0, budget=None, now=NOW)
    return live


def queue(live: LiveState, ids: list[str]) -> None:
    batch = Batch(ids, np.array([[0, 1, 1]] * len(ids), dtype=np.int64), np.zeros((len(ids), 2)))
    live.observe(new_op("t"), batch, 1e6, np.random.default_rng(0), NOW)


def lease(live: LiveState, by: str, limit: int = 10, gold_rate: float = 0.0) -> list[str]:
    rng = np.random.default_rng(1)
    return [i.item_id for i in live.lease(limit, NOW, LEASE, TTL, by, rng, gold_rate)]


def label(live: LiveState, item: str, cls: int, by: str, op: str | None = None) -> str:
    op = op or new_op("label")
    return live.label(op, item, cls, NOW, TTL, by, None, ALL).outcome


def test_an_overlap_item_goes_to_other_labelers_and_moves_no_loss(connect: Connect) -> None:
    live = state(connect)
    queue(live, ["i1", "i2"])
    assert sorted(lease(live, "ann")) == ["i1", "i2"]
    assert label(live, "i1", 0, "ann") == "accepted"
    losses = live.selection().picker.losses
    assert lease(live, "ann") == []  # ann labeled i1, and holds i2
    assert lease(live, "bob") == ["i1"]
    assert label(live, "i1", 0, "ann") == "duplicate"  # the first labeler again: 409
    assert label(live, "i1", 1, "bob") == "accepted"  # disagrees: a third is wanted
    assert live.selection().picker.losses == losses and live.selection().picker.labels == 1
    assert lease(live, "bob") == [] and lease(live, "ann") == []
    assert lease(live, "cid") == ["i1"]
    assert label(live, "i1", 0, "cid") == "accepted"
    assert lease(live, "dan") == []  # three labels: done
    records = live.backend.log(rules.EVIDENCE, 100)
    assert [(r["item"], r["by"], r["label"], r["gold"]) for r in records] == [
        ("i1", "ann", 0, -1), ("i1", "bob", 1, -1), ("i1", "cid", 0, -1)]  # fmt: skip
    counts = live.backend.counters(rules.LABELER_COUNTS)
    assert counts == {"labels|ann": 1, "overlaps|ann": 1, "overlaps|bob": 1, "overlaps|cid": 1}


def test_two_agreeing_labels_close_an_overlap_item_and_a_retry_counts_once(
    connect: Connect,
) -> None:
    live = state(connect)
    queue(live, ["i1"])
    lease(live, "ann")
    label(live, "i1", 1, "ann")
    lease(live, "bob")
    assert label(live, "i1", 1, "bob", op="same") == "accepted"
    assert label(live, "i1", 1, "bob", op="same") == "accepted"  # a retry: nothing twice
    assert lease(live, "cid") == []
    assert len(live.backend.log(rules.EVIDENCE, 100)) == 2


def test_concurrent_overlap_labels_lose_no_evidence(connect: Connect) -> None:
    live = state(connect)
    ids = [f"i{k}" for k in range(6)]
    queue(live, ids)
    lease(live, "first")
    for item in ids:
        assert label(live, item, 0, "first") == "accepted"
    others = [LiveState(connect(Retention()), Retention()) for _ in range(4)]

    def everyone_labels(k: int) -> list[str]:  # no leases: each labels every item
        return [label(others[k], item, k % 2, f"labeler{k}") for item in ids]

    outcomes = concurrently(everyone_labels, 4)
    accepted = sum(o == "accepted" for answers in outcomes for o in answers)
    records = live.backend.log(rules.EVIDENCE, 1000)
    assert len(records) == accepted + len(ids)  # each first label, once, and every accepted
    per_item = {i: [r for r in records if r["item"] == i] for i in ids}
    assert all(2 <= len(r) <= rules.MOST_LABELS_PER_ITEM for r in per_item.values())


def test_an_overlap_item_held_is_renewed_and_one_that_is_done_is_not(connect: Connect) -> None:
    """A labeling tool keeps an overlap item open while its second annotator works on it
    (POST /v1/queries/renew), and hears it is gone once the item needs no more labels."""
    live = state(connect)
    queue(live, ["i1"])
    lease(live, "tool")

    def by_tool(cls: int, annotator: str) -> str:
        return live.label(new_op("l"), "i1", cls, NOW, TTL, annotator, None, ALL,
                          holder="tool").outcome  # fmt: skip

    assert by_tool(0, "ann") == "accepted"  # the tool's first annotator
    assert lease(live, "tool") == ["i1"]  # back for another label
    later = NOW + LEASE - 1
    assert live.renew(new_op("renew"), ["i1"], later, LEASE, TTL, by="tool") == ["i1"]
    # renewed: nobody else gets it while the first lease would have ended
    assert live.lease(10, NOW + LEASE + 1, LEASE, TTL, "bob", np.random.default_rng(1)) == []
    assert live.renew(new_op("renew"), ["i1"], later, LEASE, TTL, by="ann") == []  # not hers
    assert by_tool(0, "cid") == "accepted"  # the tool's second annotator agrees: done
    assert live.renew(new_op("renew"), ["i1"], later + 1, LEASE, TTL, by="tool") == []


def gold(live: LiveState, answer: int) -> str:
    golds = {new_op("g").split(":")[1]: rules.Gold((1.0, 2.0), answer, {"a": 0}, NOW, "admin")}
    return live.add_gold(new_op("gold"), golds)[0]


def test_gold_items_are_mixed_in_answered_once_each_and_count_no_label(
    connect: Connect,
) -> None:
    live = state(connect)
    golds = [gold(live, 1) for _ in range(3)]
    assert lease(live, "ann", gold_rate=1.0) == []  # never gold alone: nothing to label
    queue(live, ["i1", "i2"])
    handed = lease(live, "ann", limit=5, gold_rate=1.0)
    assert set(handed) - set(golds) <= {"i1", "i2"} and set(handed) & set(golds)
    shown = live.lease(5, NOW, LEASE, TTL, "bob", np.random.default_rng(3), 1.0)
    assert all(i.q == 0.0 and i.predictions == (0, -2, -2) for i in shown)  # gold only now
    for gold_id in set(handed) & set(golds):
        assert label(live, gold_id, 0, "ann") == "accepted"
        assert label(live, gold_id, 1, "ann") == "duplicate"
    picker = live.selection().picker
    assert picker.labels == 0 and picker.losses == (0.0, 0.0, 0.0)
    again = lease(live, "ann", limit=5, gold_rate=1.0)
    assert not set(again) & set(handed) & set(golds)  # an answered gold item never again
    records = live.backend.log(rules.EVIDENCE, 100)
    assert {(r["by"], r["label"], r["gold"]) for r in records} == {("ann", 0, 1)}


def test_a_gold_item_a_tools_annotator_answered_is_not_handed_to_the_tool_again(
    connect: Connect,
) -> None:
    live = state(connect)
    golds = [gold(live, 1) for _ in range(2)]
    queue(live, ["i1", "i2", "i3"])
    handed = set(lease(live, "tool", limit=5, gold_rate=1.0)) & set(golds)
    assert handed
    # while no annotator answered them, they wait: the tool keeps their tasks open
    assert set(live.renew(new_op("renew"), list(handed), NOW, LEASE, TTL, by="tool")) == handed
    for gold_id in handed:
        outcome = live.label(new_op("l"), gold_id, 1, NOW, TTL, "ann@tool", None, ALL,
                             holder="tool").outcome  # fmt: skip
        assert outcome == "accepted"
    again = live.lease(5, NOW + LEASE + 1, LEASE, TTL, "tool", np.random.default_rng(5), 1.0)
    assert not {i.item_id for i in again} & handed  # the tool's annotator answered them
    assert live.renew(new_op("renew"), list(handed), NOW, LEASE, TTL, by="tool") == []  # gone
    records = live.backend.log(rules.EVIDENCE, 100)
    assert {r["by"] for r in records} == {"ann@tool"}  # the answer is the annotator's


def test_gold_ids_come_back_in_the_order_given(connect: Connect) -> None:
    live = state(connect)
    golds = {gold_id: rules.Gold((1.0,), answer, {}, NOW, "admin")
             for gold_id, answer in (("zz", 0), ("aa", 1), ("mm", 2))}  # fmt: skip
    assert live.add_gold(new_op("gold"), golds) == ["zz", "aa", "mm"]
    assert live.gold_count() == 3


def test_the_estimate_finds_the_labeler_who_is_often_wrong() -> None:
    rng = np.random.default_rng(7)
    records = []
    for item in range(300):
        truth = int(rng.integers(3))
        for name, accuracy in (("ann", 0.95), ("bob", 0.95), ("eve", 0.5)):
            right = rng.random() < accuracy
            given = truth if right else int((truth + rng.integers(1, 3)) % 3)
            gold = truth if item % 10 == 0 else rules.NO_GOLD
            records.append(rules.evidence_record(f"i{item}", name, given, gold, NOW))
    found = estimates(records, 3)
    assert found["eve"].accuracy < 0.6 < 0.9 < min(found["ann"].accuracy, found["bob"].accuracy)
    assert found["eve"].flagged(0.7) and not found["ann"].flagged(0.7)


def test_overlap_is_chosen_by_id_at_the_rate() -> None:
    chosen = [rules.chosen_for_overlap(f"item-{k}", 0.1) for k in range(20_000)]
    assert abs(np.mean(chosen) - 0.1) < 0.01  # 4.7 standard errors
    assert rules.chosen_for_overlap("x", 0.1) == rules.chosen_for_overlap("x", 0.1)
    assert not any(rules.chosen_for_overlap(f"item-{k}", 0.0) for k in range(100))


def test_a_slot_meant_for_gold_gets_an_item_when_there_is_no_gold(connect: Connect) -> None:
    live = state(connect)
    queue(live, ["i1", "i2"])
    assert sorted(lease(live, "ann", limit=2, gold_rate=1.0)) == ["i1", "i2"]


def labeled_round(live: LiveState, skip: str | None = None) -> list[tuple[str, int, str]]:
    """300 items with mixed predictions observed at gamma 5 (q in (0, 1]), every queued
    one labeled by ann, bob and eve in turn (a label per item, at random); `skip`: that
    labeler's labels are left out. Returns (item, label, labeler) in order."""
    rng = np.random.default_rng(17)
    ids = [f"x{k}" for k in range(300)]
    batch = Batch(ids, rng.integers(0, 3, (300, 3)), np.zeros((300, 2)))
    live.observe("observe-once", batch, 5.0, np.random.default_rng(4), NOW)
    queued = [i for i in ids if live.item(i) is not None]
    given = [(i, int(rng.integers(3)), LABELERS[k % 3]) for k, i in enumerate(queued)]
    for item, cls, by in given:
        if by != skip:
            assert live.label(f"op-{item}", item, cls, NOW, TTL, by).outcome == "accepted"
    return given


LABELERS = ("ann", "bob", "eve")


def test_quarantine_makes_the_losses_those_without_the_labeler_and_lifting_restores_them(
    connect: Connect,
) -> None:
    from service.state.store.memory import MemoryBackend

    live = state(connect)
    given = labeled_round(live)
    before = live.selection().picker
    without = LiveState(MemoryBackend())
    without.initialise(MODELS, served=0, budget=None, now=NOW)
    labeled_round(without, skip="eve")
    expected = without.selection().picker
    assert 0 < expected.labels < before.labels and len({q for q in before.losses}) > 1
    answer = live.set_quarantine(new_op("q"), "eve", True, NOW, "ops")
    after = live.selection().picker
    assert after.losses == expected.losses and after.labels == expected.labels  # to the bit
    eves = sorted(i for i, _, by in given if by == "eve")
    assert answer["items"] == len(eves) and live.quarantined() == {"eve"}
    assert lease(live, "eve") == [] and label(live, eves[0], 0, "eve") == "unknown"
    assert sorted(lease(live, "ann", limit=500)) == eves  # back in the queue, for others
    assert live.selection().picker == after  # refused and leased: nothing changed
    live.set_quarantine(new_op("q"), "eve", False, NOW, "ops")
    assert live.selection().picker.losses == before.losses  # to the bit
    assert live.selection().picker.labels == before.labels
    assert lease(live, "bob", limit=500) == []  # restored: no longer waiting
    events = live.backend.log(rules.EVENTS, 10)
    assert [(e["event"], e["labeler"], e["items"]) for e in events] == [
        ("quarantine", "eve", len(eves)), ("lift", "eve", len(eves))]  # fmt: skip


def test_an_item_relabeled_during_a_quarantine_keeps_its_new_label(connect: Connect) -> None:
    live = state(connect)
    given = labeled_round(live)
    eves = [i for i, _, by in given if by == "eve"]
    live.set_quarantine(new_op("q"), "eve", True, NOW, "ops")
    lease(live, "bob", limit=500)
    assert label(live, eves[0], 2, "bob") == "accepted"
    live.set_quarantine(new_op("q"), "eve", False, NOW, "ops")
    item = live.item(eves[0])
    assert item is not None and (item.label, item.labeled_by) == (2, "bob")
    assert live.selection().picker.labels == len(given)  # each item counted once


def test_a_flagged_labeler_an_admin_let_go_is_not_quarantined_again(connect: Connect) -> None:
    live = state(connect)
    labeled_round(live)
    automatic = live.set_quarantine(new_op("q"), "eve", True, NOW, rules.FLAGGED)
    assert automatic["changed"] and live.quarantined() == {"eve"}
    live.set_quarantine(new_op("q"), "eve", False, NOW, "ops")  # the admin lets her go
    again = live.set_quarantine(new_op("q"), "eve", True, NOW, rules.FLAGGED)
    assert not again["changed"] and live.quarantined() == set()
    assert live.set_quarantine(new_op("q"), "eve", True, NOW, "ops")["changed"]  # an admin may
    assert live.quarantined() == {"eve"}


WEIGHTS = {"ann": 1.0, "bob": 0.625, "eve": 0.3}


def weighted_round(
    live: LiveState, skip: str | None = None
) -> tuple[np.ndarray, list[tuple[str, int, str]]]:
    """As `labeled_round`, each label applied with its labeler's weight (WEIGHTS); the
    instance of item k is [k, 0], so a candidate added later can be told each item's row.
    Returns the predictions and (item, label, labeler) in order."""
    rng = np.random.default_rng(23)
    ids = [f"w{k}" for k in range(300)]
    predictions = rng.integers(0, 3, (300, 3))
    rows = np.column_stack([np.arange(300), np.zeros(300)])
    live.observe("observe-once", Batch(ids, predictions, rows), 5.0, np.random.default_rng(4), NOW)
    queued = [i for i in ids if live.item(i) is not None]
    given = [(i, int(rng.integers(3)), LABELERS[k % 3]) for k, i in enumerate(queued)]
    for item, cls, by in given:
        if by != skip:
            outcome = live.label(f"op-{item}", item, cls, NOW, TTL, by, weight=WEIGHTS[by])
            assert outcome.outcome == "accepted"
    return predictions, given


def test_weighted_labels_move_the_losses_by_their_weight_and_quarantine_stays_exact(
    connect: Connect,
) -> None:
    """Each label adds w [p != y] / q (the weight of its labeler), in the order applied;
    a quarantine gives, to the bit, the losses of the same weighted round without the
    labeler, and the lift those before; the audit shows each label's weight."""
    from service.state.store.memory import MemoryBackend

    live = state(connect)
    predictions, given = weighted_round(live)
    before = live.selection().picker
    expected = np.zeros(3)
    for item, cls, by in given:
        stored = live.item(item)
        assert stored is not None
        k = int(item[1:])
        expected += WEIGHTS[by] * (predictions[k] != cls) / stored.q
    np.testing.assert_allclose(before.losses, expected, rtol=1e-12)
    unweighted = sum((predictions[int(i[1:])] != c) / live.item(i).q for i, c, _ in given)  # type: ignore[union-attr]
    assert not np.allclose(before.losses, unweighted)  # the weights did something
    audit = live.audit(before.round, 1000)
    assert audit is not None
    assert [e["weight"] for e in audit] == [WEIGHTS[by] for _, _, by in given]

    without = LiveState(MemoryBackend())
    without.initialise(MODELS, served=0, budget=None, now=NOW)
    weighted_round(without, skip="eve")
    live.set_quarantine(new_op("q"), "eve", True, NOW, "ops")
    assert live.selection().picker.losses == without.selection().picker.losses  # to the bit
    live.set_quarantine(new_op("q"), "eve", False, NOW, "ops")
    assert live.selection().picker.losses == before.losses  # to the bit


def test_a_candidate_added_after_a_quarantine_is_charged_the_labels_that_count(
    connect: Connect,
) -> None:
    """A candidate added while a labeler is quarantined gets the loss of the labels that
    count, with their weights, in their order: one predicting what "b" predicts has b's
    loss to the bit (before this, the audit's extra labels made the addition fail)."""
    live = state(connect)
    predictions, _ = weighted_round(live)
    live.set_quarantine(new_op("q"), "eve", True, NOW, "ops")
    picker = live.selection().picker
    answer = live.add_candidate(new_op("add"), {"name": "d", "sklearn": "d.joblib"},
                                lambda x: predictions[x[:, 0].astype(int), 1], NOW)  # fmt: skip
    assert answer["labels"] == picker.labels
    losses = live.selection().picker.losses
    assert losses[3] == losses[1] == picker.losses[1]


def test_a_quarantine_that_cannot_be_exact_is_refused_and_changes_nothing(
    connect: Connect,
) -> None:
    """Candidates changed in the round: the losses cannot be made again from the audit
    (the added one was backfilled, not charged label by label), so QuarantineError."""
    import pytest

    live = state(connect)
    labeled_round(live)
    live.add_candidate(new_op("add"), {"name": "d", "sklearn": "d.joblib"},
                       lambda x: np.zeros(len(x), dtype=int), NOW)  # fmt: skip
    before = live.selection().picker
    with pytest.raises(rules.QuarantineError, match="candidates changed"):
        live.set_quarantine(new_op("q"), "eve", True, NOW, "ops")
    assert live.selection().picker == before and live.quarantined() == set()
