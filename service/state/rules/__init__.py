"""The rules of the live state, each written once, as pure functions.

The state is a handful of documents: `meta` (the pool, the served model and its version,
the current round, the deployment's label budget last applied), one `tally:{round}` per
round (the picker's `PickerState`, its selector, and whether the round is closed), one
`item:{id}` per queued item, and a queue `queue:{round}` of item ids scored by when they
become available. A pool-based round also keeps `pool:{round}`, every item that joined its
pool (labeled, waiting or expired), and `labeled:{round}`, its labeled items: the belief
(`service.state.belief`) is derived from those items' documents and nothing else.
A rule takes the documents a transition read and returns the `Txn` that a store applies
atomically, with compare-and-set on every document the decision read (and an answer for
the caller). No I/O, no clock, no randomness of its own: time and the random generator
come in as arguments. The math is the picker's (`picker.decide_queries`, `cap_queries`,
`loss_increments`, `apply_increments`, `served_model`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from picker import (
    PickerState,
    apply_increments,
    cap_queries,
    decide_queries,
    initial_state,
    loss_increments,
    observe,
    record_queries,
    served_model,
)
from picker.pooled import disagreeing
from service.state import drift
from service.state.drift import DriftConfig, Monitor
from service.state.store.base import AUDIT_PREFIX, Doc, Put, Retention, StoreError, Txn

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
    canary: Mapping[str, Any] | None = None  # a canary swap under way (service.replica.canary)
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
    final posterior in `posterior` when it closes."""

    picker: PickerState
    closed: bool = False
    started_at: float = 0.0
    ended_at: float | None = None
    monitor: Monitor | None = None
    started_by: Mapping[str, Any] | None = None
    selector: str = MODELPICKER
    posterior: tuple[float, ...] | None = None
    models: tuple[str, ...] | None = None  # the candidates its per-model figures are for

    def to_dict(self) -> dict[str, Any]:
        monitor = None if self.monitor is None else self.monitor.to_dict()
        started_by = None if self.started_by is None else dict(self.started_by)
        posterior = None if self.posterior is None else list(self.posterior)
        models = None if self.models is None else list(self.models)
        return {"picker": self.picker.to_dict(), "closed": self.closed,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "monitor": monitor, "started_by": started_by, "selector": self.selector,
                "posterior": posterior, "models": models}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        ended, monitor = data.get("ended_at"), data.get("monitor")
        posterior = data.get("posterior")  # absent in states written before pool-based
        models = data.get("models")  # absent in states written before it was kept
        return cls(PickerState.from_dict(data["picker"]), bool(data["closed"]),
                   float(data["started_at"]), None if ended is None else float(ended),
                   None if monitor is None else Monitor.from_dict(monitor),
                   data.get("started_by"), str(data.get("selector", MODELPICKER)),
                   None if posterior is None else tuple(float(w) for w in posterior),
                   None if models is None else tuple(str(m) for m in models))  # fmt: skip

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
        return self.picker.weights()

    def best(self, weights: npt.NDArray[np.float64] | None = None) -> int:
        """The posterior's best model (the first on ties): ModelPicker's argmin L, or in a
        pool-based round the argmax of `weights` (None: the round's recorded ones)."""
        if not self.pooled:
            return int(np.argmin(self.picker.loss_array))
        return int(np.argmax(self.weights() if weights is None else weights))


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

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "q": self.q, "predictions": list(self.predictions),
                "instance": list(self.instance), "created_at": self.created_at,
                "status": self.status, "label": self.label, "op": self.op,
                "labeled_at": self.labeled_at, "expire_at": self.expire_at,
                "holder": self.holder, "lease_until": self.lease_until}  # fmt: skip

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
                   data["expire_at"], data.get("holder"), data.get("lease_until"))  # fmt: skip


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
        return self.picker.weights()

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


# ---- idempotency keys -------------------------------------------------------------------


class KeyReusedError(ValueError):
    """An Idempotency-Key came again with another request (route, caller or body)."""


CANDIDATE_KEYS = "candidates"  # the scope of POST /v1/candidates' Idempotency-Keys


def key_key(scope: str, key: str) -> str:
    """The record binding a client's Idempotency-Key (on one route) to its first request."""
    return f"key:{scope}:{key}"


