"""Feedback: check a request's labels, apply each once through the live state.

Every label's write carries the op key `label:{request key}:{item id}`. The request key is
the client's `Idempotency-Key` header, or a fresh one: a client that repeats a request with
the same key after an unclear outcome (a 503) is told the truth, 'accepted' for a label
that was applied, and nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.http.schemas import Label
from service.http.schemas import LabelResult as LabelResultModel
from service.state.live import LabelResult, LiveState


def check_labels(
    labels: Sequence[Label], class_names: Sequence[str]
) -> tuple[list[tuple[str, int]], list[LabelResultModel]]:
    """Each label as (item id, class index), a label being a class index or a class name;
    and the results for labels that are neither, or repeat an item ([] if none)."""
    seen: set[str] = set()
    resolved, problems = [], []
    for label in labels:
        index, detail = class_index(label.label, class_names)
        if index is not None and label.item_id in seen:
            index, detail = None, "the same item appears twice in this request"
        if index is None:
            problems.append(
                LabelResultModel(item_id=label.item_id, outcome="invalid", detail=detail)
            )
            continue
        seen.add(label.item_id)
        resolved.append((label.item_id, index))
    return resolved, problems


def class_index(label: int | str, class_names: Sequence[str]) -> tuple[int | None, str]:
    """A label's class index (a class index or a class name), or None and why not."""
    if isinstance(label, str):
        if label in class_names:
            return class_names.index(label), ""
        return None, f"label {label!r} is not a class name ({_listed(class_names)})"
    if 0 <= label < len(class_names):
        return label, ""
    return None, f"label {label} is outside the classes 0..{len(class_names) - 1}"


def _listed(names: Sequence[str], most: int = 20) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def label_op(request_key: str, item_id: str) -> str:
    return f"label:{request_key}:{item_id}"


def apply_labels(
    live: LiveState,
    labels: Sequence[tuple[str, int]],
    request_key: str,
    now: float,
    ttl_s: float,
    done: list[LabelResult],
    by: str = "anonymous",
    delta: float | None = None,
    overlap_rate: float = 0.0,
    weight: float = 1.0,
    holder: str | None = None,
) -> None:
    """Apply labels in order, appending each result to `done` as it is known, so that a
    store failure part-way leaves the caller with the labels that were decided (`delta`:
    the elimination test's level, in the large-pool mode; `overlap_rate`: the share of items
    that wait for a second labeler; `weight`: what each label weighs, its labeler's
    reliability; `holder`: whose leases let the labels in, when not `by`'s)."""
    for item_id, label in labels:
        op = label_op(request_key, item_id)
        done.append(live.label(op, item_id, label, now, ttl_s, by, delta, overlap_rate, weight,
                               holder))  # fmt: skip
