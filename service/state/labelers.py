"""Labelers' evidence in the live state: overlap items handed to another labeler, gold
items, and each labeler's accuracy estimated from the stored evidence (`rules.labelers`
says what is stored; `picker.labelers` is the estimate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from picker.labelers import NO_GOLD, LabelerEstimate, estimate_labelers
from service.models.pool_file import NOT_EVALUATED
from service.state.core import LiveCore, new_op
from service.state.rules import Item, Selection, audit_key, item_key
from service.state.rules import labelers as rules
from service.state.store.base import Txn

REVIEW_SCAN = 100  # overlap items looked at per lease (the oldest first)
GOLD_SCAN = 10_000  # gold items a lease chooses from
EVIDENCE_KEPT = 20_000  # evidence records (the newest) an estimate reads
NOTHING = LabelerEstimate(0, 0, 0, 0.5, 0.0, 1.0)  # the estimate of no evidence


@dataclass(frozen=True)
class LabelerReport:
    """One labeler as GET /v1/labelers shows them."""

    name: str
    labels: int
    overlaps: int
    gold: int
    estimate: LabelerEstimate


class Labelers(LiveCore):
    # the estimates last computed, with the evidence counts they were computed at
    _estimates: tuple[Any, dict[str, LabelerEstimate]] | None = None
    _own_estimates: tuple[Any, dict[str, LabelerEstimate]] | None = None

    def _lease_reviews(
        self, current: Selection, limit: int, now: float, lease_s: float, ttl_s: float,
        by: str,
    ) -> list[Item]:  # fmt: skip
        """Overlap items of the current round `by` may label (others labeled them, and
        nobody holds them), the longest waiting first, claimed for lease_s. Entries whose
        item no longer waits leave the queue."""
        if limit <= 0:
            return []
        round_number = current.picker.round
        queue = rules.reviews_key(round_number)
        ids = self.backend.members(queue, REVIEW_SCAN)
        if not ids:
            return []
        docs = self.backend.read([item_key(i) for i in ids])
        wanted, dead = [], []
        for item_id in ids:
            doc = docs.get(item_key(item_id))
            item = None if doc is None else Item.from_dict(item_id, doc.value)
            if item is None or not item.review_open or item.created_at < now - ttl_s:
                dead.append(item_id)
            elif rules.reviewable(item, round_number, now, ttl_s, by):
                wanted.append(item_id)
        if dead:
            self.backend.commit(Txn(new_op("prune"), pull={queue: dead}))
        claimed = self.backend.claim(queue, wanted[:limit], now - ttl_s, now, now + lease_s)
        return [Item.from_dict(i, docs[item_key(i)].value) for i in claimed]

    def gold_items(
        self, current: Selection, by: str, wanted: int, now: float, rng: np.random.Generator
    ) -> list[Item]:
        """Up to `wanted` gold items `by` has not answered, chosen at random, shaped as
        the round's items (q 0: the picker did not ask for them)."""
        ids = rules.gold_for(self.backend.members(rules.GOLD_QUEUE, GOLD_SCAN),
                             self._read(rules.gold_seen_key(by)))  # fmt: skip
        if not ids or wanted <= 0:
            return []
        chosen = [ids[int(i)] for i in rng.choice(len(ids), min(wanted, len(ids)), False)]
        docs = self.backend.read([rules.gold_key(i) for i in chosen])
        items = []
        for gold_id in chosen:
            doc = docs.get(rules.gold_key(gold_id))
            if doc is None:
                continue
            gold = rules.Gold.from_dict(doc.value)
            predictions = tuple(gold.predictions.get(m, NOT_EVALUATED)
                                for m in current.meta.models)  # fmt: skip
            items.append(Item(gold_id, current.picker.round, 0.0, predictions, gold.instance,
                              now))  # fmt: skip
        return items

    def gold_unanswered(self, ids: Sequence[str], by: str) -> list[str]:
        """Those of `ids` that are gold items `by` has not answered."""
        docs = self.backend.read([rules.gold_key(i) for i in ids])
        found = [i for i in ids if rules.gold_key(i) in docs]
        return rules.gold_for(found, self._read(rules.gold_seen_key(by))) if found else []

    def add_gold(self, op: str, golds: Mapping[str, rules.Gold]) -> list[str]:
        """Store gold items under fresh ids; returns the ids (a repeat of `op`, the same)."""
        committed = self.backend.commit(rules.add_gold(op, golds))
        if committed.status == "conflict":  # a fresh id taken: not expected of uuid4
            raise ValueError("a gold item's id is taken")
        return list(committed.result)

    def set_quarantine(self, op: str, name: str, on: bool, now: float, by: str) -> dict[str, Any]:
        """Quarantine `name` (on) or lift it (`rules.labelers.set_quarantine`): the current
        round's losses made again from its audit. QuarantineError if they cannot be."""

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0, belief=False)
            round_number = current.picker.round
            cap = self.retention.audit_cap
            entries = self.backend.log(audit_key(round_number), cap)
            # every label of the round is in its audit (the same step appended it), and
            # set_quarantine refuses an audit that reached its cap
            ids = {str(e["item_id"]) for e in entries}
            docs = self.backend.read([item_key(i) for i in sorted(ids)])
            return rules.set_quarantine(op, current, self._read(rules.QUARANTINE), entries, docs,
                                        name, on, now, by, cap)  # fmt: skip

        committed, answer = self._transact(attempt)
        return dict(committed.result if committed.status == "replayed" else answer)

    def quarantined(self) -> set[str]:
        return rules.quarantined(self._read(rules.QUARANTINE))

    def gold_count(self) -> int:
        return self.backend.count(rules.GOLD_QUEUE, -np.inf)

    def own_report(self, name: str, n_classes: int, before: float) -> LabelerReport:
        """`name`'s counts, and the estimate of their accuracy from the evidence recorded
        at `before` or earlier (what a labeler is shown of themselves: the figure never
        moves on an item they just labeled). The overlaps and gold counts are those the
        estimate used."""
        records = self.backend.log(rules.EVIDENCE, EVIDENCE_KEPT)
        older = [r for r in records if float(r["at"]) <= before]
        key = (len(older), older[-1]["at"] if older else None, n_classes)
        cached = self._own_estimates
        if cached is None or cached[0] != key:
            cached = self._own_estimates = (key, estimates(older, n_classes))
        counts = self.backend.counters(rules.LABELER_COUNTS)
        labels = int(counts.get(rules.count_key("labels", name), 0))
        found = cached[1].get(name, NOTHING)
        return LabelerReport(name, labels, found.overlaps, found.gold, found)

    def labeler_reports(self, n_classes: int) -> list[LabelerReport]:
        """Every labeler who gave a label, with their counts and the estimate of their
        accuracy from the newest EVIDENCE_KEPT evidence records."""
        counts = self.backend.counters(rules.LABELER_COUNTS)
        # The evidence grows exactly when an overlap or gold count does (one transaction):
        # the estimate is computed again only then.
        key = (tuple(sorted((k, v) for k, v in counts.items() if not k.startswith("labels|"))),
               n_classes)  # fmt: skip
        cached = self._estimates
        if cached is None or cached[0] != key:
            records = self.backend.log(rules.EVIDENCE, EVIDENCE_KEPT)
            cached = self._estimates = (key, estimates(records, n_classes))
        return reports(counts, cached[1])


