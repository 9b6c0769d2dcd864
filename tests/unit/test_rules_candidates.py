"""The rules for candidates added or removed at run time (`service.state.rules.candidates`)
and for the selector of a round, as pure code: the transactions they return."""

from __future__ import annotations

import pytest

from picker import PickerState
from service.models.roster import RosterError
from service.state import rules
from service.state.rules import Item, Meta, Selection, Tally
from service.state.rules.candidates import add_candidate, remove_candidate
from service.state.store.base import Doc

NOW = 1_000.0


def state(
    served: int = 0, losses: tuple[float, ...] = (3.0, 1.0, 2.0), **meta: object
) -> Selection:
    tally = Tally(PickerState(losses, step=40, queries=6, labels=4), models=("a", "b", "c"))
    return Selection(Meta(("a", "b", "c"), served, **meta), tally, meta_version=3,  # type: ignore[arg-type]
                     tally_version=8)  # fmt: skip


def pending_item(item_id: str, predictions: tuple[int, ...]) -> Doc:
    item = Item(item_id, predictions=predictions, q=0.5, round=0, expire_at=NOW + 50,
                instance=(0.0, 1.0), created_at=NOW)  # fmt: skip
    return Doc(11, item.to_dict())


LABELED = [{"label": 1, "q": 0.5}, {"label": 0, "q": 0.25}, {"label": 2, "q": 1.0}]


def test_an_added_candidate_gets_its_backfilled_loss_and_a_prediction_on_every_pending_item() -> (
    None
):
    pending = {"x": (pending_item("x", (0, 1, 1)), 2)}
    txn = add_candidate("op", state(), {"name": "d", "sklearn": "models/d.joblib"}, LABELED,
                        [1, 1, 1], pending, NOW)  # fmt: skip
    meta = Meta.from_dict(txn.put["meta"].value)  # type: ignore[arg-type]
    tally = Tally.from_dict(txn.put["tally:0"].value)  # type: ignore[arg-type]
    assert meta.models == ("a", "b", "c", "d") and meta.added["d"]["sklearn"] == "models/d.joblib"
    assert tally.picker.losses == (3.0, 1.0, 2.0, 0.0 + 4.0 + 1.0)  # wrong on 2 labels: 1/.25 + 1/1
    assert (tally.picker.step, tally.picker.labels) == (40, 4)
    assert Item.from_dict("x", txn.put["item:x"].value).predictions == (0, 1, 1, 2)  # type: ignore[arg-type]
    assert txn.expect == {"meta": 3, "tally:0": 8, "item:x": 11}
    (record,) = txn.append["swaps"]
    assert record["kind"] == "candidate_added" and record["from_model"] == record["to_model"] == "d"
    with pytest.raises(RosterError, match="already in the pool"):
        add_candidate("op", state(), {"name": "b"}, [], [], {}, NOW)


def test_removing_the_served_candidate_serves_the_best_of_the_rest() -> None:
    pending = {"x": pending_item("x", (0, 1, 2))}
    txn = remove_candidate("op", state(served=1), 1, pending, NOW)
    meta = Meta.from_dict(txn.put["meta"].value)  # type: ignore[arg-type]
    assert meta.models == ("a", "c") and meta.removed == ("b",)
    assert meta.models[meta.served] == "c" and meta.version == 1  # loss 2 beats 3
    assert Item.from_dict("x", txn.put["item:x"].value).predictions == (0, 2)  # type: ignore[arg-type]
    kinds = [(r["kind"], r["from_model"], r["to_model"]) for r in txn.append["swaps"]]
    assert kinds == [("candidate_removed", "b", "b"), ("swap", "b", "c")]
    assert txn.add == {"counters": {"swaps": 1.0}} and txn.result == "c"


def test_removing_another_candidate_keeps_the_served_one_by_name() -> None:
    txn = remove_candidate("op", state(served=2), 0, {}, NOW)
    meta = Meta.from_dict(txn.put["meta"].value)  # type: ignore[arg-type]
    assert meta.models[meta.served] == "c" and meta.version == 0 and txn.add == {}
    with pytest.raises(RosterError, match="at least two"):
        small = Selection(Meta(("a", "b"), 0), Tally(PickerState((0.0, 0.0))), 1, 1)
        remove_candidate("op", small, 0, {}, NOW)


def test_a_round_takes_another_selector_in_place_only_before_it_queued_anything() -> None:
    fresh = Selection(Meta(("a", "b"), 0), Tally(PickerState((0.0, 0.0))), 1, 2)
    txn, in_place = rules.switch_selector("op", fresh, "pool-based")
    assert in_place and txn is not None
    assert Tally.from_dict(txn.put["tally:0"].value).selector == "pool-based"  # type: ignore[arg-type]
    assert rules.switch_selector("op", fresh, "modelpicker") == (None, True)  # runs it already
    assert rules.switch_selector("op", state(), "pool-based") == (None, False)  # a new round
