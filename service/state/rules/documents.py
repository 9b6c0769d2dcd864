"""The live state's documents and their keys: `meta`, one `tally:{round}` per round,
`item:{id}`, and how a replica reads them into a `Selection`; start-up's first documents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from picker import PickerState, best_model, initial_state, learning_rate, posterior
from picker.elimination import Evidence, ranked_losses
from service.state.drift import Monitor
from service.state.store.base import AUDIT_PREFIX, Doc, Put, StoreError, Txn

SCHEMA = 1
META, COUNTERS, SWAPS = "meta", "counters", "swaps"
# Metric counters that move in the same transaction as the event they count, so that each
# event is counted exactly once whatever happens to the answer (`metrics.counter_key` form).
QUERIES_COUNTER, ACCEPTED_COUNTER, SWAPS_COUNTER = "queries", "labels|accepted", "swaps"
DRIFT_COUNTER = "drift_events"
LabelOutcome = Literal["accepted", "duplicate", "unknown", "leased"]
MODELPICKER, POOL_BASED = "modelpicker", "pool-based"


def tally_key(round_number: int) -> str:
    return f"tally:{round_number}"


def queue_key(round_number: int) -> str:
    return f"queue:{round_number}"


def item_key(item_id: str) -> str:
    return f"item:{item_id}"


def pool_key(round_number: int) -> str:
    """A pool-based round's pool: every item that joined it, scored by when it did."""
    return f"pool:{round_number}"


def labeled_key(round_number: int) -> str:
    """A pool-based round's labeled items, scored by the round's label count after each."""
    return f"labeled:{round_number}"


def audit_key(round_number: int) -> str:
    """The round's label audit log: who gave which label, when."""
    return f"{AUDIT_PREFIX}{round_number}"


