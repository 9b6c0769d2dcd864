"""Swaps and canaries: when the posterior's best is served, and how a canary starts,
moves a step, is promoted, cancelled or rolled back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from picker import PickerState, served_model
from service.config.knobs import RuntimeKnobs
from service.state.rules.documents import COUNTERS, META, SWAPS, SWAPS_COUNTER, Selection, tally_key
from service.state.store.base import Put, Txn


def swap_target(current: Selection, margin: float, min_labels: int = 0) -> int:
    """The model to serve: the posterior's best once it leads the served one by more than
    `margin` (`picker.served_model`) and at least `min_labels` labels were applied since
    the last swap; else the served model. A served model the elimination test took out of
    the round gives way to the best at once."""
    picker = current.picker
    if not current.pooled and current.tally.out()[current.served]:
        return current.best  # the served model left the round: no margin holds it
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


def change_record(
    kind: str,
    from_model: str,
    to_model: str,
    picker: PickerState,
    now: float,
    trigger: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An entry of the swap log (a swap, a canary's event, a candidate added or removed):
    what changed, when, at which label count of which round."""
    return {"time": now, "kind": kind, "from_model": from_model, "to_model": to_model,
            "labels": picker.labels, "round": picker.round, "trigger_item": trigger,
            **extra}  # fmt: skip


def swap_record(
    current: Selection, kind: str, to: int, now: float, trigger: str | None, **extra: Any
) -> dict[str, Any]:
    """A swap log entry from the served model to model `to`."""
    names = current.meta.models
    return change_record(kind, names[current.served], names[to], current.picker, now, trigger,
                         **extra)  # fmt: skip


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


def canary_key(canary: Mapping[str, Any]) -> tuple[int, int, float]:
    return int(canary["to"]), int(canary["step"]), float(canary["started_at"])


def canary_share(canary: Mapping[str, Any], knobs: RuntimeKnobs) -> float:
    """The share of served requests the canary gets at its current step."""
    steps = knobs.canary_steps
    return steps[min(int(canary["step"]), len(steps) - 1)]


def advance(
    op: str, current: Selection, key: tuple[int, int, float], steps: int, now: float, why: str
) -> tuple[Txn | None, dict[str, Any] | None]:
    """The canary moves a step, or is promoted after its last one; nothing if the canary
    is no longer the one `key` names (another replica moved it)."""
    canary = current.meta.canary
    if canary is None or canary_key(canary) != key:
        return None, None
    step = int(canary["step"])
    if step + 1 >= steps:
        return promote(op, current, int(canary["to"]), now, None, via="canary")
    moved = {**canary, "step": step + 1}
    return canary_event(op, current, moved, "canary_step", now, record={"reason": why})


def rollback(
    op: str, current: Selection, key: tuple[int, int, float], now: float, why: str
) -> tuple[Txn | None, dict[str, Any] | None]:
    """The canary ends, the served model stays; the canary's model is barred for the
    round, so the posterior cannot restart it at once."""
    canary = current.meta.canary
    if canary is None or canary_key(canary) != key:
        return None, None
    round_number = current.picker.round
    barred = current.meta.barred
    models = barred[1] if barred is not None and barred[0] == round_number else ()
    return canary_event(
        op, current, None, "rollback", now, counters={"canary_rollbacks": 1.0},
        barred=(round_number, (*models, int(canary["to"]))), record={"reason": why},
    )  # fmt: skip
