"""What a router replica runs beside its routes: the store's own thread pool, the last
known selection, and three background loops.

- refresh (every `selection_refresh_s`): re-read the selection and reconcile the served
  model with the posterior's best (past `switch_margin`), so a swap that a failed request
  did not make is made here within a second; apply a changed deployment label budget;
  read how many items wait in the label queue (shadow pacing).
- flush (every 0.5 s): add this replica's metric counts to the store, one op key per batch
  until it lands, so a lost answer never counts them twice.
- upkeep (every 2 s): bounded trimming of expired queue entries and records.

Serving reads only the in-memory selection: it never waits on the store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from service.config.knobs import RuntimeKnobs
from service.replica.metrics import LocalCounters
from service.state.live import LiveState, new_op
from service.state.rules import Selection, swap_target
from service.state.store.base import StoreError

logger = logging.getLogger("pickserve")
T = TypeVar("T")
COUNTER_FLUSH_S = 0.5
UPKEEP_S = 2.0
_UNSET = object()


class ReplicaRuntime:
    def __init__(self, live: LiveState, refresh_s: float, store_threads: int = 8) -> None:
        self.live, self.refresh_s = live, refresh_s
        self.executor = ThreadPoolExecutor(store_threads, thread_name_prefix="pickserve-store")
        self.counters = LocalCounters()
        self.knobs = RuntimeKnobs()
        self.selection: Selection | None = None
        self.waiting: int | None = None  # label queue items waiting, as of the last refresh
        self._pending_budget: Any = _UNSET
        self._pending_selector: str | None = None
        self._pending_counters: tuple[str, dict[str, float]] | None = None
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._extra: list[tuple[Callable[[], Any], float]] = []

    async def run_store(self, function: Callable[..., T], *args: Any) -> T:
        """A blocking store call in the store's own threads (bounded by its timeouts)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, functools.partial(function, *args))
        except StoreError:
            self.counters.inc("errors", "store")
            raise

    def also_every(self, body: Callable[[], Any], period_s: float) -> None:
        """Another background loop (registered before `start`)."""
        self._extra.append((body, period_s))

    def start(self) -> None:
        loops = [(self.refresh, self.refresh_s), (self.flush, COUNTER_FLUSH_S),
                 (self.upkeep, UPKEEP_S), *self._extra]  # fmt: skip
        for loop_body, period in loops:
            self._tasks.append(
                asyncio.get_running_loop().create_task(self._every(loop_body, period))
            )

    async def _every(self, body: Callable[[], Any], period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await body()
            except StoreError as error:
                logger.warning("%s: state store unavailable: %s", body.__name__, error)
            except Exception:
                logger.exception("%s failed", body.__name__)

    # ---- the selection ---------------------------------------------------------------------

    def configure(self, knobs: RuntimeKnobs) -> None:
        """New knobs from user_config; a changed label budget reaches the store from the
        refresh loop (`rules.apply_config_budget` decides whether it is a change). The
        selector is applied at once, before the replica takes traffic, so that a fresh
        round takes it in place (`LiveState.apply_config_selector`); if the store fails
        here, the refresh loop applies it."""
        self.knobs = knobs
        self._pending_budget = knobs.label_budget
        try:
            self.live.apply_config_selector(knobs.selector, time.time())
            self._pending_selector = None
        except StoreError as error:
            logger.warning("selector %s waits for the store: %s", knobs.selector, error)
            self._pending_selector = knobs.selector

    async def refresh(self) -> None:
        if self._pending_budget is not _UNSET:
            budget = self._pending_budget
            await self.run_store(self.live.apply_config_budget, new_op("config"), budget)
            if self._pending_budget is budget:
                self._pending_budget = _UNSET
        if self._pending_selector is not None:
            selector = self._pending_selector
            await self.run_store(self.live.apply_config_selector, selector, time.time())
            if self._pending_selector is selector:
                self._pending_selector = None
        knobs = self.knobs
        self.waiting = await self.run_store(self.live.waiting, time.time(), knobs.query_ttl_s)
        selection = await self.run_store(self.live.selection)
        target = swap_target(selection, knobs.switch_margin, knobs.min_labels_between_swaps)
        canary = selection.meta.canary
        stale = target != selection.served if canary is None else canary["to"] != target
        if stale:
            await self.reconcile(trigger=None)
            return
        self.selection = selection

    async def reconcile(self, trigger: str | None) -> Selection:
        """Make the served model follow the posterior's best; returns the fresh selection."""
        knobs = self.knobs
        await self.run_store(
            self.live.reconcile, knobs.switch_margin, trigger, time.time(),
            knobs.min_labels_between_swaps, knobs.swap_mode,
        )  # fmt: skip
        self.selection = await self.run_store(self.live.selection)
        return self.selection

    # ---- counters and upkeep -------------------------------------------------------------

    async def flush(self) -> None:
        async with self._flush_lock:
            if self._pending_counters is None:
                deltas = self.counters.drain()
                if not deltas:
                    return
                self._pending_counters = (new_op("counters"), deltas)
            op, deltas = self._pending_counters
            await self.run_store(self.live.add_counters, op, deltas)
            self._pending_counters = None

    async def upkeep(self) -> None:
        await self.run_store(self.live.maintain, time.time(), self.knobs.query_ttl_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
