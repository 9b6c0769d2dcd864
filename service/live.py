"""The live state's operations: read, apply a rule from `service.rules`, compare-and-set.

Each operation reads the documents its rule needs, lets the rule compute the transaction,
and commits it; on a conflict (another replica wrote one of those documents meanwhile) it
reads again. Writes carry an op key, so a caller that saw an unclear outcome
(`StoreError.ambiguous`) repeats the call with the same key and gets the truth. Time comes
in as `now`; nothing here reads a clock or holds policy of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import rules
from service.rules import (
    COUNTERS,
    META,
    SWAPS,
    Batch,
    Item,
    LabelOutcome,
    RoundRecord,
    Selection,
    Tally,
    audit_key,
    item_key,
    queue_key,
    tally_key,
)
from service.store.base import Backend, Committed, Doc, Retention, StoreError, Txn

# Swap records returned with a selection (the store keeps Retention.log_cap of them).
RECENT_SWAPS = 200
# Bounded work per maintenance call: expired queue entries and expired records.
MAINTENANCE_BATCH = 500
_MAX_ATTEMPTS = 64


def new_op(kind: str) -> str:
    return f"{kind}:{uuid.uuid4().hex}"


@dataclass(frozen=True)
class LabelResult:
    item_id: str
    outcome: LabelOutcome
    detail: str | None = None


class LiveState:
    def __init__(self, backend: Backend, retention: Retention | None = None) -> None:
        self.backend = backend
        self.retention = retention or Retention()

    def _read(self, key: str) -> Doc | None:
        return self.backend.read([key]).get(key)

    def _transact(self, attempt: Callable[[], tuple[Txn | None, Any]]) -> tuple[Committed, Any]:
        """Run attempt() -> (txn, answer) until its txn commits (or it needs none)."""
        for _ in range(_MAX_ATTEMPTS):
            txn, answer = attempt()
            if txn is None:
                return Committed("applied"), answer
            committed = self.backend.commit(txn)
            if committed.status != "conflict":
                return committed, answer
        raise StoreError(f"gave up after {_MAX_ATTEMPTS} conflicting attempts (contention)")

    # ---- start-up and reads --------------------------------------------------------------

    def initialise(
        self, models: Sequence[str], served: int, budget: int | None, now: float
    ) -> None:
        """Create the state in one atomic step unless it exists; refuse another pool's."""
        self.backend.commit(rules.initialise(new_op("init"), models, served, budget, now))
        meta = self._read(META)
        if meta is None:
            raise StoreError("the store lost its state right after creating it")
        rules.check_pool(rules.Meta.from_dict(meta.value), models, "the store")

    def selection(self, recent_swaps: int = RECENT_SWAPS) -> Selection:
        for _ in range(_MAX_ATTEMPTS):
            meta = self._read(META)
            if meta is None:
                raise StoreError("the store holds no pickserve state (not initialised)")
            tally = self._read(tally_key(int(meta.value["round"])))
            if tally is not None and not tally.value["closed"]:
                swaps = self.backend.log(SWAPS, recent_swaps) if recent_swaps > 0 else []
                return rules.selection(meta, tally, swaps)
        raise StoreError("the round kept changing while it was read")

    # ---- observing live items ------------------------------------------------------------

    def observe(
        self, op: str, batch: Batch, gamma: float, rng: np.random.Generator, now: float
    ) -> int:
        """Count the batch into t and queue the items the picker chooses; returns how many
        were queued. Repeating `op` is a no-op that returns the first answer."""
        keys = [item_key(i) for i in batch.item_ids]

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0)
            found = self.backend.read(keys)
            existing = {i for i, key in zip(batch.item_ids, keys, strict=True) if key in found}
            txn, queued = rules.observe_batch(
                op, current, existing, batch, gamma, rng, now, self.retention
            )
            return txn, queued

        committed, queued = self._transact(attempt)
        return int(committed.result if committed.status == "replayed" else queued)

    # ---- labeling ------------------------------------------------------------------------

    def lease(self, limit: int, now: float, lease_s: float, ttl_s: float) -> list[Item]:
        """Hand out up to `limit` items nobody holds, for lease_s; items found dead (labeled,
        expired, gone) leave the queue. Cost: log(queue) + limit per pass, 3 passes at most."""
        round_number = self.selection(recent_swaps=0).picker.round
        queue = queue_key(round_number)
        lowest, highest = rules.lease_window(now, ttl_s)
        leased: list[Item] = []
        for _ in range(3):
            wanted = limit - len(leased)
            ids = self.backend.take(queue, lowest, highest, wanted, now + lease_s)
            docs = self.backend.read([item_key(i) for i in ids])
            dead = []
            for item_id in ids:
                doc = docs.get(item_key(item_id))
                item = None if doc is None else Item.from_dict(item_id, doc.value)
                if item is not None and rules.leasable(item, round_number, now, ttl_s):
                    leased.append(item)
                else:
                    dead.append(item_id)
            if dead:
                self.backend.commit(Txn(new_op("prune"), pull={queue: dead}))
            if len(ids) < wanted or len(leased) >= limit:
                break
        return leased

    def renew(
        self, op: str, item_ids: Sequence[str], now: float, lease_s: float, ttl_s: float
    ) -> list[str]:
        """Extend the leases of these items while they wait for a label; returns the ids
        renewed (the others were labeled, expired, or belong to an ended round)."""
        keys = {i: item_key(i) for i in item_ids}

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0)
            found = self.backend.read(list(keys.values()))
            items = {i: found.get(key) for i, key in keys.items()}
            return rules.renew_leases(op, current, items, now, lease_s, ttl_s)

        committed, renewed = self._transact(attempt)
        return list(committed.result if committed.status == "replayed" else renewed)

    def item(self, item_id: str) -> Item | None:
        doc = self._read(item_key(item_id))
        return None if doc is None else Item.from_dict(item_id, doc.value)

    def label(
        self, op: str, item_id: str, label: int, now: float, ttl_s: float,
        by: str = "anonymous",
    ) -> LabelResult:  # fmt: skip
        """Apply one label once, recording who gave it (see `rules.apply_label`)."""
        answer: dict[str, Any] = {}

        def attempt() -> tuple[Txn | None, Any]:
            item = self._read(item_key(item_id))
            tally = None if item is None else self._read(tally_key(int(item.value["round"])))
            outcome, detail, txn = rules.apply_label(
                op, item_id, item, tally, label, now, ttl_s, by
            )
            answer.update(outcome=outcome, detail=detail)
            return txn, None

        committed, _ = self._transact(attempt)
        if committed.status == "replayed":
            return LabelResult(item_id, "accepted")
        return LabelResult(item_id, answer["outcome"], answer["detail"])

    def queue_depth(self, now: float, ttl_s: float) -> int:
        """Items of the current round queued within the TTL and not yet labeled, whether a
        labeler holds them or not (one definition for every store)."""
        round_number = self.selection(recent_swaps=0).picker.round
        return self.backend.count(queue_key(round_number), rules.lease_window(now, ttl_s)[0])

    # ---- rounds, budget, swaps -------------------------------------------------------------

    def start_round(self, op: str, budget: int | None, now: float) -> int:
        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0)
            return rules.new_round(op, current, budget, now, self.retention.rounds_kept)

        committed, new_round = self._transact(attempt)
        return int(committed.result if committed.status == "replayed" else new_round)

    def set_budget(self, op: str, budget: int | None) -> None:
        self._transact(lambda: (rules.set_budget(op, self.selection(0), budget), None))

    def apply_config_budget(self, op: str, budget: int | None) -> None:
        self._transact(lambda: (rules.apply_config_budget(op, self.selection(0), budget), None))

    def reconcile(
        self, margin: float, trigger: str | None, now: float, min_labels: int = 0
    ) -> bool:
        """Serve the posterior's best (past `margin`, with `min_labels` labels since the
        last swap); True if this call swapped."""

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0)
            return rules.swap(new_op("swap"), current, margin, trigger, now, min_labels)

        committed, record = self._transact(attempt)
        return record is not None and committed.status == "applied"

    # ---- history -----------------------------------------------------------------------

    def rounds(self, last: int) -> list[RoundRecord]:
        """The newest `last` rounds still kept, newest first, read in one snapshot."""
        meta = self._read(META)
        if meta is None:
            raise StoreError("the store holds no pickserve state (not initialised)")
        current = int(meta.value["round"])
        numbers = list(range(current, max(current - last, -1), -1))
        tallies = self.backend.read([tally_key(r) for r in numbers])
        swaps = self.backend.log(SWAPS, self.retention.log_cap)
        return [
            RoundRecord(r, Tally.from_dict(tallies[tally_key(r)].value),
                        [s for s in swaps if s.get("round") == r])
            for r in numbers if tally_key(r) in tallies
        ]  # fmt: skip

    def audit(self, round_number: int, last: int) -> list[dict[str, Any]] | None:
        """The newest `last` labels of a kept round, oldest first (None: not kept)."""
        if not self.backend.read([tally_key(round_number)]):
            return None
        return [dict(r) for r in self.backend.log(audit_key(round_number), last)]

    # ---- counters and upkeep ---------------------------------------------------------------

    def add_counters(self, op: str, deltas: dict[str, float]) -> None:
        self.backend.commit(Txn(op, add={COUNTERS: deltas}))

    def counters(self) -> dict[str, float]:
        return self.backend.counters(COUNTERS)

    def maintain(self, now: float, ttl_s: float) -> int:
        """Bounded upkeep: drop expired entries from the current queue, forget expired
        records. Returns how many things were removed."""
        round_number = self.selection(recent_swaps=0).picker.round
        below = rules.lease_window(now, ttl_s)[0]
        trimmed = self.backend.trim(queue_key(round_number), below, MAINTENANCE_BATCH)
        return trimmed + self.backend.purge(MAINTENANCE_BATCH)
