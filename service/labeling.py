"""Feedback: check each label, apply it once through the store, swap if the best changed.

Runs in a worker thread (blocking store calls); the math is picker's `loss_increments`,
`PickerState.weights` and `served_model`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from picker import loss_increments, served_model
from service.schemas import Label, LabelResult, RuntimeKnobs, SwapRecord
from service.store import StateStore, StoredSelection


def check_labels(labels: Sequence[Label], n_classes: int) -> list[LabelResult]:
    """Results for labels outside the class set or repeated in the request; [] if none."""
    seen: set[str] = set()
    problems = []
    for label in labels:
        if not 0 <= label.label < n_classes:
            detail = f"label {label.label} is outside the classes 0..{n_classes - 1}"
        elif label.item_id in seen:
            detail = "the same item appears twice in this request"
        else:
            seen.add(label.item_id)
            continue
        problems.append(LabelResult(item_id=label.item_id, outcome="invalid", detail=detail))
    return problems


def apply_labels(
    store: StateStore, labels: Sequence[Label], knobs: RuntimeKnobs
) -> list[LabelResult]:
    results = []
    for label in labels:
        now = time.time()
        item = store.item(label.item_id)
        if item is None:
            detail = "this item was never queued for labeling"
            results.append(LabelResult(item_id=label.item_id, outcome="unknown", detail=detail))
            continue
        increments = loss_increments(item.predictions, label.label, item.q).tolist()
        outcome = store.commit_label(item.item_id, item.round, increments, now, knobs.query_ttl_s)
        outcome_detail = {
            "accepted": None,
            "duplicate": "this item already has a label; it counted once",
            "unknown": "this item expired or belongs to an earlier round",
        }[outcome]
        results.append(LabelResult(item_id=label.item_id, outcome=outcome, detail=outcome_detail))
    return results


def swap_if_best_changed(
    store: StateStore, margin: float, trigger: str | None
) -> tuple[StoredSelection, bool]:
    """Serve the posterior's best (past the margin); compare-and-set, so replicas agree.
    Returns the selection and whether this call swapped."""
    while True:
        selection = store.selection()
        target = served_model(selection.picker.weights(), selection.served, margin)
        if target == selection.served:
            return selection, False
        names = selection.model_names
        record = SwapRecord(
            time=time.time(), from_model=names[selection.served], to_model=names[target],
            labels=selection.picker.labels, round=selection.picker.round, trigger_item=trigger,
        )  # fmt: skip
        if store.swap(selection.version, target, record.model_dump()):
            return store.selection(), True
