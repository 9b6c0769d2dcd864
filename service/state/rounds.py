"""Rounds, budgets, swaps and the canary's steps, and the history of rounds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from service.state import rules
from service.state.core import (
    LiveCore,
    new_op,
)
from service.state.rules import (
    META,
    SWAPS,
    RoundRecord,
    Tally,
    audit_key,
    queue_key,
    tally_key,
)
from service.state.rules.journal import journal_key, record_point
from service.state.store.base import StoreError, Txn


class Rounds(LiveCore):
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

    # ---- the journal (an outbox of the round's history, `rules.journal`) ------------------

    def record_point(self, now: float, ttl_s: float) -> dict[str, Any] | None:
        """The current round's point in its journal, unless one at this label count is
        there already; returns the point written (None: nothing new)."""

        def attempt() -> tuple[Txn | None, Any]:
            current = self.selection(recent_swaps=0)
            key = journal_key(current.picker.round)
            last = self.backend.log(key, 1)
            depth = self.backend.count(queue_key(current.picker.round),
                                       rules.lease_window(now, ttl_s)[0])  # fmt: skip
            txn = record_point(current, int(last[-1]["step"]) if last else None, depth, now)
            return txn, None if txn is None else txn.result

        return self._transact(attempt)[1]  # type: ignore[no-any-return]

    def journal(self, round_number: int, last: int) -> list[dict[str, Any]]:
        """The newest `last` points of a round's journal, oldest first."""
        return [dict(p) for p in self.backend.log(journal_key(round_number), last)]

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
