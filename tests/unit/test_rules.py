"""The live state's rules as pure code: each transition, property-tested (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from picker import PickerState, loss_increments
from service.state import rules
from service.state.rules import Batch, Item, Meta, Selection, Tally
from service.state.store.base import Doc, Retention

NOW = 5_000.0
TTL = 100.0


def current(
    losses: tuple[float, ...] = (0.0, 0.0, 0.0),
    budget: int | None = None,
    served: int = 0,
    **picker: int,
) -> Selection:
    return Selection(
        Meta(tuple("abc"[: len(losses)]), served), Tally(PickerState(losses, budget=budget, **picker)),
        meta_version=4, tally_version=9,
    )  # fmt: skip


predictions = st.lists(st.lists(st.integers(0, 3), min_size=3, max_size=3), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(predictions, st.one_of(st.none(), st.integers(0, 10)), st.integers(0, 20),
       st.sets(st.integers(0, 29)), st.integers(0, 2**32))  # fmt: skip
def test_observe_counts_every_item_and_queues_within_the_budget(
    preds: list[list[int]], budget: int | None, queries: int, existing_rows: set[int], seed: int
) -> None:
    n = len(preds)
    ids = [f"i{k}" for k in range(n)]
    existing = {ids[k] for k in existing_rows if k < n}
    start = current(budget=budget, step=7, queries=queries)
    batch = Batch(ids, np.array(preds, dtype=np.int64), np.zeros((n, 2)))
    txn, observed = rules.observe_batch(
        "op", start, existing, batch, 1e6, np.random.default_rng(seed), NOW, Retention()
    )
    tally = Tally.from_dict(txn.put["tally:0"].value)  # type: ignore[arg-type]
    queued_ids = [k.removeprefix("item:") for k in txn.put if k.startswith("item:")]
    assert tally.picker.step == 7 + n
    queued = observed.queued
    assert tally.picker.queries == queries + queued == queries + len(queued_ids)
    if budget is not None:
        assert queued <= max(0, budget - queries)
    assert not set(queued_ids) & existing
    # only items on which the models disagree are queued (q > 0)
    for item_id in queued_ids:
        row = preds[ids.index(item_id)]
        assert len(set(row)) > 1
        item = Item.from_dict(item_id, txn.put[f"item:{item_id}"].value)  # type: ignore[arg-type]
        assert 0 < item.q <= 1 and item.status == "pending"
    assert txn.expect["tally:0"] == 9 and all(txn.expect[f"item:{i}"] == 0 for i in queued_ids)
    assert set(txn.push["queue:0"]) == set(queued_ids)


def item_doc(
    status: str = "pending", round_number: int = 0, created: float = NOW, **extra: object
) -> Doc:
    item = Item("x", round_number, 0.25, (0, 1, 1), (0.0,), created, status, **extra)  # type: ignore[arg-type]
    return Doc(3, item.to_dict())


def tally_doc(closed: bool = False, round_number: int = 0) -> Doc:
    return Doc(9, Tally(PickerState((1.0, 2.0, 3.0), round=round_number), closed).to_dict())


@given(st.integers(0, 2))
def test_a_label_adds_the_importance_weighted_loss_once(label: int) -> None:
    outcome, detail, txn = rules.apply_label("op", "x", item_doc(), tally_doc(), label, NOW, TTL)
    assert (outcome, detail) == ("accepted", None) and txn is not None
    tally = Tally.from_dict(txn.put["tally:0"].value)  # type: ignore[arg-type]
    expected = np.array([1.0, 2.0, 3.0]) + loss_increments([0, 1, 1], label, 0.25)
    np.testing.assert_allclose(tally.picker.losses, expected)
    assert tally.picker.labels == 1
    labeled = Item.from_dict("x", txn.put["item:x"].value)  # type: ignore[arg-type]
    assert (labeled.status, labeled.label, labeled.op) == ("labeled", label, "op")
    assert txn.expect == {"item:x": 3, "tally:0": 9} and txn.pull == {"queue:0": ["x"]}


def test_label_outcomes_for_every_kind_of_stale_or_repeated_label() -> None:
    def outcome(item: Doc | None, tally: Doc | None, op: str = "op", label: int = 1) -> str:
        return rules.apply_label(op, "x", item, tally, label, NOW, TTL)[0]

    labeled = item_doc("labeled", label=1, op="op")
    assert outcome(None, None) == "unknown"
    assert outcome(labeled, tally_doc()) == "accepted"  # the op that applied it, repeated
    assert outcome(labeled, tally_doc(), op="other") == "duplicate"
    assert outcome(labeled, tally_doc(), label=2) == "duplicate"
    assert outcome(item_doc(), tally_doc(closed=True)) == "unknown"
    assert outcome(item_doc(), None) == "unknown"
    assert outcome(item_doc(created=NOW - TTL - 1), tally_doc()) == "unknown"
    assert rules.apply_label("op", "x", labeled, tally_doc(), 1, NOW, TTL)[2] is None


def test_leasable() -> None:
    item = Item("x", 2, 0.5, (0, 1), (0.0,), NOW)
    assert rules.leasable(item, 2, NOW + TTL, TTL)
    assert not rules.leasable(item, 2, NOW + TTL + 1, TTL)
    assert not rules.leasable(item, 3, NOW, TTL)
    assert not rules.leasable(None, 2, NOW, TTL)
    labeled = Item("x", 2, 0.5, (0, 1), (0.0,), NOW, "labeled")
    assert not rules.leasable(labeled, 2, NOW, TTL)


@given(st.one_of(st.none(), st.integers(0, 100)))
def test_a_new_round_closes_the_old_one_and_starts_from_zero(budget: int | None) -> None:
    start = current((3.0, 1.0, 2.0), budget=5, step=40, queries=4, labels=3)
    txn, new_round = rules.new_round("op", start, budget, NOW)
    assert new_round == 1
    old = Tally.from_dict(txn.put["tally:0"].value)  # type: ignore[arg-type]
    fresh = Tally.from_dict(txn.put["tally:1"].value)  # type: ignore[arg-type]
    assert old.closed and old.picker == start.picker
    assert fresh.picker == PickerState((0.0, 0.0, 0.0), round=1, budget=budget)
    assert Meta.from_dict(txn.put["meta"].value).round == 1  # type: ignore[arg-type]
    assert txn.expect == {"meta": 4, "tally:0": 9, "tally:1": 0}
    assert txn.drop == ["queue:0", "pool:0", "labeled:0", "reviews:0"]
    assert old.selector == fresh.selector == "modelpicker" and old.posterior is None


@given(st.one_of(st.none(), st.integers(0, 100)), st.one_of(st.none(), st.integers(0, 100)))
def test_the_config_budget_applies_only_when_the_config_changed(
    applied: int | None, configured: int | None
) -> None:
    start = Selection(Meta(("a", "b"), 0, config_budget=applied),
                      Tally(PickerState((0.0, 0.0), budget=17)))  # fmt: skip
    txn = rules.apply_config_budget("op", start, configured)
    if configured == applied:
        assert txn is None  # a replica (re)start with the same config changes nothing
    else:
        assert txn is not None
        assert Tally.from_dict(txn.put["tally:0"].value).picker.budget == configured  # type: ignore[arg-type]
        assert Meta.from_dict(txn.put["meta"].value).config_budget == configured  # type: ignore[arg-type]


@settings(max_examples=200)
@given(st.lists(st.floats(0, 50), min_size=2, max_size=6), st.integers(0, 5),
       st.floats(0, 0.99), st.integers(1, 1000))  # fmt: skip
def test_a_swap_follows_the_best_past_the_margin_and_covers_what_it_read(
    losses: list[float], served: int, margin: float, step: int
) -> None:
    served %= len(losses)
    models = tuple(f"m{i}" for i in range(len(losses)))
    start = Selection(Meta(models, served, version=3), Tally(PickerState(tuple(losses), step=step)),
                      meta_version=11, tally_version=12)  # fmt: skip
    txn, record = rules.swap("op", start, margin, "trigger", NOW)
    weights = start.picker.weights()
    if txn is None:
        assert weights.max() - weights[served] <= margin
        return
    meta = Meta.from_dict(txn.put["meta"].value)  # type: ignore[arg-type]
    assert meta.served == int(np.argmax(weights)) and meta.version == 4
    assert weights[meta.served] - weights[served] > margin
    assert txn.expect == {"meta": 11, "tally:0": 12}
    assert record == txn.append["swaps"][0] and record["to_model"] == models[meta.served]


@given(st.lists(st.integers(0, 9), min_size=1, max_size=5),
       st.lists(st.floats(-1e6, 1e6), max_size=5), st.one_of(st.none(), st.integers(0, 9)))  # fmt: skip
def test_documents_survive_their_serialised_form(
    predictions: list[int], instance: list[float], label: int | None
) -> None:
    item = Item(
        "id",
        2,
        0.5,
        tuple(predictions),
        tuple(instance),
        NOW,
        "pending",
        label,
        "op",
        None,
        NOW + 9,
    )
    assert Item.from_dict("id", item.to_dict()) == item
    meta = Meta(("a", "b"), 1, 5, 2, label)
    assert Meta.from_dict(meta.to_dict()) == meta
    tally = Tally(
        PickerState((1.0, 2.0), step=3, round=2, budget=label), closed=True, started_at=NOW
    )
    assert Tally.from_dict(tally.to_dict()) == tally


def test_initialise_creates_everything_in_one_transaction_only_if_absent() -> None:
    txn = rules.initialise("op", ["a", "b"], 1, 7, NOW)
    assert txn.expect == {"meta": 0, "tally:0": 0} and set(txn.put) == {"meta", "tally:0"}
    meta = Meta.from_dict(txn.put["meta"].value)  # type: ignore[arg-type]
    assert (meta.served, meta.config_budget, meta.round) == (1, 7, 0)


def test_a_swap_waits_for_min_labels_since_the_last_one() -> None:
    """min_labels_between_swaps: the lead alone does not swap until enough labels arrived
    since the previous swap of this round; a new round counts its own labels."""

    def at(labels: int, meta: Meta) -> Selection:
        return Selection(meta, Tally(PickerState((5.0, 0.0), step=400, labels=labels)))

    fresh = Meta(("a", "b"), 0)
    assert rules.swap_target(at(2, fresh), 0.0, min_labels=3) == 0  # too few labels
    txn, record = rules.swap("op", at(3, fresh), 0.0, None, NOW, min_labels=3)
    assert txn is not None and record is not None and record["to_model"] == "b"
    after = Meta.from_dict(txn.put["meta"].value)  # type: ignore[arg-type]
    assert after.swapped_at == (0, 3) and after.served == 1
    back = replace(after, served=0)  # suppose the posterior now favours b again, served a
    assert rules.swap_target(at(5, back), 0.0, min_labels=3) == 0  # 2 labels since the swap
    assert rules.swap_target(at(6, back), 0.0, min_labels=3) == 1  # 3 since
    later_round = Selection(back, Tally(PickerState((5.0, 0.0), step=9, labels=3, round=1)))
    assert rules.swap_target(later_round, 0.0, min_labels=3) == 1  # counts this round's
    assert Meta.from_dict(after.to_dict()) == after