@dataclass(frozen=True)
class Meta:
    models: tuple[str, ...]
    served: int
    version: int = 0  # the selection version: +1 on every swap
    round: int = 0
    config_budget: int | None = None  # the deployment config's label_budget last applied
    swapped_at: tuple[int, int] | None = None  # (round, labels in it) at the last swap
    canary: Mapping[str, Any] | None = None  # a canary swap under way (rules.swaps)
    barred: tuple[int, tuple[int, ...]] | None = None  # (round, models rolled back in it)
    # Candidates changed at run time, so that the pool file can follow the store: the pool
    # file entries of those added (by name), the names of those removed (the newest).
    added: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    removed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        swapped = None if self.swapped_at is None else list(self.swapped_at)
        barred = None if self.barred is None else [self.barred[0], list(self.barred[1])]
        return {"schema": SCHEMA, "models": list(self.models), "served": self.served,
                "version": self.version, "round": self.round,
                "config_budget": self.config_budget, "swapped_at": swapped,
                "canary": None if self.canary is None else dict(self.canary),
                "barred": barred, "added": {k: dict(v) for k, v in self.added.items()},
                "removed": list(self.removed)}  # fmt: skip

    def is_barred(self, model: int, round_number: int) -> bool:
        """Rolled back as a canary in this round: not tried again until the next one."""
        return (
            self.barred is not None and self.barred[0] == round_number and (model in self.barred[1])
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Meta:
        if data.get("schema") != SCHEMA:
            raise StoreError(f"stored state has schema {data.get('schema')!r}, expected {SCHEMA}")
        swapped = data.get("swapped_at")  # absent in states written before it existed
        barred = data.get("barred")
        return cls(tuple(data["models"]), int(data["served"]), int(data["version"]),
                   int(data["round"]), data["config_budget"],
                   None if swapped is None else (int(swapped[0]), int(swapped[1])),
                   data.get("canary"),
                   None if barred is None else (int(barred[0]), tuple(barred[1])),
                   dict(data.get("added") or {}), tuple(data.get("removed") or ()))  # fmt: skip

    def labels_since_swap(self, round_number: int, labels: int) -> int:
        """Labels applied since the last swap: in this round after it, or all of this
        round's when the last swap was in an earlier one (or there was none)."""
        if self.swapped_at is None or self.swapped_at[0] != round_number:
            return labels
        return labels - self.swapped_at[1]


@dataclass(frozen=True)
class Tally:
    """One round's picker state; `closed` once a newer round started. `monitor` watches
    the round's stream for drift (`service.state.drift`); `started_by` says why the round
    started (null: an operator or start-up; else the drift evidence). `selector` is how the
    round chooses items (fixed for the round); a pool-based round records its belief's
    final posterior in `posterior` when it closes. In the large-pool mode `evidence` is
    the elimination test's (`picker.elimination`) and `eliminated` records who left the
    round: when, against which leader, on what wealth."""

    picker: PickerState
    closed: bool = False
    started_at: float = 0.0
    ended_at: float | None = None
    monitor: Monitor | None = None
    started_by: Mapping[str, Any] | None = None
    selector: str = MODELPICKER
    posterior: tuple[float, ...] | None = None
    models: tuple[str, ...] | None = None  # the candidates its per-model figures are for
    evidence: Evidence | None = None
    eliminated: tuple[Mapping[str, Any], ...] = ()
    # how many times a quarantine or its lift made the round's labels again: a pool-based
    # belief read before one is stale, whatever the label count says
    relabeled: int = 0
    candidates_changed: bool = False  # a candidate was added or removed during the round

    def to_dict(self) -> dict[str, Any]:
        monitor = None if self.monitor is None else self.monitor.to_dict()
        started_by = None if self.started_by is None else dict(self.started_by)
        posterior = None if self.posterior is None else list(self.posterior)
        models = None if self.models is None else list(self.models)
        evidence = None if self.evidence is None else self.evidence.to_dict()
        return {"picker": self.picker.to_dict(), "closed": self.closed,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "monitor": monitor, "started_by": started_by, "selector": self.selector,
                "posterior": posterior, "models": models, "evidence": evidence,
                "eliminated": [dict(e) for e in self.eliminated],
                "relabeled": self.relabeled,
                "candidates_changed": self.candidates_changed}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        ended, monitor = data.get("ended_at"), data.get("monitor")
        posterior = data.get("posterior")  # absent in states written before pool-based
        models = data.get("models")  # absent in states written before it was kept
        evidence = data.get("evidence")  # absent in states written before elimination
        return cls(PickerState.from_dict(data["picker"]), bool(data["closed"]),
                   float(data["started_at"]), None if ended is None else float(ended),
                   None if monitor is None else Monitor.from_dict(monitor),
                   data.get("started_by"), str(data.get("selector", MODELPICKER)),
                   None if posterior is None else tuple(float(w) for w in posterior),
                   None if models is None else tuple(str(m) for m in models),
                   None if evidence is None else Evidence.from_dict(evidence),
                   tuple(data.get("eliminated") or ()), int(data.get("relabeled", 0)),
                   bool(data.get("candidates_changed", False)))  # fmt: skip

    def out(self) -> npt.NDArray[np.bool_]:
        """The candidates the elimination test took out of this round."""
        if self.evidence is None:
            return np.zeros(self.picker.n_models, dtype=bool)
        return self.evidence.out_array

    def ranked_losses(self) -> npt.NDArray[np.float64]:
        """The round's losses, +inf for the candidates eliminated: what the posterior, the
        best model and the active set are decided by."""
        return ranked_losses(self.picker.loss_array, self.out())

    def model_names(self, current: Sequence[str]) -> list[str]:
        """The candidates this round's losses and posterior are for, in their order (a
        round kept from before the names were stored: the current pool's, if it fits)."""
        if self.models is not None:
            return list(self.models)
        if len(current) == self.picker.n_models:
            return list(current)
        return [f"model-{i}" for i in range(self.picker.n_models)]

    @property
    def pooled(self) -> bool:
        return self.selector == POOL_BASED

    def weights(self) -> npt.NDArray[np.float64]:
        """P(each model is the best): the recorded posterior, else ModelPicker's."""
        if self.posterior is not None:
            return np.asarray(self.posterior, dtype=np.float64)
        eta = learning_rate(max(self.picker.step, 1), self.picker.n_models)
        return posterior(self.ranked_losses(), eta)

    def best(self, weights: npt.NDArray[np.float64] | None = None) -> int:
        """The posterior's best model (`picker.best_model`, the first on ties):
        ModelPicker's argmin L, or in a pool-based round the argmax of `weights` (None: the
        round's recorded ones)."""
        if not self.pooled:
            return int(best_model(self.ranked_losses()))
        return int(best_model(-(self.weights() if weights is None else weights)))


@dataclass(frozen=True)
class Item:
    """An item the picker chose for labeling: what a labeler and the update need."""

    item_id: str
    round: int
    q: float
    predictions: tuple[int, ...]
    instance: tuple[float, ...]
    created_at: float
    status: Literal["pending", "labeled"] = "pending"
    label: int | None = None
    op: str | None = None  # the op that applied the label
    labeled_at: float | None = None
    expire_at: float | None = None  # the record is forgotten then (Retention.item_s)
    holder: str | None = None  # who leased it last (a token's name), until `lease_until`
    lease_until: float | None = None
    labeled_by: str | None = None  # who gave the label that counted
    # An overlap item (`rules.labelers`): the later labels, each {by, label, op, at}, and
    # whether it still waits for one.
    reviews: tuple[Mapping[str, Any], ...] = ()
    review_open: bool = False
    weight: float = 1.0  # what the label that counted weighs (its labeler's reliability)

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "q": self.q, "predictions": list(self.predictions),
                "instance": list(self.instance), "created_at": self.created_at,
                "status": self.status, "label": self.label, "op": self.op,
                "labeled_at": self.labeled_at, "expire_at": self.expire_at,
                "holder": self.holder, "lease_until": self.lease_until,
                "labeled_by": self.labeled_by, "reviews": [dict(r) for r in self.reviews],
                "review_open": self.review_open, "weight": self.weight}  # fmt: skip

    def held_by_other(self, by: str, now: float) -> bool:
        """Leased to someone else, and that lease has not ended."""
        return (
            self.holder is not None
            and self.holder != by
            and self.lease_until is not None
            and self.lease_until > now
        )

    @classmethod
    def from_dict(cls, item_id: str, data: Mapping[str, Any]) -> Item:
        return cls(item_id, int(data["round"]), float(data["q"]),
                   tuple(int(p) for p in data["predictions"]),
                   tuple(float(x) for x in data["instance"]), float(data["created_at"]),
                   data["status"], data["label"], data["op"], data["labeled_at"],
                   data["expire_at"], data.get("holder"), data.get("lease_until"),
                   data.get("labeled_by"), tuple(data.get("reviews") or ()),
                   bool(data.get("review_open", False)),
                   float(data.get("weight", 1.0)))  # fmt: skip


