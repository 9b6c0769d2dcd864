"""The live state's rules for a pool-based round (selector: pool-based), as pure code."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picker import PickerState
from service.state import rules
from service.state.rules import Batch, Item, Meta, Selection, Tally
from service.state.store.base import Doc, Retention

NOW = 5_000.0
TTL = 100.0


def pooled(
    budget: int | None = None, served: int = 0, posterior: tuple[float, ...] | None = None,
    **picker: int,
) -> Selection:  # fmt: skip
    tally = Tally(PickerState((0.0, 0.0, 0.0), budget=budget, **picker), selector="pool-based")
    return Selection(Meta(("a", "b", "c"), served), tally, meta_version=4, tally_version=9,
                     posterior=posterior)  # fmt: skip


predictions = st.lists(st.lists(st.integers(0, 3), min_size=3, max_size=3), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(predictions, st.one_of(st.none(), st.integers(0, 10)), st.integers(0, 40),
       st.sets(st.integers(0, 29)), st.integers(10, 60))  # fmt: skip
def test_every_fresh_disagreement_item_joins_the_pool_whatever_the_budget(
    preds: list[list[int]], budget: int | None, queries: int, existing_rows: set[int], cap: int
) -> None:
    n = len(preds)
    ids = [f"i{k}" for k in range(n)]
    existing = {ids[k] for k in existing_rows if k < n}
    start = pooled(budget=budget, step=7, queries=queries)
    batch = Batch(ids, np.array(preds, dtype=np.int64), np.zeros((n, 2)))
    txn, observed = rules.observe_batch("op", start, existing, batch, 1.0,
                                        np.random.default_rng(0), NOW, Retention(),
                                        pool_max_items=cap)  # fmt: skip
    assert txn is not None
    eligible = [ids[k] for k in range(n) if len(set(preds[k])) > 1 and ids[k] not in existing]
    expected = eligible[: max(0, cap - queries)]  # the budget counts labels, not admissions
    queued = [k.removeprefix("item:") for k in txn.put if k.startswith("item:")]
    assert queued == expected and observed.queued == len(expected)
    for item_id in queued:
        assert Item.from_dict(item_id, txn.put[f"item:{item_id}"].value).q == 1.0  # type: ignore[arg-type]
    tally = Tally.from_dict(txn.put["tally:0"].value)  # type: ignore[arg-type]
    assert tally.picker.queries == queries + len(expected) and tally.picker.step == 7 + n
    assert tally.selector == "pool-based"
    if expected:
        assert set(txn.push["queue:0"]) == set(txn.push["pool:0"]) == set(expected)
    else:
        assert "pool:0" not in txn.push


def test_a_label_in_a_pool_based_round_joins_its_labeled_set() -> None:
    item = Item("x", 0, 1.0, (0, 1, 1), (0.0,), NOW)
    tally = Tally(PickerState((0.0, 0.0, 0.0), labels=4), selector="pool-based")
    outcome, _, txn = rules.apply_label("op", "x", Doc(3, item.to_dict()),
                                        Doc(9, tally.to_dict()), 1, NOW, TTL)  # fmt: skip
    assert outcome == "accepted" and txn is not None
    assert txn.push == {"labeled:0": {"x": 5.0}}  # scored by the label count after it
    assert Tally.from_dict(txn.put["tally:0"].value).picker.labels == 5  # type: ignore[arg-type]
    # a ModelPicker round keeps no such set
    plain = replace(tally, selector="modelpicker")
    _, _, txn = rules.apply_label("op", "x", Doc(3, item.to_dict()), Doc(9, plain.to_dict()), 1,
                                  NOW, TTL)  # fmt: skip
    assert txn is not None and txn.push == {}


def test_a_pool_based_round_closes_with_its_posterior_and_passes_its_selector_on() -> None:
    start = pooled(posterior=(0.1, 0.7, 0.2), labels=3)
    txn, _ = rules.new_round("op", start, None, NOW)
    assert txn is not None
    closed = Tally.from_dict(txn.put["tally:0"].value)  # type: ignore[arg-type]
    fresh = Tally.from_dict(txn.put["tally:1"].value)  # type: ignore[arg-type]
    assert closed.posterior == (0.1, 0.7, 0.2) and closed.weights().tolist() == [0.1, 0.7, 0.2]
    assert fresh.selector == "pool-based" and fresh.posterior is None
    assert {"pool:0", "labeled:0", "queue:0"} <= set(txn.drop)
    txn, _ = rules.new_round("op", start, None, NOW, selector="modelpicker")
    assert txn is not None
    assert Tally.from_dict(txn.put["tally:1"].value).selector == "modelpicker"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("posterior", "margin", "target"),
    [((0.1, 0.8, 0.1), 0.0, 1), ((0.4, 0.45, 0.15), 0.1, 0), ((1 / 3, 1 / 3, 1 / 3), 0.0, 0)],
)
def test_a_pool_based_swap_follows_the_belief_posterior(
    posterior: tuple[float, ...], margin: float, target: int
) -> None:
    view = pooled(posterior=posterior, labels=10)
    assert rules.swap_target(view, margin) == target
    assert view.best == int(np.argmax(posterior))
    # a view read without the belief claims nothing: the served model stays
    blind = replace(view, posterior=None)
    assert rules.swap_target(blind, 0.0) == 0 and blind.weights().tolist() == [1.0, 0.0, 0.0]