def bind_key(
    op: str, doc: Doc | None, scope: str, key: str, fingerprint: str, now: float, keep_s: float
) -> tuple[Txn | None, Mapping[str, Any] | None]:
    """A key's first use binds it to `fingerprint` (the request's digest) for `keep_s`; a
    repeat of that request passes, with the response recorded for it, if any (None: none
    yet: the request runs again, its writes keyed so that nothing applies twice); the key
    with any other request is refused (KeyReusedError), and nothing changes."""
    if doc is None:
        record = {"fingerprint": fingerprint, "response": None}
        return Txn(op, expect={key_key(scope, key): 0},
                   put={key_key(scope, key): Put(record, now + keep_s)}), None  # fmt: skip
    if doc.value["fingerprint"] != fingerprint:
        raise KeyReusedError(
            f"Idempotency-Key {key!r} was used before with another request (another body or "
            "another caller): a key names one request; use a new key for a new request"
        )
    response = doc.value.get("response")
    return None, None if response is None else dict(response)


def answering_key(txn: Txn, doc: Doc, doc_key: str, now: float, keep_s: float) -> Txn:
    """`txn` that also keeps its answer (`txn.result`) with the key's binding `doc`, in the
    same step: a repeat of the request then gets that answer, whatever happened between."""
    record = {**doc.value, "response": txn.result}
    return replace(txn, expect={**txn.expect, doc_key: doc.version},
                   put={**txn.put, doc_key: Put(record, now + keep_s)})  # fmt: skip


# ---- observing live items (shadow evaluation) -------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What observing a batch did: items queued, and the drift evidence if it found any."""

    queued: int
    drift: Mapping[str, Any] | None = None
    stale: bool = False  # computed for another pool (a candidate was added or removed)

    def to_dict(self) -> dict[str, Any]:
        return {"queued": self.queued, "drift": None if self.drift is None else dict(self.drift)}

    @classmethod
    def from_dict(cls, data: Any) -> Observed:
        if isinstance(data, int):  # answers recorded before drift monitoring existed
            return cls(data)
        return cls(int(data["queued"]), data.get("drift"))


@dataclass(frozen=True)
class Batch:
    """Items the picker saw: every candidate's prediction, their ids and features."""

    item_ids: Sequence[str]
    predictions: npt.NDArray[np.int64]
    instances: npt.NDArray[np.float64]
    models: Sequence[str] | None = None  # the candidates the columns are (None: unchecked)


def observe_batch(
    op: str,
    current: Selection,
    existing: set[str],
    batch: Batch,
    gamma: float,
    rng: np.random.Generator,
    now: float,
    retention: Retention,
    drift_config: DriftConfig | None = None,
    pool_max_items: int = 20_000,
) -> tuple[Txn | None, Observed]:
    """t advances by the batch size; the picker's coins choose items to queue, within the
    round's budget; an id that is already stored is never queued (nor counted) twice.
    A pool-based round instead queues every fresh item the candidates disagree on (q = 1),
    up to `pool_max_items` in its pool: its budget counts labels, not admissions.
    With `drift_config`, the round's drift monitor counts the batch in the same step.
    Returns the transaction and what it observed (queued items, drift evidence)."""
    picker = current.picker
    if batch.models is not None and tuple(batch.models) != current.meta.models:
        return None, Observed(0, stale=True)  # the pool changed meanwhile: not observed
    fresh = np.array([i not in existing for i in batch.item_ids], dtype=bool)
    if current.pooled:
        q = np.ones(len(batch.item_ids))
        room = max(0, pool_max_items - picker.queries)
        chosen = np.flatnonzero(fresh & disagreeing(batch.predictions))[:room]
    else:
        decisions = decide_queries(
            picker.loss_array, picker.step + 1, batch.predictions, gamma, None, rng
        )
        q = decisions.q
        chosen = np.flatnonzero(cap_queries(decisions.query & fresh, picker.queries_left))
    advanced = record_queries(observe(picker, len(batch.item_ids)), len(chosen))
    items = [
        Item(batch.item_ids[int(i)], picker.round, float(q[i]),
             tuple(int(p) for p in batch.predictions[i]),
             tuple(float(x) for x in batch.instances[i]), now,
             expire_at=now + retention.item_s)
        for i in chosen
    ]  # fmt: skip
    tally = replace(current.tally, picker=advanced)
    evidence = None
    if drift_config is not None:
        monitor = current.tally.monitor or Monitor.start(current.served, drift_config.n_classes)
        monitor, evidence = drift.observe(monitor, batch.predictions, drift_config, picker.step)
        tally = replace(tally, monitor=monitor)
        if evidence is not None:
            evidence = {**evidence, "round": picker.round,
                        "watched_model": current.meta.models[monitor.model]}  # fmt: skip
    put = {tally_key(picker.round): Put(tally.to_dict())}
    put.update({item_key(i.item_id): Put(i.to_dict(), i.expire_at) for i in items})
    expect = {tally_key(picker.round): current.tally_version}
    expect.update({item_key(i.item_id): 0 for i in items})
    push = {queue_key(picker.round): {i.item_id: now for i in items}}
    if current.pooled and items:
        push[pool_key(picker.round)] = {i.item_id: now for i in items}
    counts = {QUERIES_COUNTER: float(len(items))} if items else {}
    if evidence is not None:
        counts[DRIFT_COUNTER] = 1.0
    observed = Observed(len(items), evidence)
    txn = Txn(op, expect=expect, put=put, push=push, add={COUNTERS: counts} if counts else {},
              result=observed.to_dict())  # fmt: skip
    return txn, observed


