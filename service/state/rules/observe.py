"""Observing live items (shadow evaluation): the picker sees a batch, queries and
queues what it chose, and the round's drift monitor counts it in the same step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from picker import (
    cap_queries,
    decide_queries,
    observe,
    record_queries,
)
from picker.pooled import disagreeing
from service.models.pool_file import NOT_EVALUATED
from service.state import drift
from service.state.drift import DriftConfig, Monitor
from service.state.rules.documents import (
    COUNTERS,
    DRIFT_COUNTER,
    QUERIES_COUNTER,
    Item,
    Selection,
    Tally,
    item_key,
    pool_key,
    queue_key,
    tally_key,
)
from service.state.store.base import Put, Retention, Txn


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
    # The large-pool mode (`rules.active`): each row's q and coin, decided over the active
    # `columns` before the batch came here; the rows the coins chose hold every
    # candidate's prediction, the others NOT_EVALUATED outside the active columns.
    decided: tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]] | None = None
    columns: Sequence[int] | None = None


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
    q, chosen = _choose(current, existing, batch, gamma, rng, pool_max_items)
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
        tally, evidence = _watch_drift(current, tally, batch, drift_config)
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


def _choose(
    current: Selection,
    existing: set[str],
    batch: Batch,
    gamma: float,
    rng: np.random.Generator,
    pool_max_items: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Each item's q and the rows to queue: the picker's coins within the round's budget,
    or, in a pool-based round, every fresh item the candidates disagree on (q = 1)."""
    picker = current.picker
    fresh = np.array([i not in existing for i in batch.item_ids], dtype=bool)
    if current.pooled:
        room = max(0, pool_max_items - picker.queries)
        chosen = np.flatnonzero(fresh & disagreeing(batch.predictions))[:room]
        return np.ones(len(batch.item_ids)), chosen
    if batch.decided is not None:
        q, coins = batch.decided
        # A row decided from an older view (just before a new round, say) may miss the
        # prediction of a candidate in the round now: a label on it could not move that
        # candidate's loss, so it is not queued.
        in_round = ~current.tally.out()
        coins = coins & (batch.predictions[:, in_round] != NOT_EVALUATED).all(axis=1)
    else:
        decisions = decide_queries(
            picker.loss_array, picker.step + 1, batch.predictions, gamma, None, rng
        )
        q, coins = decisions.q, decisions.query
    return q, np.flatnonzero(cap_queries(coins & fresh, picker.queries_left))


def _watch_drift(
    current: Selection, tally: Tally, batch: Batch, config: DriftConfig
) -> tuple[Tally, dict[str, Any] | None]:
    """The round's drift monitor counts the batch; evidence when it found a change."""
    picker = current.picker
    monitor = current.tally.monitor or Monitor.start(current.served, config.n_classes)
    if current.tally.out()[monitor.model]:
        # the watched model left the round (the elimination test): it is not evaluated
        # again, so the monitor starts over, from a fresh reference, on the served model
        monitor = Monitor.start(current.served, config.n_classes)
    # In the large-pool mode only the active columns ran on every row, and the active set
    # moves with the losses: its disagreement rate is not comparable between windows, so
    # the monitor counts the watched model's classes alone there.
    large = batch.columns is not None
    if large and monitor.model not in set(batch.columns or ()):
        return tally, None  # the watched model did not run on this batch (a new round began)
    monitor, evidence = drift.observe(monitor, batch.predictions, config, picker.step,
                                      disagreement=not large)  # fmt: skip
    if evidence is not None:
        evidence = {**evidence, "round": picker.round,
                    "watched_model": current.meta.models[monitor.model]}  # fmt: skip
    return replace(tally, monitor=monitor), evidence
