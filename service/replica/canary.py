"""Canary swaps (`swap_mode: canary`): traffic moves to the posterior's new best in steps.

A canary starts instead of a swap (`rules.swap`). Each router replica sends the share
`canary_steps[step]` of its served requests to the canary model (a failure there is
answered by the served model within the request, and counted against the canary). Once
this replica has sent `canary_step_requests` requests at the current step with an error
rate within `canary_max_error_rate` (and a median latency within `canary_max_latency_ms`,
when set), the canary moves a step; after the last step it is promoted (a swap). An error
rate or latency past its bound rolls it back: the served model stays, the rollback is
recorded with its reason, and the model is not tried as a canary again in this round.
The store's compare-and-set on the canary step makes replicas agree on every move.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any, Literal

from service.config.knobs import RuntimeKnobs
from service.state.rules import Selection, canary_event, promote
from service.state.store.base import Txn

MIN_REQUESTS = 10  # canary requests at a step before an error rate may roll it back
Verdict = Literal["advance", "rollback"]


def canary_key(canary: Mapping[str, Any]) -> tuple[int, int, float]:
    return int(canary["to"]), int(canary["step"]), float(canary["started_at"])


def canary_share(canary: Mapping[str, Any], knobs: RuntimeKnobs) -> float:
    """The share of served requests the canary gets at its current step."""
    steps = knobs.canary_steps
    return steps[min(int(canary["step"]), len(steps) - 1)]


class CanaryStats:
    """This replica's canary requests at the current step (reset when the step moves)."""

    def __init__(self) -> None:
        self.key: tuple[int, int, float] | None = None
        self.requests = 0
        self.errors = 0
        self.latency_ms: list[float] = []

    def record(self, key: tuple[int, int, float], ok: bool, latency_ms: float) -> None:
        if key != self.key:
            self.key, self.requests, self.errors, self.latency_ms = key, 0, 0, []
        self.requests += 1
        self.errors += not ok
        if ok and len(self.latency_ms) < 10_000:
            self.latency_ms.append(latency_ms)

    def verdict(
        self, key: tuple[int, int, float], knobs: RuntimeKnobs
    ) -> tuple[Verdict, str] | None:
        """What this replica's requests say about the canary at this step, if anything."""
        if key != self.key or self.requests == 0:
            return None
        rate = self.errors / self.requests
        if self.requests >= MIN_REQUESTS and rate > knobs.canary_max_error_rate:
            return "rollback", (f"error rate {rate:.2f} over {self.requests} requests > "
                                f"{knobs.canary_max_error_rate:g}")  # fmt: skip
        bound = knobs.canary_max_latency_ms
        if bound is not None and len(self.latency_ms) >= MIN_REQUESTS:
            median = statistics.median(self.latency_ms)
            if median > bound:
                return "rollback", f"median latency {median:.1f} ms > {bound:g} ms"
        if self.requests >= knobs.canary_step_requests:
            return "advance", f"{self.requests} requests, error rate {rate:.2f}"
        return None


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