# ---- labeling ---------------------------------------------------------------------------


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
    the current round that nobody else holds (a labeler still working on them); the others
    are returned as not renewed. The compare-and-set covers the round and every renewed
    item, so a label or a new round landing meanwhile makes the caller read again."""
    round_number = current.picker.round
    renewed: dict[str, float] = {}
    expect, put = {META: current.meta_version}, {}
    for item_id, doc in items.items():
        item = None if doc is None else Item.from_dict(item_id, doc.value)
        if doc is None or item is None or not leasable(item, round_number, now, ttl_s):
            continue
        if item.held_by_other(by, now):
            continue
        renewed[item_id] = now + lease_s
        expect[item_key(item_id)] = doc.version
        held = replace(item, holder=by, lease_until=now + lease_s)
        put[item_key(item_id)] = Put(held.to_dict(), held.expire_at)
    if not renewed:
        return None, []
    txn = Txn(op, expect=expect, put=put, push={queue_key(round_number): renewed},
              result=sorted(renewed))  # fmt: skip
    return txn, sorted(renewed)


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
) -> tuple[LabelOutcome, str | None, Txn | None]:
    """Apply a label once: L += [f_i(x) != y] / q, labels += 1, the item leaves the queue,
    and the round's audit log records who gave it (`by`) and when. In a pool-based round
    the item also joins the round's labeled set (its belief is derived from the items).

    A repeat by the op that applied it is answered 'accepted' (the truth for a retry after
    an unclear outcome); any other repeat is 'duplicate'. Stale items are 'unknown'. An
    item someone else holds a live lease on is 'leased' and keeps waiting for its holder's
    label (a label counts from its holder, or from anyone once no lease holds it)."""
    if item is None:
        return "unknown", "this item was never queued for labeling (or its record expired)", None
    stored = Item.from_dict(item_id, item.value)
    if stored.status == "labeled":
        if stored.op == op and stored.label == label:
            return "accepted", None, None
        return "duplicate", "this item already has a label; it counted once", None
    round_tally = None if tally is None else Tally.from_dict(tally.value)
    if tally is None or round_tally is None or round_tally.closed:
        return "unknown", "this item belongs to an earlier round", None
    if stored.created_at < now - ttl_s:
        return "unknown", "this item expired (query_ttl_s)", None
    if stored.held_by_other(by, now):
        return "leased", "another labeler holds this item's lease: the label was not applied", None
    increments = loss_increments(stored.predictions, label, stored.q)
    updated = replace(round_tally, picker=apply_increments(round_tally.picker, increments))
    labeled = replace(stored, status="labeled", label=label, op=op, labeled_at=now)
    push = ({labeled_key(stored.round): {item_id: float(updated.picker.labels)}}
            if round_tally.pooled else {})  # fmt: skip
    txn = Txn(
        op,
        expect={item_key(item_id): item.version, tally_key(stored.round): tally.version},
        put={item_key(item_id): Put(labeled.to_dict(), labeled.expire_at),
             tally_key(stored.round): Put(updated.to_dict())},
        push=push,
        pull={queue_key(stored.round): [item_id]},
        add={COUNTERS: {ACCEPTED_COUNTER: 1.0}},
        append={audit_key(stored.round): [
            {"item_id": item_id, "label": label, "by": by, "at": now, "q": stored.q,
             "instance": list(stored.instance)}]},
        result="accepted",
    )  # fmt: skip
    return "accepted", None, txn


# ---- rounds and budget ------------------------------------------------------------------


def new_round(
    op: str,
    current: Selection,
    budget: int | None,
    now: float,
    rounds_kept: int = 100,
    started_by: Mapping[str, Any] | None = None,
    if_round: int | None = None,
    selector: str | None = None,
) -> tuple[Txn | None, int]:
    """A fresh data period: a new tally (L and t at 0) with its budget; the old round is
    closed (its late labels are stale, its tally stays as the round's record) and its
    queue dropped. The round that falls out of the newest `rounds_kept` is forgotten, its
    record and its label audit. `started_by` records why (drift evidence); with
    `if_round`, nothing happens unless that round is still the current one (two replicas
    that saw the same drift start one round). The new round runs `selector` (None: the
    old round's); a pool-based round closes with its belief's posterior recorded."""
    old = current.picker.round
    if if_round is not None and if_round != old:
        return None, old
    fresh = Tally(initial_state(current.picker.n_models, budget, old + 1), started_at=now,
                  started_by=started_by, selector=selector or current.tally.selector,
                  models=current.meta.models)  # fmt: skip
    # The closing round keeps the names its figures are for (a round stored before they
    # were kept: the pool's now, which is the one its losses follow).
    current = replace(current, tally=replace(current.tally, models=current.meta.models))
    meta = replace(current.meta, round=old + 1)
    closed = replace(current.tally, closed=True, ended_at=now)
    if current.pooled:
        closed = replace(closed, posterior=tuple(float(w) for w in current.weights()))
    put = {META: Put(meta.to_dict()), tally_key(old): Put(closed.to_dict()),
           tally_key(old + 1): Put(fresh.to_dict())}  # fmt: skip
    drop = [queue_key(old), pool_key(old), labeled_key(old)]
    forgotten = old + 1 - rounds_kept
    if forgotten >= 0:
        put[tally_key(forgotten)] = Put(None)
        drop.append(audit_key(forgotten))
    txn = Txn(
        op,
        expect={META: current.meta_version, tally_key(old): current.tally_version,
                tally_key(old + 1): 0},
        put=put, drop=drop, result=old + 1,
    )  # fmt: skip
    return txn, old + 1


def _rewrite_tally(op: str, current: Selection, tally: Tally) -> Txn:
    """The current round's tally replaced, compare-and-set on the one the view read."""
    round_key = tally_key(current.picker.round)
    return Txn(op, expect={round_key: current.tally_version},
               put={round_key: Put(tally.to_dict())})  # fmt: skip


def switch_selector(op: str, current: Selection, selector: str) -> Txn | None:
    """The round takes `selector` in place while it has queued nothing (a start-up, before
    any item): None otherwise, when only a new round may change it (its items were asked
    for by the other rule)."""
    if current.picker.queries or current.picker.labels:
        return None
    return _rewrite_tally(op, current, replace(current.tally, selector=selector))


def set_budget(op: str, current: Selection, budget: int | None) -> Txn:
    """Change the current round's budget (queries already issued stay issued)."""
    tally = replace(current.tally, picker=replace(current.picker, budget=budget))
    return _rewrite_tally(op, current, tally)


def apply_config_budget(op: str, current: Selection, budget: int | None) -> Txn | None:
    """The deployment config's label_budget applies to the current round only when the config
    itself changed since it was last applied: a replica that starts (or restarts, or is
    added) with the same config changes nothing, so a budget set for the round survives."""
    if current.meta.config_budget == budget:
        return None
    meta = replace(current.meta, config_budget=budget)
    tally = replace(current.tally, picker=replace(current.picker, budget=budget))
    round_key = tally_key(current.picker.round)
    return Txn(op, expect={META: current.meta_version, round_key: current.tally_version},
               put={META: Put(meta.to_dict()), round_key: Put(tally.to_dict())})  # fmt: skip


# ---- swaps ------------------------------------------------------------------------------


def swap_target(current: Selection, margin: float, min_labels: int = 0) -> int:
    """The model to serve: the posterior's best once it leads the served one by more than
    `margin` (`picker.served_model`) and at least `min_labels` labels were applied since
    the last swap; else the served model."""
    picker = current.picker
    if current.meta.labels_since_swap(picker.round, picker.labels) < min_labels:
        return current.served
    weights = current.weights()
    for model in range(len(weights)):  # a model rolled back as a canary waits for a new round
        if model != current.served and current.meta.is_barred(model, picker.round):
            weights[model] = 0.0
    return served_model(weights, current.served, margin)


def swap(
    op: str,
    current: Selection,
    margin: float,
    trigger: str | None,
    now: float,
    min_labels: int = 0,
    mode: str = "instant",
) -> tuple[Txn | None, dict[str, Any] | None]:
    """Serve the posterior's best once it leads the served model by more than `margin`,
    with `min_labels` labels since the last swap. The compare-and-set covers both documents
    the decision read (the served model and the round's losses), so a decision on stale
    losses never lands. With mode `canary`, the swap starts a canary instead (traffic moves
    in steps, `service.replica.canary`); a canary whose model is no longer the target is
    cancelled."""
    target = swap_target(current, margin, min_labels)
    canary = current.meta.canary
    if mode == "canary" or canary is not None:
        if canary is not None and canary["to"] != target:
            return canary_event(op, current, None, "canary_cancel", now, trigger)
        if canary is not None or target == current.served:
            return None, None
        started = {"to": target, "from": current.served, "step": 0, "started_at": now}
        return canary_event(op, current, started, "canary_start", now, trigger, target)
    if target == current.served:
        return None, None
    return promote(op, current, target, now, trigger)


def swap_record(
    current: Selection, kind: str, to: int, now: float, trigger: str | None, **extra: Any
) -> dict[str, Any]:
    names = current.meta.models
    return {"time": now, "kind": kind, "from_model": names[current.served],
            "to_model": names[to], "labels": current.picker.labels,
            "round": current.picker.round, "trigger_item": trigger, **extra}  # fmt: skip


def promote(
    op: str, current: Selection, target: int, now: float, trigger: str | None, via: str = "swap"
) -> tuple[Txn, dict[str, Any]]:
    """The swap itself: `target` is served from now on (and any canary is over)."""
    record = swap_record(current, "swap", target, now, trigger, via=via)
    swapped_at = (current.picker.round, current.picker.labels)
    meta = replace(current.meta, served=target, version=current.meta.version + 1,
                   swapped_at=swapped_at, canary=None)  # fmt: skip
    round_key = tally_key(current.picker.round)
    txn = Txn(op, expect={META: current.meta_version, round_key: current.tally_version},
              put={META: Put(meta.to_dict())}, append={SWAPS: [record]},
              add={COUNTERS: {SWAPS_COUNTER: 1.0}}, result=record)  # fmt: skip
    return txn, record


def canary_event(
    op: str,
    current: Selection,
    canary: Mapping[str, Any] | None,
    kind: str,
    now: float,
    trigger: str | None = None,
    to: int | None = None,
    counters: Mapping[str, float] | None = None,
    **changes: Any,
) -> tuple[Txn, dict[str, Any]]:
    """A canary starts, moves a step, is cancelled or rolled back: meta's canary becomes
    `canary`; the event goes in the swap log (no version bump: the served model stays)."""
    to = to if to is not None else int((current.meta.canary or {})["to"])
    record = swap_record(current, kind, to, now, trigger, **changes.pop("record", {}))
    meta = replace(current.meta, canary=None if canary is None else dict(canary), **changes)
    txn = Txn(op, expect={META: current.meta_version}, put={META: Put(meta.to_dict())},
              append={SWAPS: [record]}, add={COUNTERS: dict(counters)} if counters else {},
              result=record)  # fmt: skip
    return txn, record
