"""The deployment that runs every candidate: shadow evaluation, and, for pools too large
to load in every router replica (`serve_from: candidates`), the served model too.

Models run in worker threads (`service.models.runner`), never on the replica's event loop, each
call within `model_timeout_s`. Failures come back as values (`Failed`), not exceptions, so
the router can tell a model's failure from the deployment's.

A model whose output is not finite (NaN or infinity) on a row has failed on that row: when
it answers a client, the request gets a failure naming it (a 503, or the next candidate);
in shadow evaluation its prediction for that row is `NO_CLASS` (-1), which no label equals,
so the picker counts the model wrong on that item, and the faults are counted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from service.models import registry, roster
from service.models.loaders import Candidate
from service.models.pool_file import NO_CLASS, FloatMatrix, PoolLoadError, read_pool_spec
from service.models.resident import ResidencyMetrics, open_pool
from service.models.roster import RosterError
from service.models.runner import ModelError, ModelRunner


@dataclass(frozen=True)
class Failed:
    """A model's failure, carried back to the router as a value."""

    model: str
    message: str
    kind: str  # error, timeout, nonfinite

    def error(self) -> ModelError:
        failure = ModelError(self.model, "", self.kind)
        failure.args = (self.message,)
        return failure

    @classmethod
    def of(cls, failure: ModelError) -> Failed:
        return cls(failure.model, str(failure), failure.kind)


# A shadow request: the rows, the pool's names it expects, the columns to run (None: all).
ShadowRequest = tuple[FloatMatrix, tuple[str, ...], tuple[int, ...] | None]


def _split(rows: np.ndarray[Any, Any], sizes: list[int]) -> list[Any]:
    return list(np.split(rows, np.cumsum(sizes)[:-1]))


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
class Candidates:
    def __init__(
        self,
        pool_file: str,
        model_timeout_s: float = 5.0,
        max_resident_models: int | None = None,
        registry_uri: str | None = None,
    ) -> None:
        registry.use_tracking_uri(registry_uri)  # `mlflow:` candidates load from there
        self.pool_file = Path(pool_file)
        self.pool, residency = open_pool(self.pool_file, max_resident_models)
        self.runner = ModelRunner(self.pool.candidates, model_timeout_s, residency=residency)
        self.metrics = ResidencyMetrics(residency) if residency is not None else None

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def answer(self, requests: list[tuple[int, FloatMatrix]]) -> list[FloatMatrix | Failed]:
        """Class probabilities of model `index` for each request's rows."""
        results: list[FloatMatrix | Failed | None] = [None] * len(requests)
        if self.runner.residency is not None:  # the served model answers here: keep it warm
            self.runner.residency.pin(self.runner.names[requests[-1][0]])
        for index in {i for i, _ in requests}:
            positions = [p for p, (i, _) in enumerate(requests) if i == index]
            chunks = [requests[p][1] for p in positions]
            try:
                probabilities = await self.runner.raw_probabilities(index, np.vstack(chunks))
            except ModelError as failure:
                for position in positions:
                    results[position] = Failed.of(failure)
                continue
            parts = _split(probabilities, [len(c) for c in chunks])
            for position, part in zip(positions, parts, strict=True):
                results[position] = finite_or_failed(self.runner.names[index], part)
        if self.metrics is not None:
            self.metrics.record()
        return [r for r in results if r is not None]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def shadow(self, requests: list[ShadowRequest]) -> list[Any]:
        """Every candidate's (or the request's `columns'`) predicted class for each
        request's rows, shape (rows, models), or the failure of a model that raised, timed
        out or is hung (for every request). Each request names the pool it expects: a
        pool changed at run time is re-read."""
        results: list[Any] = [None] * len(requests)
        for names, columns in {(n, c) for _, n, c in requests}:
            positions = [p for p, (_, n, c) in enumerate(requests) if (n, c) == (names, columns)]
            chunks = [requests[p][0] for p in positions]
            parts = await self._shadow(chunks, names, columns)
            for position, part in zip(positions, parts, strict=True):
                results[position] = part
        return results

    async def _shadow(
        self, chunks: list[FloatMatrix], names: tuple[str, ...], columns: tuple[int, ...] | None
    ) -> list[Any]:
        if tuple(self.runner.names) != names:
            try:
                loaded = await asyncio.to_thread(self._load, names)
            except (PoolLoadError, RosterError) as error:
                return [Failed("pool", f"pool {list(names)} cannot be loaded: {error}",
                               "error")] * len(chunks)  # fmt: skip
            self.runner.use(loaded)
        try:
            predictions = await self.runner.predictions(np.vstack(chunks), NO_CLASS, columns)
        except ModelError as failure:
            return [Failed.of(failure)] * len(chunks)
        finally:
            if self.metrics is not None:
                self.metrics.record()
        return _split(predictions, [len(c) for c in chunks])

    def _load(self, names: tuple[str, ...]) -> list[Candidate]:
        """The pool `names` (a router follows the store's and brings the file up to date)."""
        pool = read_pool_spec(self.pool_file)
        lazy = self.runner.residency is not None
        return roster.load(self.pool_file, pool, self.runner.candidates, names, lazy)

    def check_health(self) -> None:
        if not self.pool.candidates:
            raise RuntimeError("no candidates loaded")


def finite_or_failed(name: str, probabilities: FloatMatrix) -> FloatMatrix | Failed:
    """A request's rows, or the failure naming the model (only its own request fails)."""
    if not np.all(np.isfinite(probabilities)):
        return Failed(name, f"model {name!r} failed: it returned non-finite class probabilities",
                      "nonfinite")  # fmt: skip
    return probabilities
