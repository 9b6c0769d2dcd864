"""A replica's canary counts (`swap_mode: canary`) and its verdict on the current step.

The canary's rules (start, step, promotion, rollback) are `service.state.rules.swaps`; this
module counts what this replica saw. Each router replica sends the share
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
from typing import Literal

from service.config.knobs import RuntimeKnobs

MIN_REQUESTS = 10  # canary requests at a step before an error rate may roll it back
Verdict = Literal["advance", "rollback"]


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
