"""Elimination in the large-pool mode: a label moves every candidate's evidence against
the leader, and a candidate the test says is behind leaves the round (the test is the
picker's: `picker.elimination`). A candidate that left is never active, label-checked,
served or the best again in the round; its loss stays as it was when it left. The round
records who left, when, against which leader and on what wealth, so that `/v1/rounds`
shows it; the evidence lives in the round's tally, so every replica reads it alike and it
survives a restart of any of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from picker import PickerState, loss_increments
from picker.elimination import Evidence, eliminate_on_label
from service.state.rules.documents import Item, Tally


def label_increments(tally: Tally, item: Item, label: int, weight: float = 1.0) -> np.ndarray:
    """w [f_i(x) != y] / q for the candidates in the round, w the label's weight (its
    labeler's reliability, `picker.labelers.label_weight`; 1 leaves the floats as they
    were); 0 for those that left (their loss is frozen at their exit, and they were not
    evaluated on the item)."""
    increments = loss_increments(item.predictions, label, item.q)
    if weight != 1.0:
        increments = increments * weight
    return np.where(tally.out(), 0.0, increments)


def judge_label(
    before: Tally,
    after: PickerState,
    item: Item,
    label: int,
    delta: float,
    now: float,
    names: Sequence[str],
    weight: float = 1.0,
) -> tuple[Evidence, tuple[dict[str, object], ...]]:
    """The evidence after one label (`before`: the round as the label found it; `after`:
    its picker with the label applied), and the records of the candidates it took out. A
    label of weight w moves the test by w times its mistakes: still in [0, 1] (the bound
    the test needs), and the same w the losses took."""
    evidence = before.evidence or Evidence.start(before.picker.n_models)
    mistakes = (np.asarray(item.predictions) != label).astype(np.float64) * weight
    verdict = eliminate_on_label(evidence, mistakes, item.q, before.picker.loss_array,
                                 before.picker.step, delta)  # fmt: skip
    losses = after.loss_array
    records = tuple(
        {"model": names[i], "labels": after.labels, "step": after.step, "at": now,
         "item_id": item.item_id, "leader": names[verdict.leader],
         "wealth": math.exp(verdict.evidence.log_wealth[i]), "threshold": 1.0 / delta,
         "loss": float(losses[i]), "leader_loss": float(losses[verdict.leader])}
        for i in verdict.eliminated
    )  # fmt: skip
    return verdict.evidence, records


def with_label(
    before: Tally, picker: PickerState, item: Item, label: int, delta: float | None,
    now: float, names: Sequence[str], weight: float = 1.0,
) -> Tally:  # fmt: skip
    """The round after a label (of `weight`): its picker, and with `delta` (the
    large-pool mode of a ModelPicker round) the elimination's evidence and exits."""
    if delta is None or before.pooled:
        return replace(before, picker=picker)
    evidence, records = judge_label(before, picker, item, label, delta, now, names, weight)
    return replace(before, picker=picker, evidence=evidence,
                   eliminated=(*before.eliminated, *records))  # fmt: skip


def in_round_columns(tally: Tally) -> tuple[int, ...]:
    """The candidates still in the round, in pool order."""
    return tuple(int(i) for i in np.flatnonzero(~tally.out()))


def joined(tally: Tally) -> Evidence | None:
    """The evidence once a candidate joined the round (last in pool order)."""
    return None if tally.evidence is None else tally.evidence.joined()


def without(tally: Tally, removed: int) -> Evidence | None:
    """The evidence once candidate `removed` left the pool."""
    return None if tally.evidence is None else tally.evidence.without(removed)
