"""Candidates added to or removed from the pool at run time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from service.state import rules
from service.state.core import (
    PENDING_LIMIT,
    LiveCore,
)
from service.state.rules import (
    Item,
    Selection,
    audit_key,
    item_key,
    pool_key,
    queue_key,
)
from service.state.rules import candidates as roster_rules
from service.state.rules import labelers as evidence
from service.state.store.base import Doc, StoreError, Txn


class Candidates(LiveCore):
    # ---- candidates at run time ------------------------------------------------------------

    def pending_items(self, current: Selection) -> dict[str, Doc]:
        """The round's items whose predictions follow the pool (their documents): those
        queued and waiting for a label, or in a pool-based round every item of its pool
        (labeled ones too: its belief is derived from them)."""
        round_number = current.picker.round
        if current.pooled:
            ids = self.backend.members(pool_key(round_number), PENDING_LIMIT)
        else:
            ids = self.backend.members(queue_key(round_number), PENDING_LIMIT)
        docs = self.backend.read([item_key(i) for i in ids])
        found = {i: docs.get(item_key(i)) for i in ids}
        return {
            i: d
            for i, d in found.items()
            if d is not None and (current.pooled or d.value["status"] == "pending")
        }

    def add_candidate(
        self,
        op: str,
        entry: Mapping[str, Any],
        classes_of: Callable[[np.ndarray], np.ndarray],
        now: float,
        key: str | None = None,
    ) -> dict[str, Any]:
        """The candidate `entry` (its pool file entry) joins the current round
        (`roster_rules.add_candidate`; RosterError if its name is taken); `classes_of(X)` is
        the new candidate's predicted class per row. Returns the pool after it, the served
        model, its loss and label count; with the client's Idempotency-Key `key` (bound
        already), that answer is kept with the key in the same step."""
        key_doc = None if key is None else rules.key_key(rules.CANDIDATE_KEYS, key)

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0, belief=False)
            binding = None if key_doc is None else self._read(key_doc)
            roster_rules.check_addition(current.meta.models, str(entry["name"]))
            labeled = self.backend.log(audit_key(current.picker.round), self.retention.audit_cap)
            if len(labeled) > current.picker.labels:  # a quarantine took some out
                labeled = self._counting(labeled)
            if len(labeled) != current.picker.labels or any("q" not in e for e in labeled):
                raise StoreError(
                    f"the round's label audit holds {len(labeled)} of its "
                    f"{current.picker.labels} labels with their q (PICKSERVE_LABEL_AUDIT_CAP, "
                    "or labels stored before it kept q): start a new round to add a candidate"
                )
            pending = self.pending_items(current)
            rows = [e["instance"] for e in labeled] + [
                d.value["instance"] for d in pending.values()
            ]
            classes = (
                [int(c) for c in classes_of(np.asarray(rows, dtype=np.float64))] if rows else []
            )
            waiting = dict(zip(pending, zip(pending.values(), classes[len(labeled):], strict=True),
                               strict=True))  # fmt: skip
            txn = roster_rules.add_candidate(op, current, entry, labeled, classes[: len(labeled)],
                                           waiting, now)  # fmt: skip
            if key_doc is not None and binding is not None:
                txn = rules.answering_key(txn, binding, key_doc, now, self.retention.item_s)
            return txn, txn.result

        committed, answer = self._transact(attempt)
        return dict(committed.result if committed.status == "replayed" else answer)

    def _counting(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The audited labels that count in the round's losses (`labelers.counting`)."""
        ids = sorted({str(e["item_id"]) for e in entries})
        docs = self.backend.read([item_key(i) for i in ids])
        items = {i: Item.from_dict(i, docs[item_key(i)].value) for i in ids if item_key(i) in docs}
        barred = evidence.quarantined(self._read(evidence.QUARANTINE))
        return [e for e in entries
                if evidence.counting(e, items.get(str(e["item_id"])), barred)]  # fmt: skip

    def remove_candidate(self, op: str, name: str, now: float) -> str:
        """Drop `name` from the pool (`roster_rules.remove_candidate`; RosterError if it is
        not there, or the pool would keep fewer than two); returns the model served after."""

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0)
            roster_rules.check_removal(current.meta.models, name)
            pending = self.pending_items(current)
            index = current.meta.models.index(name)
            txn = roster_rules.remove_candidate(op, current, index, pending, now)
            return txn, txn.result

        committed, served = self._transact(attempt)
        return str(committed.result if committed.status == "replayed" else served)
