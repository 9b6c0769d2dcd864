"""Labels and leases: who may hold an item, for how long, and what a label does to
the round's losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from picker import PickerState, apply_increments
from service.state.rules import labelers
from service.state.rules.documents import (
    ACCEPTED_COUNTER,
    COUNTERS,
    META,
    Item,
    LabelOutcome,
    Selection,
    Tally,
    audit_key,
    item_key,
    labeled_key,
    queue_key,
    tally_key,
)
from service.state.rules.elimination import label_increments, with_label
from service.state.store.base import Doc, Put, Txn


def leasable(item: Item | None, round_number: int, now: float, ttl_s: float) -> bool:
    """A labeler may get an item that is pending, of the current round and not expired."""
    return (
        item is not None
        and item.status == "pending"
        and item.round == round_number
        and item.created_at >= now - ttl_s
    )


def renew_leases(
    op: str,
    current: Selection,
    items: Mapping[str, Doc | None],
    now: float,
    lease_s: float,
    ttl_s: float,
    by: str = "anonymous",
) -> tuple[Txn | None, list[str]]:
    """Extend to now + lease_s, for `by`, the leases of items still waiting for a label in
    the current round that nobody else holds (a labeler still working on them), overlap
    items waiting for another label from `by` among them (`labelers.reviewable`); the
    others are returned as not renewed. The compare-and-set covers the round and every
    renewed item, so a label or a new round landing meanwhile makes the caller read
    again."""
    round_number = current.picker.round
    fresh: dict[str, float] = {}
    reviews: dict[str, float] = {}
    expect, put = {META: current.meta_version}, {}
    for item_id, doc in items.items():
        item = None if doc is None else Item.from_dict(item_id, doc.value)
        if doc is None or item is None or item.held_by_other(by, now):
            continue
        if labelers.reviewable(item, round_number, now, ttl_s, by):
            reviews[item_id] = now + lease_s
        elif leasable(item, round_number, now, ttl_s):
            fresh[item_id] = now + lease_s
        else:
            continue
        expect[item_key(item_id)] = doc.version
        held = replace(item, holder=by, lease_until=now + lease_s)
        put[item_key(item_id)] = Put(held.to_dict(), held.expire_at)
    renewed = sorted({**fresh, **reviews})
    if not renewed:
        return None, []
    push = {queue_key(round_number): fresh} if fresh else {}
    if reviews:
        push[labelers.reviews_key(round_number)] = reviews
    txn = Txn(op, expect=expect, put=put, push=push, result=renewed)
    return txn, renewed


def hold_items(
    op: str, docs: Mapping[str, Doc], ids: Sequence[str], by: str, until: float
) -> tuple[Txn | None, list[Item]]:
    """The items a lease just took (`ids`, whose documents are `docs`) record who holds
    them until when; an item gone meanwhile is left out."""
    held, put, expect = [], {}, {}
    for item_id in ids:
        doc = docs.get(item_key(item_id))
        if doc is None:
            continue
        value = {**doc.value, "holder": by, "lease_until": until}  # the document, as is
        held.append(Item.from_dict(item_id, value))
        put[item_key(item_id)] = Put(value, value["expire_at"])
        expect[item_key(item_id)] = doc.version
    if not held:
        return None, []
    return Txn(op, expect=expect, put=put), held


def lease_window(now: float, ttl_s: float) -> tuple[float, float]:
    """Queue scores a lease may take: available now, queued within the TTL."""
    return now - ttl_s, now


def apply_label(
    op: str,
    item_id: str,
    item: Doc | None,
    tally: Doc | None,
    label: int,
    now: float,
    ttl_s: float,
    by: str = "anonymous",
    delta: float | None = None,
    overlap_rate: float = 0.0,
    weight: float = 1.0,
    holder: str | None = None,
) -> tuple[LabelOutcome, str | None, Txn | None]:
    """Apply a label once: L += w [f_i(x) != y] / q, labels += 1, with w the label's
    weight (its labeler's reliability, `picker.labelers.label_weight`; kept in the audit
    entry, so that the losses can be made again exactly), the item leaves the queue,
    and the round's audit log records who gave it (`by`) and when. In a pool-based round
    the item also joins the round's labeled set (its belief is derived from the items).
    With `delta` (the large-pool mode), the label also moves the elimination test
    (`rules.elimination`); a candidate that left the round is not charged the label.

    A repeat by the op that applied it is answered 'accepted' (the truth for a retry after
    an unclear outcome); any other repeat is 'duplicate'. Stale items are 'unknown'. An
    item someone else holds a live lease on is 'leased' and keeps waiting for its holder's
    label (a label counts from its holder, or from anyone once no lease holds it).

    An item chosen for overlap (`overlap_rate`, `rules.labelers`) then waits for another
    labeler's label, which `labelers.review_label` records as evidence.

    `holder`: whose lease lets the label in, when it is not `by`'s own (a labeling tool
    with the bridge role leases items and labels them for its annotators)."""
    holder = by if holder is None else holder
    if item is None:
        return "unknown", "this item was never queued for labeling (or its record expired)", None
    stored = Item.from_dict(item_id, item.value)
    if stored.status == "labeled":
        if labelers.replayed(stored, op, label):
            return "accepted", None, None
        if stored.review_open:
            return labelers.review_label(op, stored, item, label, now, ttl_s, by, holder)
        return "duplicate", labelers.ALREADY, None
    round_tally = None if tally is None else Tally.from_dict(tally.value)
    if tally is None or round_tally is None or round_tally.closed:
        return "unknown", "this item belongs to an earlier round", None
    if stored.created_at < now - ttl_s:
        return "unknown", "this item expired (query_ttl_s)", None
    if stored.held_by_other(holder, now):
        return "leased", "another labeler holds this item's lease: the label was not applied", None
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"a label's weight is in [0, 1], not {weight}")
    increments = label_increments(round_tally, stored, label, weight)
    picker = apply_increments(round_tally.picker, increments)
    updated = with_label(round_tally, picker, stored, label, delta, now,
                         round_tally.model_names(()), weight)  # fmt: skip
    labeled = replace(stored, status="labeled", label=label, op=op, labeled_at=now,
                      labeled_by=by, weight=weight)  # fmt: skip
    push: dict[str, dict[str, float]] = (
        {labeled_key(stored.round): {item_id: float(updated.picker.labels)}}
        if round_tally.pooled else {}
    )  # fmt: skip
    if labelers.chosen_for_overlap(item_id, overlap_rate):
        labeled, reviews = labelers.open_review(labeled, now)
        push.update(reviews)
    txn = Txn(
        op,
        expect={item_key(item_id): item.version, tally_key(stored.round): tally.version},
        put={item_key(item_id): Put(labeled.to_dict(), labeled.expire_at),
             tally_key(stored.round): Put(updated.to_dict())},
        push=push,
        pull={queue_key(stored.round): [item_id]},
        add={COUNTERS: {ACCEPTED_COUNTER: 1.0},
             labelers.LABELER_COUNTS: {labelers.count_key("labels", by): 1.0}},
        append={audit_key(stored.round): [
            {"item_id": item_id, "label": label, "by": by, "at": now, "q": stored.q,
             "weight": weight, "instance": list(stored.instance)}]},
        result="accepted",
    )  # fmt: skip
    return "accepted", None, txn


def pool_lease_limit(picker: PickerState, limit: int, held: int) -> int:
    """A pool-based round's label budget: a labeler gets no more items than the labels the
    budget has left, less the items held by labelers now (each may become a label).
    ModelPicker's budget caps queries instead, as the stream is seen (`picker.cap_queries`)."""
    if picker.budget is None:
        return limit
    return min(limit, max(0, picker.budget - picker.labels - held))
