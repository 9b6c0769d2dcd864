"""Shadow evaluation: run sampled served items through every candidate, off the request
path, and let the picker count them and choose which to queue for labeling.

- **Sampling.** Each served item is sampled with the paced rate (`paced_rate`): the
  `shadow_rate` knob while the label queue needs items, the trickle rate while it holds
  `queue_target` items waiting. The coin never looks at the item, so the sampled items are
  a uniform sample of the traffic either way (README: "Shadow pacing").
- **Batching.** A replica gathers sampled items and sends them to the Candidates
  deployment together (`batch_size` items, or after `wait_s`): one call of each model for
  many items, which is what makes shadow work cheap.
- **Bounds.** At most `max_in_flight` batches run at once per replica; beyond that, items
  are shed and counted, so shadow work never queues without bound (nor while the store is
  stalled). A batch that takes longer than `timeout_s` is cancelled, shed and counted
  (`errors{kind="timeout"}`); a model that fails a batch sheds it too. Shed items are not
  observed at all: t counts only items every candidate answered.
- **Exactly once.** A batch's store write carries one op key for all its attempts: if the
  store's answer was lost, the repeat is a no-op, so t is never counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from picker.modelpicker import IntArray
from service.config.knobs import RuntimeKnobs, active_size
from service.models.candidates import Failed
from service.models.pool_file import NO_CLASS, NOT_EVALUATED, FloatMatrix
from service.replica.metrics import LocalCounters
from service.state import rules
from service.state.drift import DriftConfig
from service.state.live import LiveState, new_op
from service.state.rules import Batch, Selection
from service.state.store.base import StoreError

logger = logging.getLogger("pickserve")
StoreCall = Callable[..., Awaitable[Any]]
# A batch whose write keeps failing is given up after this many attempts (0.5 s apart,
# after each attempt's own timeout): its items are then simply not observed.
WRITE_ATTEMPTS = 20


def paced_rate(knobs: RuntimeKnobs, waiting: int | None) -> float:
    """The share of served items to sample now: `shadow_rate` while the label queue needs
    items (fewer than `queue_target` waiting, or nothing known yet), else the trickle."""
    if knobs.queue_target is None or waiting is None or waiting < knobs.queue_target:
        return knobs.shadow_rate
    return min(knobs.shadow_rate, knobs.shadow_trickle_rate)


async def awaited(response: Any) -> Any:
    """A Ray DeploymentResponse (or any awaitable) as a coroutine, for wait_for."""
    return await response


class ShadowEvaluator:
    def __init__(
        self,
        candidates: Any,
        live: LiveState,
        run_store: StoreCall,
        counters: LocalCounters,
        max_in_flight: int,
        batch_size: int = 1,
        wait_s: float = 0.0,
        timeout_s: float = 60.0,
        n_classes: int = 2,
        models: Callable[[], Sequence[str]] | None = None,
        selection: Callable[[], Selection | None] | None = None,
        priors: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.candidates, self.live, self.run_store = candidates, live, run_store
        self.n_classes, self.models, self.selection = n_classes, models, selection
        self.priors = priors
        self.counters, self.max_in_flight = counters, max_in_flight
        self.batch_size, self.wait_s, self.timeout_s = batch_size, wait_s, timeout_s
        self.in_flight = 0
        self._rows: list[FloatMatrix] = []
        self._ids: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def buffered(self) -> int:
        return len(self._ids)

    def offer(
        self,
        features: FloatMatrix,
        item_ids: list[str],
        rate: float,
        knobs: RuntimeKnobs,
        rng: np.random.Generator,
    ) -> None:
        """Sample served items at `rate` into the next shadow batch."""
        chosen = np.flatnonzero(rng.random(len(features)) < rate)
        if chosen.size == 0:
            return
        self._rows.append(features[chosen])
        self._ids.extend(item_ids[i] for i in chosen)
        if len(self._ids) >= self.batch_size:
            self.flush(knobs, rng)
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.wait_s, self.flush, knobs, rng)

    def flush(self, knobs: RuntimeKnobs, rng: np.random.Generator) -> None:
        """Send the gathered items as one batch now (or shed them, past the bound)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._ids:
            return
        features, item_ids = np.vstack(self._rows), self._ids
        self._rows, self._ids = [], []
        if self.in_flight >= self.max_in_flight:
            self.counters.inc("shadow_items", "shed", value=len(item_ids))
            return
        self.in_flight += 1
        # Each batch draws its coins from its own generator: the store write runs in a
        # worker thread, and a numpy Generator must not be shared across threads.
        batch_rng = np.random.default_rng(rng.integers(2**63))
        work = self._evaluate(features, item_ids, knobs, batch_rng)
        asyncio.get_running_loop().create_task(work).add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            self.counters.inc("errors", "shadow")
            logger.warning("shadow evaluation failed: %s", task.exception())

    async def _predictions(
        self,
        features: FloatMatrix,
        models: tuple[str, ...] | None,
        columns: tuple[int, ...] | None = None,
    ) -> Any:
        """Every candidate's (or the `columns'`) classes for the batch, or None after
        counting why not."""
        response = self.candidates.shadow.remote((features, models, columns))
        try:
            result = await asyncio.wait_for(awaited(response), self.timeout_s)
        except TimeoutError:
            cancel = getattr(response, "cancel", None)
            if cancel is not None:
                cancel()
            self._shed(len(features), "timeout",
                       f"shadow batch timed out after {self.timeout_s:g} s")  # fmt: skip
            return None
        if isinstance(result, Failed):
            kind = "timeout" if result.kind == "timeout" else "shadow"
            self._shed(len(features), kind, result.message)
            return None
        return result

    async def every_prediction(self, features: FloatMatrix) -> IntArray | None:
        """Every candidate's classes for these rows (gold items, shown to labelers like
        any item), counted as labeling evaluations; None if the batch failed (counted)."""
        models = None if self.models is None else tuple(self.models())
        result = await self._predictions(features, models)
        if result is None:
            return None
        predictions: IntArray = np.asarray(result, dtype=np.int64)
        self.counters.inc("model_evaluations", "labeling", value=predictions.size)
        return predictions

    def _shed(self, items: int, kind: str, reason: str) -> None:
        self.counters.inc("errors", kind)
        self.counters.inc("shadow_items", "shed", value=items)
        logger.warning("shadow batch of %d items shed: %s", items, reason)

    async def _evaluate(
        self,
        features: FloatMatrix,
        item_ids: list[str],
        knobs: RuntimeKnobs,
        rng: np.random.Generator,
    ) -> None:
        models = None if self.models is None else tuple(self.models())
        current = None if self.selection is None else self.selection()
        columns = None
        if current is not None and models is not None and current.meta.models == models:
            priors = None if self.priors is None else self.priors()
            columns = rules.active_columns(current, active_size(knobs), priors)
        if columns is None or current is None or models is None:
            result = await self._predictions(features, models)
            if result is None:
                return
            predictions = np.asarray(result, dtype=np.int64)
            batch = Batch(item_ids, predictions, features, models)
            self.counters.inc("model_evaluations", "shadow", value=predictions.size)
        else:
            checked = await self._active_batch(current, features, item_ids, models, columns,
                                               knobs, rng)  # fmt: skip
            if checked is None:
                return
            batch, predictions = checked, checked.predictions
        faults = int((predictions == NO_CLASS).sum())
        if faults:
            self.counters.inc("errors", "nonfinite", value=faults)
        monitor = None
        if knobs.drift_action != "off":
            monitor = DriftConfig(knobs.drift_window, knobs.drift_alpha, self.n_classes)
        observed = await self._repeated(
            self.live.observe, new_op("observe"), batch, knobs.gamma, rng, time.time(), monitor,
            knobs.pool_max_items,
        )  # fmt: skip
        if observed.stale:  # a candidate was added or removed meanwhile
            self.counters.inc("shadow_items", "shed", value=len(features))
            return
        self.counters.inc("shadow_items", "done", value=len(features))
        if observed.drift is not None:
            await self._drifted(observed.drift, knobs)

    async def _active_batch(
        self,
        current: Selection,
        features: FloatMatrix,
        item_ids: list[str],
        models: tuple[str, ...],
        columns: tuple[int, ...],
        knobs: RuntimeKnobs,
        rng: np.random.Generator,
    ) -> Batch | None:
        """The large-pool mode: the active set runs on every item, q and the coins are
        decided over it (from this replica's last known selection: a past state, so q is
        still decided before the coin), and the items the coins chose run through every
        candidate still in the round before they are queued (the label check), so a label
        moves every such candidate's loss at once. Columns not run stay NOT_EVALUATED."""
        active = await self._predictions(features, models, columns)
        if active is None:
            return None
        active = np.asarray(active, dtype=np.int64)
        q, coins = rules.decide_active(current, active, columns, knobs.gamma, rng)
        predictions = np.full((len(features), len(models)), NOT_EVALUATED, dtype=np.int64)
        predictions[:, list(columns)] = active
        rest = rules.label_check_columns(current, columns)
        chosen = np.flatnonzero(coins)
        self.counters.inc("model_evaluations", "shadow", value=active.size)
        if chosen.size and rest:
            checked = await self._predictions(features[chosen], models, rest)
            if checked is None:
                return None
            predictions[np.ix_(chosen, np.array(rest, dtype=np.intp))] = np.asarray(
                checked, dtype=np.int64
            )
            self.counters.inc("model_evaluations", "labeling", value=chosen.size * len(rest))
        return Batch(item_ids, predictions, features, models, decided=(q, coins),
                     columns=columns)  # fmt: skip

    async def _drifted(self, evidence: dict[str, Any], knobs: RuntimeKnobs) -> None:
        logger.warning("drift in round %s (action %s): %s", evidence["round"],
                       knobs.drift_action, evidence)  # fmt: skip
        if knobs.drift_action == "new_round":
            await self._repeated(self.live.start_round_on_drift, evidence, time.time())

    async def _repeated(self, operation: Callable[..., Any], *args: Any) -> Any:
        """A keyed store write, repeated (with the same key) until it lands or gives up."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return await self.run_store(operation, *args)
            except StoreError as error:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                logger.info("shadow work: store write failed, repeating: %s", error)
                await asyncio.sleep(0.5)
