"""Answering a client's items: which model, where it runs, and what happens when it fails.

- **Where.** With `serve_from: router` the models run in this replica (`ModelRunner`):
  no extra hop on the request path. With `serve_from: candidates` the router asks the
  Candidates deployment, for pools too large to load in every router replica.
- **Failover.** When the served model raises, times out or answers NaN, the request is
  answered by the next candidate in posterior order within the same request, and the
  failing model is marked unhealthy and skipped until a background probe sees it answer
  again (`service.replica.health`). With failover off, the failure is a 503 naming the model.
- **Counts.** Requests, items and latency per answering model; errors by kind;
  failovers per failing model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from service.models.candidates import Failed
from service.models.pool_file import FloatMatrix
from service.models.runner import ModelError, ModelRunner
from service.replica.health import ModelHealth
from service.replica.metrics import LocalCounters
from service.replica.shadow import awaited

logger = logging.getLogger("pickserve")


@dataclass(frozen=True)
class Answer:
    model: int  # the model that answered
    probabilities: FloatMatrix
    failed_over_from: str | None = None  # the served model, when another one answered


class Server:
    def __init__(
        self,
        names: list[str],
        runner: ModelRunner | None,
        candidates: Any,
        counters: LocalCounters,
        timeout_s: float,
    ) -> None:
        self.names, self.runner, self.candidates = names, runner, candidates
        self.counters, self.timeout_s = counters, timeout_s
        self.health = ModelHealth(names)
        self._probe_features: FloatMatrix | None = None

    async def probabilities(self, index: int, features: FloatMatrix) -> FloatMatrix:
        """Model `index`'s answer: in this process, or from the Candidates deployment."""
        if self.runner is not None:
            if self.runner.residency is not None:  # the model answering clients stays warm
                self.runner.residency.pin(self.names[index])
            return await self.runner.probabilities(index, features)
        name = self.names[index]
        response = self.candidates.answer.remote((index, features))
        try:  # the replica bounds the model call itself; this also bounds its queue
            result = await asyncio.wait_for(awaited(response), self.timeout_s + 2.0)
        except TimeoutError:
            response.cancel()
            raise ModelError(name, f"timed out after {self.timeout_s:g} s (model_timeout_s)",
                             kind="timeout") from None  # fmt: skip
        except Exception as error:  # the deployment itself failed (a replica died, say)
            reason = str(error).strip().splitlines()[-1]
            raise ModelError(name, f"failed: {reason}") from error
        if isinstance(result, Failed):
            raise result.error()
        probabilities: FloatMatrix = result
        return probabilities

    async def run(self, index: int, features: FloatMatrix) -> FloatMatrix:
        """One model's answer, counted; a failure is counted and raised (ModelError)."""
        started, model = time.perf_counter(), self.names[index]
        self.counters.inc("model_evaluations", "served", value=len(features))
        try:
            probabilities = await self.probabilities(index, features)
        except ModelError as failure:
            self.counters.inc("errors", "timeout" if failure.kind == "timeout" else "model")
            logger.warning("%s", failure)
            raise
        self.counters.inc("requests", model)
        self.counters.inc("items_served", model, value=len(features))
        self.counters.observe_latency(model, time.perf_counter() - started)
        self._probe_features = features[:1]
        return probabilities

    async def answer(
        self, served: int, weights: Any, features: FloatMatrix, failover: bool
    ) -> Answer:
        """The served model's answer, or with failover the next healthy candidate's by
        posterior weight (`weights()` is called only when the served model fails)."""
        if not failover:
            return Answer(served, await self.run(served, features))
        failures: list[str] = []
        healthy_first = self.health.healthy(self.names[served])
        order = [served] if healthy_first else self.health.order(served, weights())
        tried: set[int] = set()
        while order:
            index = order.pop(0)
            tried.add(index)
            try:
                probabilities = await self.run(index, features)
            except ModelError as failure:
                failures.append(str(failure))
                self.health.failed(self.names[index], str(failure), time.monotonic())
                self.counters.inc("failovers", self.names[index])
                if not order and len(tried) == 1:  # the served model failed: the others next
                    order = [i for i in self.health.order(served, weights()) if i not in tried]
                continue
            origin = None if index == served else self.names[served]
            return Answer(index, probabilities, origin)
        raise ModelError(self.names[served], "and its failover candidates failed: "
                         + "; ".join(failures))  # fmt: skip

    async def probe(self) -> None:
        """Run every unhealthy model once on a recent real input; those that answer serve
        again."""
        features = self._probe_features
        if features is None:
            return
        for name in list(self.health.unhealthy):
            try:
                await self.probabilities(self.names.index(name), features)
            except (ModelError, ValueError):
                continue
            logger.info("model %s answers again: healthy", name)
            self.health.recovered(name)
