"""The live state's operations: read, apply a rule from `service.state.rules`, compare-and-set.

Each operation reads the documents its rule needs, lets the rule compute the transaction,
and commits it; on a conflict (another replica wrote one of those documents meanwhile) it
reads again. Writes carry an op key, so a caller that saw an unclear outcome
(`StoreError.ambiguous`) repeats the call with the same key and gets the truth. Time comes
in as `now`; nothing here reads a clock or holds policy of its own.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from service.state import rules
from service.state.belief import BeliefCache
from service.state.drift import DriftConfig
from service.state.rules import (
    COUNTERS,
    META,
    SWAPS,
    Batch,
    Item,
    LabelOutcome,
    Observed,
    RoundRecord,
    Selection,
    Tally,
    audit_key,
    item_key,
    pool_key,
    queue_key,
    tally_key,
)
from service.state.rules import candidates as roster_rules
from service.state.store.base import Backend, Committed, Doc, Retention, StoreError, Txn

# Swap records returned with a selection (the store keeps Retention.log_cap of them).
RECENT_SWAPS = 200
# Bounded work per maintenance call: expired queue entries and expired records.
MAINTENANCE_BATCH = 500
_MAX_ATTEMPTS = 64
PENDING_LIMIT = 1_000_000  # queued items updated at most when the pool changes


def new_op(kind: str) -> str:
    return f"{kind}:{uuid.uuid4().hex}"


@dataclass(frozen=True)
class LabelResult:
    item_id: str
    outcome: LabelOutcome
    detail: str | None = None


class RoundNotKeptError(LookupError):
    """A round older than the rounds kept (PICKSERVE_ROUNDS_KEPT): its tally is gone."""

    def __init__(self, round_number: int) -> None:
        super().__init__(f"round {round_number} is no longer kept (PICKSERVE_ROUNDS_KEPT)")
        self.round_number = round_number


class LiveState:
    def __init__(
        self, backend: Backend, retention: Retention | None = None, n_classes: int | None = None
    ) -> None:
        self.backend = backend
        self.retention = retention or Retention()
        self.beliefs = BeliefCache(backend, n_classes)  # pool-based rounds (service.state.belief)

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
        self, models: Sequence[str], served: int, budget: int | None, now: float,
        selector: str = rules.MODELPICKER,
    ) -> None:  # fmt: skip
        """Create the state in one atomic step unless it exists; refuse another pool's."""
        txn = rules.initialise(new_op("init"), models, served, budget, now, selector)
        self.backend.commit(txn)
        meta = self._read(META)
        if meta is None:
            raise StoreError("the store lost its state right after creating it")
        rules.check_pool(rules.Meta.from_dict(meta.value), models, "the store")

    def selection(self, recent_swaps: int = RECENT_SWAPS, belief: bool = True) -> Selection:
        """The current view; in a pool-based round with the belief's posterior unless
        `belief` is False (for rules that do not look at the posterior)."""
        for _ in range(_MAX_ATTEMPTS):
            meta = self._read(META)
            if meta is None:
                raise StoreError("the store holds no pickserve state (not initialised)")
            tally = self._read(tally_key(int(meta.value["round"])))
            if tally is not None and not tally.value["closed"]:
                swaps = self.backend.log(SWAPS, recent_swaps) if recent_swaps > 0 else []
                current = rules.selection(meta, tally, swaps)
                if belief and current.pooled:
                    posterior = self.beliefs.belief(current).posterior
                    current = replace(current, posterior=posterior)
                return current
        raise StoreError("the round kept changing while it was read")

    def selection_of(self, round_number: int, recent_swaps: int = RECENT_SWAPS) -> Selection:
        """The view of one round: the current one as `selection` gives it; one a newer
        round closed since then with its own tally (and its recorded posterior)."""
        current = self.selection(recent_swaps)
        if current.picker.round == round_number:
            return current
        doc = self._read(tally_key(round_number))
        if doc is None:
            raise RoundNotKeptError(round_number)
        tally = Tally.from_dict(doc.value)
        return replace(current, tally=tally, tally_version=doc.version, posterior=tally.posterior)

    # ---- idempotency keys ------------------------------------------------------------------

    def bind_key(
        self, scope: str, key: str, fingerprint: str, now: float
    ) -> Mapping[str, Any] | None:
        """Bind a client's Idempotency-Key on `scope` (a route) to the request it first came
        with (`rules.bind_key`): the response recorded for an earlier identical request, or
        None; KeyReusedError for the key with another request."""
        doc_key = rules.key_key(scope, key)

        def attempt() -> tuple[Txn | None, Any]:
            return rules.bind_key(new_op("key"), self._read(doc_key), scope, key, fingerprint,
                                  now, self.retention.item_s)  # fmt: skip

        return self._transact(attempt)[1]  # type: ignore[no-any-return]

    # ---- observing live items ------------------------------------------------------------

    def observe(
        self,
        op: str,
        batch: Batch,
        gamma: float,
        rng: np.random.Generator,
        now: float,
        drift_config: DriftConfig | None = None,
        pool_max_items: int = 20_000,
    ) -> Observed:
        """Count the batch into t and queue the items the picker chooses (and into the drift
        monitor); returns what it observed. Repeating `op` is a no-op that returns the
        first answer."""
        keys = [item_key(i) for i in batch.item_ids]

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0, belief=False)
            found = self.backend.read(keys)
            existing = {i for i, key in zip(batch.item_ids, keys, strict=True) if key in found}
            return rules.observe_batch(op, current, existing, batch, gamma, rng, now,
                                       self.retention, drift_config, pool_max_items)  # fmt: skip

        committed, observed = self._transact(attempt)
        if committed.status == "replayed":
            return Observed.from_dict(committed.result)
        return observed  # type: ignore[no-any-return]

    # ---- labeling ------------------------------------------------------------------------

    def lease(
        self,
        limit: int,
        now: float,
        lease_s: float,
        ttl_s: float,
        by: str = "anonymous",
        rng: np.random.Generator | None = None,
    ) -> list[Item]:
        """Hand out to `by` up to `limit` items nobody holds, for lease_s (each item records
        its holder); items found dead (labeled, expired, gone) leave the queue.
        ModelPicker's queue goes oldest first (cost: log(queue) + limit per pass, 3 passes
        at most); a pool-based round's in its belief's order (`_lease_ranked`), ties broken
        by `rng` (the replica's, from the `seed` knob; a fresh one if none is given)."""
        current = self.selection(recent_swaps=0, belief=False)
        if current.pooled:
            rng = rng if rng is not None else np.random.default_rng()
            leased = self._lease_ranked(current, limit, now, lease_s, ttl_s, rng)
        else:
            leased = self._lease_oldest(current, limit, now, lease_s, ttl_s)
        return self._hold(leased, by, now + lease_s)

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
        else holds them)."""
        keys = {i: item_key(i) for i in item_ids}

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0, belief=False)
            found = self.backend.read(list(keys.values()))
            items = {i: found.get(key) for i, key in keys.items()}
            return rules.renew_leases(op, current, items, now, lease_s, ttl_s, by)

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
        round_number = self.selection(recent_swaps=0, belief=False).picker.round
        return self.backend.count(queue_key(round_number), rules.lease_window(now, ttl_s)[0])

    def waiting(self, now: float, ttl_s: float) -> int:
        """Items of the current round a labeler could lease now: queued within the TTL, not
        labeled, and not held by a lease (what shadow pacing looks at)."""
        round_number = self.selection(recent_swaps=0, belief=False).picker.round
        lowest, highest = rules.lease_window(now, ttl_s)
        return self.backend.count(queue_key(round_number), lowest, highest)

    # ---- rounds, budget, swaps -------------------------------------------------------------

    def start_round(
        self,
        op: str,
        budget: int | None,
        now: float,
        started_by: Mapping[str, Any] | None = None,
        if_round: int | None = None,
        selector: str | None = None,
    ) -> int:
        """A new round (see `rules.new_round`); returns the current round after it."""

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0)
            return rules.new_round(op, current, budget, now, self.retention.rounds_kept,
                                   started_by, if_round, selector)  # fmt: skip

        committed, new_round = self._transact(attempt)
        return int(committed.result if committed.status == "replayed" else new_round)

    def start_round_on_drift(self, evidence: Mapping[str, Any], now: float) -> int:
        """A new round with the deployment's budget, recording the drift evidence; one per
        drifted round however many replicas saw it (the op and `if_round` say which)."""
        round_number = int(evidence["round"])
        budget = self.selection(recent_swaps=0, belief=False).meta.config_budget
        return self.start_round(f"drift:{round_number}", budget, now,
                                {"reason": "drift", **evidence}, round_number)  # fmt: skip

    def apply_config_selector(self, selector: str, now: float) -> int:
        """The deployment's selector: if the current round runs another, it takes this one
        in place while it has queued nothing (`rules.switch_selector`), else a new round
        starts with it (one, however many replicas see the change: the op names the round
        and the selector). Returns the current round after it."""

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0, belief=False)
            txn, in_place = rules.switch_selector(new_op("selector"), current, selector)
            return txn, (in_place, current)

        _, (applied, current) = self._transact(attempt)
        if applied:
            return int(current.picker.round)
        round_number = current.picker.round
        return self.start_round(f"selector:{round_number}:{selector}", current.meta.config_budget,
                                now, {"reason": "selector", "selector": selector}, round_number,
                                selector)  # fmt: skip

    def set_budget(self, op: str, budget: int | None) -> None:
        self._transact(lambda: (rules.set_budget(op, self.selection(0, False), budget), None))

    def apply_config_budget(self, op: str, budget: int | None) -> None:
        self._transact(
            lambda: (rules.apply_config_budget(op, self.selection(0, False), budget), None)
        )

    def reconcile(
        self,
        margin: float,
        trigger: str | None,
        now: float,
        min_labels: int = 0,
        mode: str = "instant",
    ) -> bool:
        """Serve the posterior's best (past `margin`, with `min_labels` labels since the
        last swap), or start a canary for it; True if this call changed something."""

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0)
            return rules.swap(new_op("swap"), current, margin, trigger, now, min_labels, mode)

        committed, record = self._transact(attempt)
        return record is not None and committed.status == "applied"

    def canary_move(
        self, verdict: str, key: tuple[int, int, float], steps: int, now: float, why: str
    ) -> None:
        """Advance (or promote) or roll back the canary `key` names (a replica's verdict,
        `service.replica.canary`)."""

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0, belief=False)
            if verdict == "rollback":
                return rules.rollback(new_op("canary"), current, key, now, why)
            return rules.advance(new_op("canary"), current, key, steps, now, why)

        self._transact(attempt)

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
        records = [
            RoundRecord(r, Tally.from_dict(tallies[tally_key(r)].value),
                        [s for s in swaps if s.get("round") == r])
            for r in numbers if tally_key(r) in tallies
        ]  # fmt: skip
        if records and records[0].tally.pooled and not records[0].tally.closed:
            live = self.selection(recent_swaps=0)  # the current round: its belief now
            if live.picker.round == records[0].number:
                tally = replace(records[0].tally, posterior=live.posterior)
                records[0] = replace(records[0], tally=tally)
        return records

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
        round_number = self.selection(recent_swaps=0, belief=False).picker.round
        below = rules.lease_window(now, ttl_s)[0]
        trimmed = self.backend.trim(queue_key(round_number), below, MAINTENANCE_BATCH)
        return trimmed + self.backend.purge(MAINTENANCE_BATCH)
