"""The core of `LiveState` (`service.state.live`): the backend, reads, the commit loop
that retries a rule on a conflict, the selection, keys, observing, counters and upkeep."""

from __future__ import annotations

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
    LabelOutcome,
    Observed,
    Selection,
    Tally,
    item_key,
    queue_key,
    tally_key,
)
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


class LiveCore:
    """What every operation shares: the backend, reads, the commit loop, the selection."""

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