def estimates(records: Sequence[Mapping[str, Any]], n_classes: int) -> dict[str, LabelerEstimate]:
    """Each labeler's accuracy from evidence records (`rules.labelers`), by name."""
    labelers = sorted({str(r["by"]) for r in records})
    if not labelers:
        return {}
    index = {name: j for j, name in enumerate(labelers)}
    items: dict[str, int] = {}
    gold: list[int] = []
    pairs: dict[tuple[int, int], int] = {}  # (item, labeler) -> label: the first kept
    for record in records:
        item = items.setdefault(str(record["item"]), len(items))
        if item == len(gold):
            gold.append(int(record.get("gold", NO_GOLD)))
        pairs.setdefault((item, index[str(record["by"])]), int(record["label"]))
    found = estimate_labelers(
        [i for i, _ in pairs], [j for _, j in pairs], list(pairs.values()), gold,
        n_classes, len(labelers),
    )  # fmt: skip
    return dict(zip(labelers, found, strict=True))


def reports(
    counts: Mapping[str, float], found: Mapping[str, LabelerEstimate]
) -> list[LabelerReport]:
    """Every labeler in the counts or the estimates, by name; one without evidence has the
    estimate of no evidence (its interval is all of [0, 1])."""
    names = sorted({key.split("|", 1)[1] for key in counts} | set(found))
    return [
        LabelerReport(name, int(counts.get(rules.count_key("labels", name), 0)),
                      int(counts.get(rules.count_key("overlaps", name), 0)),
                      int(counts.get(rules.count_key("gold", name), 0)),
                      found.get(name, NOTHING))
        for name in names
    ]  # fmt: skip
