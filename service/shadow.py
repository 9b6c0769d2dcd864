"""Shadow evaluation: run sampled served items through every candidate, off the request
path, and let the picker count them and choose which to queue for labeling.

At most `max_in_flight` batches run at once per replica; beyond that, items are shed and
counted, so shadow work never queues without bound (nor while the store is stalled). A
batch's store write carries one op key for all its attempts: if the store's answer was
lost, the repeat is a no-op, so t is never counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from service.candidates import NO_CLASS
from service.live import LiveState, new_op
from service.metrics import LocalCounters
from service.pool import FloatMatrix
from service.rules import Batch
from service.schemas import RuntimeKnobs
from service.store import StoreError

logger = logging.getLogger("pickserve")
StoreCall = Callable[..., Awaitable[Any]]
# A batch whose write keeps failing is given up after this many attempts (0.5 s apart,
# after each attempt's own timeout): its items are then simply not observed.
WRITE_ATTEMPTS = 20


class ShadowEvaluator:
    def __init__(
        self,
        candidates: Any,
        live: LiveState,
        run_store: StoreCall,
        counters: LocalCounters,
        max_in_flight: int,
    ) -> None:
        self.candidates, self.live, self.run_store = candidates, live, run_store
        self.counters, self.max_in_flight = counters, max_in_flight
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
        # Each batch draws its coins from its own generator: the store write runs in a
        # worker thread, and a numpy Generator must not be shared across threads.
        batch_rng = np.random.default_rng(rng.integers(2**63))
        work = self._evaluate(features[chosen], [item_ids[i] for i in chosen], knobs, batch_rng)
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
        predictions = np.asarray(await self.candidates.shadow.remote(features), dtype=np.int64)
        faults = int((predictions == NO_CLASS).sum())
        if faults:
            self.counters.inc("errors", "nonfinite", value=faults)
        batch = Batch(item_ids, predictions, features)
        op = new_op("observe")
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await self.run_store(self.live.observe, op, batch, knobs.gamma, rng, time.time())
                break
            except StoreError as error:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                logger.info("shadow batch %s: store write failed, repeating: %s", op, error)
                await asyncio.sleep(0.5)
        self.counters.inc("shadow_items", "done", value=len(features))
