"""Calling models off the event loop, with a timeout on every call.

A model's `predict_proba` runs in worker threads of its own, so a slow or hanging model
never blocks the replica's event loop (health checks, labeling and other models still
answer). Each call waits at most `timeout_s`. A thread cannot be stopped from outside, so
a call that timed out keeps its thread until the model returns: while every thread of a
model is held by such a call, the model is reported hung at once instead of queueing
more work behind it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from service.models.loaders import Candidate, predicted_classes
from service.models.pool_file import FloatMatrix
from service.models.resident import Residency


class ModelError(RuntimeError):
    """A model raised, timed out, is hung, or returned non-finite probabilities. The
    message is one line naming the model."""

    def __init__(self, model: str, reason: str, kind: str = "error") -> None:
        super().__init__(f"model {model!r} {reason}")
        self.model, self.kind = model, kind


class _Lane:
    """One model's threads and the calls still running in them."""

    def __init__(self, threads: int, name: str) -> None:
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=f"model-{name}")
        self.threads = threads
        self.lock = threading.Lock()
        self.started: dict[int, float] = {}  # call id -> when its thread started it

    def overdue(self, now: float, timeout_s: float) -> int:
        with self.lock:
            return sum(now - t > timeout_s for t in self.started.values())


class ModelRunner:
    def __init__(
        self,
        candidates: Sequence[Candidate],
        timeout_s: float,
        threads_per_model: int = 2,
        clock: Callable[[], float] = time.monotonic,
        residency: Residency | None = None,
    ) -> None:
        self.timeout_s, self.threads, self.clock = timeout_s, threads_per_model, clock
        self.residency = residency  # None: every model stays loaded
        self.candidates: list[Candidate] = []
        self.lanes: list[_Lane] = []
        self._ids = iter(range(1 << 62))
        for candidate in candidates:
            self.add(candidate)

    def add(self, candidate: Candidate) -> None:
        self.candidates.append(candidate)
        self.lanes.append(_Lane(self.threads, candidate.name))

    def use(self, candidates: Sequence[Candidate]) -> None:
        """Serve these candidates from now on (the pool changed at run time): the threads of
        kept ones stay, removed ones' threads end once their calls return."""
        lanes = dict(zip(self.names, self.lanes, strict=True))
        kept = {c.name for c in candidates}
        if self.residency is not None:
            self.residency.forget([n for n in lanes if n not in kept])
        for name, lane in lanes.items():
            if name not in kept:
                lane.executor.shutdown(wait=False, cancel_futures=True)
        self.candidates = list(candidates)
        self.lanes = [lanes.get(c.name) or _Lane(self.threads, c.name) for c in candidates]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.candidates]

    def hung(self, index: int) -> bool:
        """Every thread of the model is held by a call that ran past the timeout."""
        lane = self.lanes[index]
        return lane.overdue(self.clock(), self.timeout_s) >= lane.threads

    async def probabilities(self, index: int, features: FloatMatrix) -> FloatMatrix:
        """The model's class probabilities, finite, within the timeout; else ModelError."""
        result = await self.raw_probabilities(index, features)
        if not np.all(np.isfinite(result)):
            name = self.candidates[index].name
            raise ModelError(
                name, "failed: it returned non-finite class probabilities", kind="nonfinite"
            )
        return result

    async def raw_probabilities(self, index: int, features: FloatMatrix) -> FloatMatrix:
        """The model's output within the timeout (finite or not); else ModelError."""
        candidate, lane = self.candidates[index], self.lanes[index]
        if self.hung(index):
            raise ModelError(candidate.name, f"is hung (still running calls past "
                               f"{self.timeout_s:g} s)", kind="timeout")  # fmt: skip
        call = next(self._ids)

        def run() -> FloatMatrix:
            with lane.lock:
                lane.started[call] = self.clock()
            try:
                # a model not in memory is loaded here, in the model's own thread
                loaded = candidate if self.residency is None else self.residency.resident(candidate)
                return loaded.class_probabilities(features)
            finally:
                with lane.lock:
                    lane.started.pop(call, None)

        future = asyncio.get_running_loop().run_in_executor(lane.executor, run)
        try:
            result = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise ModelError(candidate.name, f"timed out after {self.timeout_s:g} s "
                               "(model_timeout_s)", kind="timeout") from None  # fmt: skip
        except Exception as error:
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise ModelError(candidate.name, f"failed: {type(error).__name__}: {reason}") from error
        return result

    async def predictions(
        self, features: FloatMatrix, no_class: int, models: Sequence[int] | None = None
    ) -> Any:
        """Every model's (or the listed `models'`) predicted class per row, shape (rows,
        models); `no_class` on rows where a model's output is not finite. A model that
        raises, times out or is hung fails the whole call (ModelError): its items are
        then not observed at all."""
        columns = []
        for index in range(len(self.candidates)) if models is None else models:
            probabilities = await self.raw_probabilities(index, features)
            columns.append(predicted_classes(probabilities, no_class))
        return np.stack(columns, axis=1).astype(np.int64)

    def close(self) -> None:
        for lane in self.lanes:
            lane.executor.shutdown(wait=False, cancel_futures=True)
