"""Labelers' evidence: overlap items and gold items, and what a label on them does.

**Overlap.** A share of the labeled items (`overlap_rate`) waits for a second label from
another labeler after the first; when the two disagree, for a third. Which items: those
whose id hashes below the rate (`chosen_for_overlap`), so every replica and every retry
decides alike, and no labeler can steer it. Only the first label counts as a selection
label (it moved the losses when it came); the later ones are evidence about the labelers.
An overlap item waits in `reviews:{round}` (scored like the label queue: by when it is
available), keeps its id, and is handed out like any other item, so a labeler cannot tell
it from a fresh one; the labeler who labeled it already never gets it again (a label from
them is a duplicate).

**Gold.** An admin's item with a known answer (`gold:{id}`, listed in the queue
`labelers:gold`), handed to each labeler at most once, mixed among their items at
`gold_rate`, with an id and a shape like any item's. An answer to it is evidence, never a
selection label, and it changes nothing else.

**Evidence.** Every label on an overlap item (the first one too, once a second came) and
every gold answer is one record of the log `labelers:evidence`: {item, by, label, gold,
at}, `gold` the known answer or -1. The counters `labelers:counts` keep per labeler the
selection labels given (`labels|{name}`), the overlap labels (`overlaps|{name}`) and the
gold answers (`gold|{name}`). The estimate of each labeler's accuracy is computed from the
log by `picker.labelers` (`service.state.labelers`); the store keeps only the evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from picker import PickerState, apply_increments
from service.state.rules.documents import (
    Item,
    LabelOutcome,
    Selection,
    Tally,
    item_key,
    labeled_key,
    queue_key,
    tally_key,
)
from service.state.rules.elimination import label_increments
from service.state.store.base import LABELERS_PREFIX, Doc, Put, Txn

EVIDENCE = f"{LABELERS_PREFIX}evidence"
LABELER_COUNTS = f"{LABELERS_PREFIX}counts"
GOLD_QUEUE = f"{LABELERS_PREFIX}gold"
NO_GOLD = -1
# One answer for a label the item cannot take from this labeler, whatever the item is (a
# first label's repeat, an overlap item's, a gold item's): the answer tells them nothing.
ALREADY = "this item already has a label; it counted once"
MOST_LABELS_PER_ITEM = 3  # the first, a second, and a third when those two disagree


def gold_key(gold_id: str) -> str:
    return f"gold:{gold_id}"


def gold_seen_key(labeler: str) -> str:
    """The gold items a labeler answered (so that none is handed to them twice)."""
    return f"goldseen:{labeler}"


def reviews_key(round_number: int) -> str:
    """The round's overlap items waiting for another label, scored by when available."""
    return f"reviews:{round_number}"


def count_key(kind: str, labeler: str) -> str:
    """A field of LABELER_COUNTS: kind is labels, overlaps or gold."""
    return f"{kind}|{labeler}"


def unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by `text`, uniform over texts (SHA-256's first 8 bytes)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def chosen_for_overlap(item_id: str, rate: float) -> bool:
    """Whether a labeled item waits for a second labeler: fixed by its id."""
    return rate > 0.0 and unit_hash(f"overlap:{item_id}") < rate


def evidence_record(item: str, by: str, label: int, gold: int, at: float) -> dict[str, Any]:
    return {"item": item, "by": by, "label": int(label), "gold": int(gold), "at": at}


@dataclass(frozen=True)
class Gold:
    """An item with a known answer: what a labeler sees of it, and the answer."""

    instance: tuple[float, ...]
    answer: int
    predictions: Mapping[str, int]  # each candidate's class when it was added
    created_at: float
    by: str

    def to_dict(self) -> dict[str, Any]:
        return {"instance": list(self.instance), "answer": self.answer,
                "predictions": dict(self.predictions), "created_at": self.created_at,
                "by": self.by}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gold:
        return cls(tuple(float(x) for x in data["instance"]), int(data["answer"]),
                   {str(k): int(v) for k, v in data["predictions"].items()},
                   float(data["created_at"]), str(data["by"]))  # fmt: skip


def add_gold(op: str, golds: Mapping[str, Gold]) -> Txn:
    """New gold items (fresh ids: each document must not exist yet)."""
    return Txn(
        op,
        expect={gold_key(i): 0 for i in golds},
        put={gold_key(i): Put(g.to_dict()) for i, g in golds.items()},
        push={GOLD_QUEUE: {i: g.created_at for i, g in golds.items()}},
        result=list(golds),  # in the order given
    )


def open_review(labeled: Item, now: float) -> tuple[Item, dict[str, dict[str, float]]]:
    """A first label that makes its item an overlap item: the item waits, with no holder,
    in the round's reviews queue. Returns the item and the queue push."""
    waiting = replace(labeled, review_open=True, holder=None, lease_until=None)
    return waiting, {reviews_key(labeled.round): {labeled.item_id: now}}


def labelers_of(item: Item) -> list[tuple[str, int]]:
    """Who labeled an item, with which class, in order: the first label, then reviews."""
    first = [] if item.labeled_by is None or item.label is None else [(item.labeled_by, item.label)]
    return first + [(str(r["by"]), int(r["label"])) for r in item.reviews]


def replayed(item: Item, op: str, label: int) -> bool:
    """This op gave this item this label already (a retry after an unclear outcome)."""
    if item.op == op and item.label == label:
        return True
    return any(r.get("op") == op and r.get("label") == label for r in item.reviews)


def review_label(
    op: str, item: Item, doc: Doc, label: int, now: float, ttl_s: float, by: str,
    holder: str | None = None,
) -> tuple[LabelOutcome, str | None, Txn | None]:  # fmt: skip
    """Another labeler's label on an overlap item: recorded as evidence (it moves no loss).
    The same labeler again: duplicate. After the second label the item is done if the two
    agree, else it waits for a third; after the third it is done."""
    if any(name == by for name, _ in labelers_of(item)):
        return "duplicate", ALREADY, None
    if item.created_at < now - ttl_s:
        return "unknown", "this item expired (query_ttl_s)", None
    if item.held_by_other(by if holder is None else holder, now):
        return "leased", "another labeler holds this item's lease: the label was not applied", None
    earlier = labelers_of(item)
    review = {"by": by, "label": int(label), "op": op, "at": now}
    labels = [c for _, c in earlier] + [int(label)]
    done = len(labels) >= MOST_LABELS_PER_ITEM or (len(labels) == 2 and labels[0] == labels[1])
    updated = replace(item, reviews=(*item.reviews, review), review_open=not done,
                      holder=None, lease_until=None)  # fmt: skip
    records = [evidence_record(item.item_id, name, c, NO_GOLD, now)
               for name, c in (earlier if len(earlier) == 1 else [])]  # fmt: skip
    records.append(evidence_record(item.item_id, by, label, NO_GOLD, now))
    counts = {count_key("overlaps", r["by"]): 1.0 for r in records}
    queue = reviews_key(item.round)
    txn = Txn(
        op,
        expect={item_key(item.item_id): doc.version},
        put={item_key(item.item_id): Put(updated.to_dict(), updated.expire_at)},
        pull={queue: [item.item_id]} if done else {},
        push={} if done else {queue: {item.item_id: now}},
        add={LABELER_COUNTS: counts},
        append={EVIDENCE: records},
        result="accepted",
    )
    return "accepted", None, txn


def gold_answer(
    op: str, gold_id: str, gold: Doc, seen: Doc | None, label: int, now: float, by: str,
    holder: tuple[str, Doc | None] | None = None,
) -> tuple[LabelOutcome, str | None, Txn | None]:  # fmt: skip
    """A labeler's answer to a gold item: one evidence record, once per labeler. It is
    answered like any accepted label (the labeler does not learn the item was gold).
    `holder`: the lease holder's name and seen-document when it is not `by` (a labeling
    tool answering for its annotators): the item counts as seen by the tool too, so that
    it is not handed to the tool again (the tool could not tell its annotators apart)."""
    answered = [] if seen is None else list(seen.value["ids"])
    if gold_id in answered:
        return "duplicate", ALREADY, None
    answer = Gold.from_dict(gold.value).answer
    expect = {gold_key(gold_id): gold.version,
              gold_seen_key(by): 0 if seen is None else seen.version}  # fmt: skip
    put = {gold_seen_key(by): Put({"ids": [*answered, gold_id]})}
    if holder is not None and holder[0] != by:
        name, tool_seen = holder
        tool_answered = [] if tool_seen is None else list(tool_seen.value["ids"])
        expect[gold_seen_key(name)] = 0 if tool_seen is None else tool_seen.version
        if gold_id not in tool_answered:
            put[gold_seen_key(name)] = Put({"ids": [*tool_answered, gold_id]})
    txn = Txn(
        op,
        expect=expect,
        put=put,
        add={LABELER_COUNTS: {count_key("gold", by): 1.0}},
        append={EVIDENCE: [evidence_record(f"gold:{gold_id}", by, label, answer, now)]},
        result="accepted",
    )
    return "accepted", None, txn


def reviewable(item: Item | None, round_number: int, now: float, ttl_s: float, by: str) -> bool:
    """An overlap item `by` may be handed: of the current round, not expired, still
    waiting, labeled by others only, and nobody else holds it."""
    return (
        item is not None
        and item.review_open
        and item.round == round_number
        and item.created_at >= now - ttl_s
        and all(name != by for name, _ in labelers_of(item))
        and not item.held_by_other(by, now)
    )


def gold_for(candidates: Sequence[str], seen: Doc | None) -> list[str]:
    """The gold items a labeler has not answered, among `candidates`."""
    answered = set() if seen is None else set(seen.value["ids"])
    return [g for g in candidates if g not in answered]


# ---- quarantine ---------------------------------------------------------------------------

QUARANTINE = f"{LABELERS_PREFIX}quarantine"  # {"names": [...]}: labelers whose labels count not
EVENTS = f"{LABELERS_PREFIX}events"  # quarantines and lifts: who, by whom, when, what moved
QUARANTINED = "your labels are quarantined by an admin: this label was not applied"


class QuarantineError(ValueError):
    """The current round's losses cannot be recomputed exactly (the message says why)."""


FLAGGED = "pickserve: flagged"  # who quarantined a labeler the evidence flagged


def quarantined(doc: Doc | None) -> set[str]:
    return set() if doc is None else set(doc.value["names"])


def cleared(doc: Doc | None) -> set[str]:
    """Labelers an admin let go (lifted their quarantine): not quarantined again for being
    flagged, until an admin quarantines them again."""
    return set() if doc is None else set(doc.value.get("cleared", ()))


def counting(entry: Mapping[str, Any], item: Item | None, barred: set[str]) -> bool:
    """An audited label counts in the round's losses while its item still carries it (a
    label the item lost to a quarantine, and then got from someone else, does not) and its
    labeler is not quarantined."""
    return (
        item is not None
        and item.status == "labeled"
        and item.labeled_by == entry["by"]
        and item.label == entry["label"]
        and entry["by"] not in barred
    )


def entry_weight(entry: Mapping[str, Any]) -> float:
    """The weight an audited label was applied with (1 for labels from before weights)."""
    return float(entry.get("weight", 1.0))


def replay_losses(tally: Tally, entries: Sequence[Mapping[str, Any]], items: Mapping[str, Item],
             barred: set[str]) -> PickerState:  # fmt: skip
    """The round's picker with its losses and label count made again from the audit: the
    labels that count, in the order they were applied, each added as it was when it came
    (`label_increments` with the weight it had, `apply_increments`): the same floats, to
    the last bit, as a round that never had the others."""
    picker = replace(tally.picker, losses=(0.0,) * tally.picker.n_models, labels=0)
    for entry in entries:
        item = items.get(str(entry["item_id"]))
        if counting(entry, item, barred):
            assert item is not None
            increments = label_increments(tally, item, int(entry["label"]), entry_weight(entry))
            picker = apply_increments(picker, increments)
    return picker


def set_quarantine(
    op: str,
    current: Selection,
    doc: Doc | None,
    entries: Sequence[Mapping[str, Any]],
    docs: Mapping[str, Doc],
    name: str,
    on: bool,
    now: float,
    by: str,
    audit_cap: int,
) -> tuple[Txn | None, dict[str, Any]]:
    """Quarantine `name` (on) or lift it. On: their labels of the current round stop
    counting, its items wait for a label again (from anyone else), and the losses are
    those of the round without them. Lifted: their labels whose items still wait count
    again (the items leave the queue), and the losses are made again the same way. Each
    change is one event in EVENTS. QuarantineError where the losses cannot be made again
    exactly: candidates eliminated or changed in the round, an audit
    log that dropped labels, an item record forgotten. `by` FLAGGED (the evidence flagged
    them) leaves alone a labeler an admin lifted the quarantine of."""
    tally = current.tally
    _check_replayable(current, entries, audit_cap)
    names, let_go = quarantined(doc), cleared(doc)
    answer = {"labeler": name, "quarantined": on, "items": 0}
    automatic = by == FLAGGED
    if on == (name in names) or (automatic and name in let_go):
        return None, {**answer, "quarantined": name in names, "labels": tally.picker.labels,
                      "changed": False}  # fmt: skip
    if not automatic:
        let_go = let_go - {name} if on else let_go | {name}
    barred = names | {name} if on else names - {name}
    round_number = current.picker.round
    items = {key.removeprefix("item:"): Item.from_dict(key.removeprefix("item:"), d.value)
             for key, d in docs.items()}  # fmt: skip
    moved: dict[str, Item] = {}
    if on:
        for item_id, item in items.items():
            if item.status == "labeled" and item.labeled_by == name and item.round == round_number:
                moved[item_id] = replace(
                    item, status="pending", label=None, op=None, labeled_at=None,
                    labeled_by=None, holder=None, lease_until=None, reviews=(), review_open=False,
                    weight=1.0,
                )  # fmt: skip
    else:
        for entry in entries:
            waiting = items.get(str(entry["item_id"]))
            if entry["by"] == name and waiting is not None and waiting.status == "pending":
                moved[waiting.item_id] = replace(
                    waiting, status="labeled", label=int(entry["label"]), op=f"restored:{op}",
                    labeled_at=entry["at"], labeled_by=name, holder=None, lease_until=None,
                    weight=entry_weight(entry),
                )  # fmt: skip
    gone = {str(e["item_id"]) for e in entries} - set(items)
    if gone:
        raise QuarantineError(f"{len(gone)} labeled items' records are forgotten "
                              "(item_retention_s): the losses cannot be made again")  # fmt: skip
    after = {**items, **moved}
    picker = replay_losses(tally, entries, after, barred)
    updated = replace(tally, picker=picker, relabeled=tally.relabeled + 1)
    queue = queue_key(round_number)
    # a pool-based round's labeled set follows: its belief is derived from it
    labeled_set = labeled_key(round_number) if tally.pooled and moved else None
    event = {"event": "quarantine" if on else "lift", "labeler": name, "by": by, "at": now,
             "round": round_number, "items": len(moved), "labels": picker.labels}  # fmt: skip
    txn = Txn(
        op,
        expect={QUARANTINE: 0 if doc is None else doc.version,
                tally_key(round_number): current.tally_version,
                **{key: d.version for key, d in docs.items()}},
        put={QUARANTINE: Put({"names": sorted(barred), "cleared": sorted(let_go)}),
             tally_key(round_number): Put(updated.to_dict()),
             **{item_key(i): Put(m.to_dict(), m.expire_at) for i, m in moved.items()}},
        # quarantined items wait in the queue (their overlap reviews are over); restored
        # ones leave it
        push={**({queue: {i: now for i in moved}} if on and moved else {}),
              **({labeled_set: {i: float(picker.labels) for i in moved}}
                 if labeled_set and not on else {})},
        pull={reviews_key(round_number): list(moved), **({} if on else {queue: list(moved)}),
              **({labeled_set: list(moved)} if labeled_set and on else {})}
        if moved else {},
        append={EVENTS: [event]},
        result={**answer, "items": len(moved), "labels": picker.labels, "changed": True},
    )  # fmt: skip
    return txn, txn.result  # type: ignore[return-value]


def _check_replayable(
    current: Selection, entries: Sequence[Mapping[str, Any]], audit_cap: int
) -> None:
    tally = current.tally
    if tally.out().any():
        raise QuarantineError(
            "candidates were eliminated in this round (the large-pool mode): its losses "
            "cannot be made again without them; start a new round"
        )
    if tally.candidates_changed or (
        tally.models is not None and list(tally.models) != list(current.meta.models)
    ):
        raise QuarantineError("the candidates changed in this round: start a new round")
    if len(entries) >= audit_cap:
        raise QuarantineError(f"the round's audit keeps its newest {audit_cap} labels only "
                              "(label_audit_cap): its losses cannot be made again")  # fmt: skip
