"""The rules for candidates added to or removed from the pool at run time, as pure functions.

**Adding** a candidate keeps the round. Its loss is computed from the round's labeled
items, which the label audit keeps with each item's features and q:
`L_new = Σ [f_new(x) ≠ y] / q`, summed in the order the labels were applied, which is
exactly the loss it would have had in the pool from the start of the round, on the same
labeled items with the same q (Karimi et al., AISTATS 2021: the importance-weighted loss
of ModelPicker). The other candidates' losses, the step and the counts are untouched: the
cost grows with the round's labels and its queue, not with the pool. Items still waiting
in the queue get the new candidate's prediction, so their labels update it too.

**Removing** a candidate drops its own entry (loss, predictions, canary, bar) and nothing
else; if it was served, the posterior's best among the rest is served (a swap).

One caveat, also in the README: items on which every earlier candidate agreed were asked
with q = 0 and never labeled, so a newcomer's mistakes on such items are not counted.

Both record the change in meta (`added`: the new candidate's pool file entry; `removed`:
its name), so that the pool file can follow the store (`service.models.roster.follow`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from picker import PickerState, loss_increments
from service.models.roster import RosterError
from service.state.rules import (
    COUNTERS,
    META,
    SWAPS,
    SWAPS_COUNTER,
    Item,
    Meta,
    Selection,
    change_record,
    item_key,
    tally_key,
)
from service.state.rules.elimination import joined, without
from service.state.store.base import Doc, Put, Txn

MIN_CANDIDATES = 2
REMOVED_KEPT = 1000  # names of removed candidates meta remembers (the newest)


def check_addition(models: Sequence[str], name: str) -> None:
    if name in models:
        raise RosterError(f"candidate {name!r} is already in the pool")


def check_removal(models: Sequence[str], name: str) -> None:
    if name not in models:
        raise RosterError(f"unknown candidate {name!r}; candidates: {', '.join(models)}")
    if len(models) <= MIN_CANDIDATES:
        raise RosterError("a pool keeps at least two candidates: add one before removing")


def backfilled_loss(labeled: Sequence[Mapping[str, Any]], predictions: Sequence[int]) -> float:
    """Σ w [prediction ≠ label] / q over the round's labels (w: the weight each was
    applied with), in the order they were applied (the same float operations the store
    made for the other candidates)."""
    loss = 0.0
    for entry, predicted in zip(labeled, predictions, strict=True):
        increment = loss_increments([int(predicted)], int(entry["label"]), float(entry["q"]))
        weight = float(entry.get("weight", 1.0))
        loss += float(increment[0] * weight if weight != 1.0 else increment[0])
    return loss


def _picker_with(picker: PickerState, losses: Sequence[float]) -> PickerState:
    return replace(picker, losses=tuple(float(x) for x in losses))


def add_candidate(
    op: str,
    current: Selection,
    entry: Mapping[str, Any],
    labeled: Sequence[Mapping[str, Any]],
    labeled_predictions: Sequence[int],
    pending: Mapping[str, tuple[Doc, int]],
    now: float,
) -> Txn:
    """The candidate `entry` (its pool file entry) joins the round: its backfilled loss,
    its prediction on every pending item (`pending`: item id -> (its document, the new
    candidate's class)). The compare-and-set covers meta, the round's tally and every
    pending item."""
    name = str(entry["name"])
    check_addition(current.meta.models, name)
    loss = backfilled_loss(labeled, labeled_predictions)
    picker = _picker_with(current.picker, (*current.picker.losses, loss))
    meta = replace(current.meta, models=(*current.meta.models, name),
                   added={**current.meta.added, name: dict(entry)},
                   removed=tuple(r for r in current.meta.removed if r != name))  # fmt: skip
    round_key = tally_key(picker.round)
    tally = replace(current.tally, picker=picker, models=meta.models,
                    evidence=joined(current.tally), candidates_changed=True)  # fmt: skip
    put = {META: Put(meta.to_dict()), round_key: Put(tally.to_dict())}
    expect = {META: current.meta_version, round_key: current.tally_version}
    for item_id, (doc, predicted) in pending.items():
        item = Item.from_dict(item_id, doc.value)
        grown = replace(item, predictions=(*item.predictions, int(predicted)))
        put[item_key(item_id)] = Put(grown.to_dict(), item.expire_at)
        expect[item_key(item_id)] = doc.version
    record = change_record(
        "candidate_added",
        name,
        name,
        picker,
        now,
        reason=f"backfilled loss {loss:.6g} from {len(labeled)} labels",
    )
    answer = {"candidates": list(meta.models), "served_model": meta.models[meta.served],
              "loss": loss, "labels": len(labeled)}  # fmt: skip
    return Txn(op, expect=expect, put=put, append={SWAPS: [record]}, result=answer)


def _without(index: int, removed: int) -> int:
    return index - 1 if index > removed else index


def _reindexed(
    meta: Meta, removed: int
) -> tuple[Mapping[str, Any] | None, tuple[int, tuple[int, ...]] | None]:
    """The canary and the bar with candidate `removed` gone: one involving it ends, the
    others' indices shift down."""
    canary = meta.canary
    if canary is not None and removed in (int(canary["to"]), int(canary["from"])):
        canary = None
    elif canary is not None:
        canary = {**canary, "to": _without(int(canary["to"]), removed),
                  "from": _without(int(canary["from"]), removed)}  # fmt: skip
    barred = meta.barred
    if barred is not None:
        barred = (barred[0], tuple(_without(m, removed) for m in barred[1] if m != removed))
    return canary, barred


def remove_candidate(
    op: str, current: Selection, removed: int, pending: Mapping[str, Doc], now: float
) -> Txn:
    """Drop candidate `removed` from the pool, its loss and its column of every pending
    item; a canary or a bar involving it ends; if it was served, the posterior's best of
    the others is served from now on."""
    meta, tally = current.meta, current.tally
    check_removal(meta.models, meta.models[removed])
    losses = [x for i, x in enumerate(tally.picker.losses) if i != removed]
    picker = _picker_with(tally.picker, losses)
    models = tuple(m for i, m in enumerate(meta.models) if i != removed)
    canary, barred = _reindexed(meta, removed)
    name = meta.models[removed]
    records = [change_record("candidate_removed", name, name, picker, now)]
    served, version = _without(meta.served, removed), meta.version
    if meta.served == removed:
        served, version = int(np.argmax(np.delete(current.weights(), removed))), version + 1
        records.append(change_record("swap", name, models[served], picker, now, via="removal"))
    monitor = tally.monitor
    if monitor is not None:
        monitor = (None if monitor.model == removed
                   else replace(monitor, model=_without(monitor.model, removed)))  # fmt: skip
    new_meta = replace(meta, models=models, served=served, version=version, canary=canary,
                       barred=barred,
                       added={k: v for k, v in meta.added.items() if k != name},
                       removed=(*meta.removed, name)[-REMOVED_KEPT:])  # fmt: skip
    round_key = tally_key(picker.round)
    put = {META: Put(new_meta.to_dict()),
           round_key: Put(replace(tally, picker=picker, monitor=monitor, models=models,
                                  evidence=without(tally, removed),
                                  candidates_changed=True).to_dict())}  # fmt: skip
    expect = {META: current.meta_version, round_key: current.tally_version}
    for item_id, doc in pending.items():
        item = Item.from_dict(item_id, doc.value)
        kept = tuple(p for i, p in enumerate(item.predictions) if i != removed)
        put[item_key(item_id)] = Put(replace(item, predictions=kept).to_dict(), item.expire_at)
        expect[item_key(item_id)] = doc.version
    add = {COUNTERS: {SWAPS_COUNTER: 1.0}} if meta.served == removed else {}
    return Txn(op, expect=expect, put=put, append={SWAPS: records}, add=add,
               result=models[served])  # fmt: skip
