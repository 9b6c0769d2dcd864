"""Shadow evaluation: run sampled served items through every candidate, off the request
path, and queue the ones the picker's query rule chooses for labeling.

At most `max_in_flight` batches run at once per replica; beyond that, items are shed and
counted, so shadow work never queues without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from picker import decide_queries
from service.metrics import LocalCounters
from service.pool import FloatMatrix
from service.schemas import RuntimeKnobs
from service.store import QueuedItem, StateStore

logger = logging.getLogger("pickserve")


class ShadowEvaluator:
    def __init__(
        self, candidates: Any, store: StateStore, counters: LocalCounters, max_in_flight: int
    ) -> None:
        self.candidates, self.store, self.counters = candidates, store, counters
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def start(
        self,
        features: FloatMatrix,
        item_ids: list[str],
        knobs: RuntimeKnobs,
        rng: np.random.Generator,
    ) -> None:
        """Sample items at knobs.shadow_rate and evaluate them in a background task."""
        chosen = np.flatnonzero(rng.random(len(features)) < knobs.shadow_rate)
        if chosen.size == 0:
            return
        if self.in_flight >= self.max_in_flight:
            self.counters.inc("shadow_items", "shed", value=chosen.size)
            return
        self.in_flight += 1
        work = self._evaluate(features[chosen], [item_ids[i] for i in chosen], knobs, rng)
        asyncio.get_running_loop().create_task(work).add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            self.counters.inc("errors", "shadow")
            logger.warning("shadow evaluation failed: %s", task.exception())

    async def _evaluate(
        self,
        features: FloatMatrix,
        item_ids: list[str],
        knobs: RuntimeKnobs,
        rng: np.random.Generator,
    ) -> None:
        predictions = await self.candidates.shadow.remote(features)
        before = await asyncio.to_thread(self.store.advance, len(features))
        decisions = decide_queries(
            before.loss_array, before.step + 1, predictions, knobs.gamma, before.queries_left, rng
        )
        self.counters.inc("shadow_items", "done", value=len(features))
        now = time.time()
        items = [
            QueuedItem(item_ids[i], before.round, float(decisions.q[i]),
                       predictions[i].tolist(), features[i].tolist(), now)
            for i in np.flatnonzero(decisions.query)
        ]  # fmt: skip
        if items:
            queued = await asyncio.to_thread(self.store.enqueue, before.round, items, before.budget)
            self.counters.inc("queries", value=queued)
