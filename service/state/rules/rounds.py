"""Rounds, budgets and the selector of a round."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from picker import (
    initial_state,
)
from service.state.rules.documents import (
    META,
    Selection,
    Tally,
    audit_key,
    labeled_key,
    pool_key,
    queue_key,
    tally_key,
)
from service.state.rules.journal import journal_key
from service.state.rules.labelers import reviews_key
from service.state.store.base import Put, Txn


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
    drop = [queue_key(old), pool_key(old), labeled_key(old), reviews_key(old)]
    forgotten = old + 1 - rounds_kept
    if forgotten >= 0:
        put[tally_key(forgotten)] = Put(None)
        drop.extend([audit_key(forgotten), journal_key(forgotten)])
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


def switch_selector(op: str, current: Selection, selector: str) -> tuple[Txn | None, bool]:
    """The deployment's selector for the current round: (the change, whether the round
    can run `selector`). A round that runs it already needs nothing; one that has queued
    nothing (a start-up, before any item) takes it in place; otherwise (None, False): only
    a new round may change it, its items were asked for by the other rule."""
    if current.tally.selector == selector:
        return None, True
    if current.picker.queries or current.picker.labels:
        return None, False
    return _rewrite_tally(op, current, replace(current.tally, selector=selector)), True


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
