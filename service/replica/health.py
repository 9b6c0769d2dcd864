"""Which candidates this replica may ask to answer a client, and in what order.

A model that fails a served request (raises, times out, hangs, answers NaN) is marked
unhealthy here and skipped: the request, and the next ones, are answered by the next
candidate in posterior order (failover). A background probe runs each unhealthy model on
a recent real input every `PROBE_S`; once it answers, it serves again. Pure bookkeeping:
the probe itself and the clock are the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROBE_S = 1.0
FAILOVER_TRIES = 3  # models asked for one request at most: the served one and two more


@dataclass(frozen=True)
class Unhealthy:
    since: float
    reason: str


class ModelHealth:
    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.unhealthy: dict[str, Unhealthy] = {}

    def failed(self, name: str, reason: str, now: float) -> None:
        self.unhealthy.setdefault(name, Unhealthy(now, reason))

    def recovered(self, name: str) -> None:
        self.unhealthy.pop(name, None)

    def healthy(self, name: str) -> bool:
        return name not in self.unhealthy

    def rename(self, names: Sequence[str]) -> None:
        """The pool changed (candidates added or removed at run time)."""
        self.names = list(names)
        self.unhealthy = {n: u for n, u in self.unhealthy.items() if n in self.names}

    def order(
        self, served: int, weights: Sequence[float], tries: int = FAILOVER_TRIES
    ) -> list[int]:
        """The models to ask, in turn: the served one, then the others by posterior weight
        (the most likely best first), unhealthy ones left out; if every model is unhealthy,
        the served one is asked all the same (a failure answers better than nothing)."""
        ranked = [int(i) for i in np.argsort(-np.asarray(weights), kind="stable") if i != served]
        candidates = [served, *ranked]
        usable = [i for i in candidates if self.healthy(self.names[i])]
        return (usable or [served])[:tries]
