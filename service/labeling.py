"""Feedback: check a request's labels, apply each once through the live state.

Every label's write carries the op key `label:{request key}:{item id}`. The request key is
the client's `Idempotency-Key` header, or a fresh one: a client that repeats a request with
the same key after an unclear outcome (a 503) is told the truth, 'accepted' for a label
that was applied, and nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.live import LabelResult, LiveState
from service.schemas import Label
from service.schemas import LabelResult as LabelResultModel


def check_labels(labels: Sequence[Label], n_classes: int) -> list[LabelResultModel]:
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
        problems.append(LabelResultModel(item_id=label.item_id, outcome="invalid", detail=detail))
    return problems


def label_op(request_key: str, item_id: str) -> str:
    return f"label:{request_key}:{item_id}"


def apply_labels(
    live: LiveState,
    labels: Sequence[Label],
    request_key: str,
    now: float,
    ttl_s: float,
    done: list[LabelResult],
) -> None:
    """Apply labels in order, appending each result to `done` as it is known, so that a
    store failure part-way leaves the caller with the labels that were decided."""
    for label in labels:
        op = label_op(request_key, label.item_id)
        done.append(live.label(op, label.item_id, label.label, now, ttl_s))