@dataclass(frozen=True)
class Selection:
    """A consistent view for serving and reporting: meta, the round's tally, recent swaps.
    In a pool-based round `posterior` is the belief's P(best) for this tally version
    (`service.state.belief`; None when it was not derived for this view)."""

    meta: Meta
    tally: Tally
    meta_version: int = 0
    tally_version: int = 0
    swaps: list[dict[str, Any]] = field(default_factory=list)
    posterior: tuple[float, ...] | None = None

    @property
    def picker(self) -> PickerState:
        return self.tally.picker

    @property
    def served(self) -> int:
        return self.meta.served

    @property
    def version(self) -> int:
        return self.meta.version

    @property
    def model_names(self) -> list[str]:
        return list(self.meta.models)

    @property
    def pooled(self) -> bool:
        return self.tally.pooled

    def weights(self) -> npt.NDArray[np.float64]:
        """P(each model is the best): the pool-based belief's, or ModelPicker's (a
        pool-based round's view without its belief says the served model, for certain)."""
        if self.posterior is not None:
            return np.asarray(self.posterior, dtype=np.float64)
        if self.pooled:
            certain: npt.NDArray[np.float64] = np.eye(len(self.meta.models))[self.meta.served]
            return certain
        return self.tally.weights()

    @property
    def best(self) -> int:
        return self.tally.best(self.weights())


@dataclass(frozen=True)
class RoundRecord:
    """A round as history shows it: its tally (closed or current) and its swaps."""

    number: int
    tally: Tally
    swaps: list[dict[str, Any]]

    @property
    def best(self) -> int:
        return self.tally.best()


# ---- start-up ---------------------------------------------------------------------------


def initialise(
    op: str, models: Sequence[str], served: int, budget: int | None, now: float,
    selector: str = MODELPICKER,
) -> Txn:  # fmt: skip
    """The whole initial state in one transaction (it applies only if no state exists)."""
    meta = Meta(tuple(models), served, config_budget=budget)
    tally = Tally(initial_state(len(models), budget=budget), started_at=now, selector=selector,
                  models=tuple(models))  # fmt: skip
    return Txn(op, expect={META: 0, tally_key(0): 0},
               put={META: Put(meta.to_dict()), tally_key(0): Put(tally.to_dict())})  # fmt: skip


def check_pool(meta: Meta, models: Sequence[str], where: str) -> None:
    if list(meta.models) != list(models):
        raise StoreError(
            f"{where} holds state for the pool {list(meta.models)}, not {list(models)}: "
            "use another store namespace (PICKSERVE_STORE_NAMESPACE) or remove that state"
        )


def selection(meta: Doc, tally: Doc, swaps: list[dict[str, Any]]) -> Selection:
    return Selection(Meta.from_dict(meta.value), Tally.from_dict(tally.value),
                     meta.version, tally.version, swaps)  # fmt: skip
