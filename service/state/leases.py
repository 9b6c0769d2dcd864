"""Leases and labels: handing items out, renewing, applying a label once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from service.state import rules
from service.state.core import (
    LabelResult,
    new_op,
)
from service.state.labelers import Labelers
from service.state.rules import (
    Item,
    Selection,
    item_key,
    queue_key,
    tally_key,
)
from service.state.rules import labelers as evidence
from service.state.store.base import Txn


class Leases(Labelers):
    # ---- labeling ------------------------------------------------------------------------

    def lease(
        self,
        limit: int,
        now: float,
        lease_s: float,
        ttl_s: float,
        by: str = "anonymous",
        rng: np.random.Generator | None = None,
        gold_rate: float = 0.0,
    ) -> list[Item]:
        """Hand out to `by` up to `limit` items nobody holds, for lease_s (each item records
        its holder); items found dead (labeled, expired, gone) leave the queue.
        ModelPicker's queue goes oldest first (cost: log(queue) + limit per pass, 3 passes
        at most); a pool-based round's in its belief's order (`_lease_ranked`), ties broken
        by `rng` (the replica's, from the `seed` knob; a fresh one if none is given).

        Overlap items waiting for another labeler (`rules.labelers`) come first, then the
        queue's; gold items join them at `gold_rate` (a share of the items handed out,
        never alone). Both are put at random places among the others, so that their
        place does not tell them apart."""
        if by in self.quarantined():
            return []
        current = self.selection(recent_swaps=0, belief=False)
        rng = rng if rng is not None else np.random.default_rng()
        wanted = int(rng.binomial(limit, gold_rate)) if gold_rate > 0 else 0
        gold = self.gold_items(current, by, wanted, now, rng) if wanted else []
        real = limit - len(gold)
        reviews = self._lease_reviews(current, real, now, lease_s, ttl_s, by)
        rest = real - len(reviews)
        if rest <= 0:
            fresh: list[Item] = []
        elif current.pooled:
            fresh = self._lease_ranked(current, rest, now, lease_s, ttl_s, rng)
        else:
            fresh = self._lease_oldest(current, rest, now, lease_s, ttl_s)
        held = self._hold(fresh, by, now + lease_s)
        others = self._hold(reviews, by, now + lease_s)
        # never gold alone: only beside items to label, or instead of them if some wait
        if held or others or (real == 0 and self.waiting(now, ttl_s) > 0):
            others += gold
        for item in others:
            held.insert(int(rng.integers(len(held) + 1)), item)
        return held

    def _hold(self, items: Sequence[Item], by: str, until: float) -> list[Item]:
        """The leased items record their holder (`rules.hold_items`)."""
        if not items:
            return []
        ids = [i.item_id for i in items]

        def attempt() -> tuple[Txn | None, Any]:
            docs = self.backend.read([item_key(i) for i in ids])
            return rules.hold_items(new_op("hold"), docs, ids, by, until)

        return list(self._transact(attempt)[1])

    def _lease_oldest(
        self, current: Selection, limit: int, now: float, lease_s: float, ttl_s: float
    ) -> list[Item]:
        """ModelPicker's queue: the oldest items nobody holds."""
        round_number = current.picker.round
        queue = queue_key(round_number)
        lowest, highest = rules.lease_window(now, ttl_s)
        leased: list[Item] = []
        for _ in range(3):
            wanted = limit - len(leased)
            ids = self.backend.take(queue, lowest, highest, wanted, now + lease_s)
            leased += self._live_items(queue, ids, round_number, now, ttl_s)
            if len(ids) < wanted or len(leased) >= limit:
                break
        return leased

    def _live_items(
        self, queue: str, ids: Sequence[str], round_number: int, now: float, ttl_s: float
    ) -> list[Item]:
        """The items among `ids` a labeler may have; the others leave the queue."""
        docs = self.backend.read([item_key(i) for i in ids])
        alive, dead = [], []
        for item_id in ids:
            doc = docs.get(item_key(item_id))
            item = None if doc is None else Item.from_dict(item_id, doc.value)
            if item is not None and rules.leasable(item, round_number, now, ttl_s):
                alive.append(item)
            else:
                dead.append(item_id)
        if dead:
            self.backend.commit(Txn(new_op("prune"), pull={queue: dead}))
        return alive

    def _lease_ranked(
        self,
        current: Selection,
        limit: int,
        now: float,
        lease_s: float,
        ttl_s: float,
        rng: np.random.Generator,
    ) -> list[Item]:
        """A pool-based round: the belief (re-derived with every label) ranks the round's
        unlabeled items, and the best-ranked ones nobody holds are claimed in that order.
        With a label budget, no more than it has left (`rules.pool_lease_limit`). Cost: the
        belief's update plus the ranked items walked."""
        picker = current.picker
        queue = queue_key(picker.round)
        lowest, highest = rules.lease_window(now, ttl_s)
        if picker.budget is not None:
            held = self.backend.count(queue, math.nextafter(now, math.inf))
            limit = rules.pool_lease_limit(picker, limit, held)
        if limit <= 0:
            return []
        ranked = self.beliefs.belief(current).ranking(rng)
        leased: list[Item] = []
        start = 0
        while len(leased) < limit and start < len(ranked):
            wanted = ranked[start : start + limit - len(leased)]
            start += len(wanted)
            claimed = self.backend.claim(queue, wanted, lowest, highest, now + lease_s)
            leased += self._live_items(queue, claimed, picker.round, now, ttl_s)
        return leased

    def renew(
        self,
        op: str,
        item_ids: Sequence[str],
        now: float,
        lease_s: float,
        ttl_s: float,
        by: str = "anonymous",
    ) -> list[str]:
        """Extend `by`'s leases of these items while they wait for a label; returns the ids
        renewed (the others were labeled, expired, belong to an ended round, or someone
        else holds them). A gold item `by` has not answered still waits (it has no lease:
        nothing is written for it)."""
        keys = {i: item_key(i) for i in item_ids}

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0, belief=False)
            found = self.backend.read(list(keys.values()))
            items = {i: found.get(key) for i, key in keys.items()}
            return rules.renew_leases(op, current, items, now, lease_s, ttl_s, by)

        committed, renewed = self._transact(attempt)
        done = list(committed.result if committed.status == "replayed" else renewed)
        held = set(done)
        others = [i for i in dict.fromkeys(item_ids) if i not in held]
        return sorted(done + self.gold_unanswered(others, by)) if others else done

    def item(self, item_id: str) -> Item | None:
        doc = self._read(item_key(item_id))
        return None if doc is None else Item.from_dict(item_id, doc.value)

    def label(
        self, op: str, item_id: str, label: int, now: float, ttl_s: float,
        by: str = "anonymous", delta: float | None = None, overlap_rate: float = 0.0,
        weight: float = 1.0, holder: str | None = None,
    ) -> LabelResult:  # fmt: skip
        """Apply one label once, recording who gave it (see `rules.apply_label`; `delta`:
        the elimination test's level in the large-pool mode; `overlap_rate`: the share of
        items that then wait for another labeler; `weight`: what the label weighs, its
        labeler's reliability; `holder`: whose lease lets it in, when not `by`'s: a bridge
        labeling for its annotators). A label for a gold item is an answer to it
        (`rules.labelers.gold_answer`)."""
        answer: dict[str, Any] = {}

        def attempt() -> tuple[Txn | None, Any]:
            quarantine = self._read(evidence.QUARANTINE)
            if by in evidence.quarantined(quarantine):
                answer.update(outcome="unknown", detail=evidence.QUARANTINED)
                return None, None
            txn = judged()
            if txn is None:
                return None, None
            # a quarantine landing meanwhile makes this label read again (and be refused)
            version = 0 if quarantine is None else quarantine.version
            return replace(txn, expect={**txn.expect, evidence.QUARANTINE: version}), None

        def judged() -> Txn | None:
            item = self._read(item_key(item_id))
            if item is None:
                gold = self._read(evidence.gold_key(item_id))
                if gold is not None:
                    seen = self._read(evidence.gold_seen_key(by))
                    tool = None
                    if holder is not None and holder != by:
                        tool = (holder, self._read(evidence.gold_seen_key(holder)))
                    outcome, detail, txn = evidence.gold_answer(op, item_id, gold, seen, label,
                                                                now, by, tool)  # fmt: skip
                    answer.update(outcome=outcome, detail=detail)
                    return txn
            tally = None if item is None else self._read(tally_key(int(item.value["round"])))
            outcome, detail, txn = rules.apply_label(
                op, item_id, item, tally, label, now, ttl_s, by, delta, overlap_rate, weight,
                holder,
            )  # fmt: skip
            answer.update(outcome=outcome, detail=detail)
            return txn

        committed, _ = self._transact(attempt)
        if committed.status == "replayed":
            return LabelResult(item_id, "accepted")
        return LabelResult(item_id, answer["outcome"], answer["detail"])

    def queue_depth(self, now: float, ttl_s: float) -> int:
        """Items of the current round queued within the TTL and not yet labeled, whether a
        labeler holds them or not (one definition for every store)."""
        round_number = self.selection(recent_swaps=0, belief=False).picker.round
        return self.backend.count(queue_key(round_number), rules.lease_window(now, ttl_s)[0])

    def waiting(self, now: float, ttl_s: float) -> int:
        """Items of the current round a labeler could lease now: queued within the TTL, not
        labeled, and not held by a lease (what shadow pacing looks at)."""
        round_number = self.selection(recent_swaps=0, belief=False).picker.round
        lowest, highest = rules.lease_window(now, ttl_s)
        return self.backend.count(queue_key(round_number), lowest, highest)
