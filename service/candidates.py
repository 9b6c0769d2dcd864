"""The deployment hosting every candidate model, with request batching.

Two batched entry points: `answer` runs one named model (the served model, or a model a
client asked for), `shadow` runs every candidate for the picker. @serve.batch merges
concurrent calls, so one predict_proba call serves many requests.

A model whose output is not finite (NaN or infinity) on a row has failed on that row: when
it answers a client, the request gets a `ModelOutputError` naming it (a 503); in shadow
evaluation its prediction for that row is `NO_CLASS` (-1), which no label equals, so the
picker counts the model wrong on that item, and the faults are counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from service.pool import FloatMatrix, LoadedPool, load_pool

NO_CLASS = -1


class ModelOutputError(ValueError):
    """A model returned non-finite class probabilities."""


def _split(rows: np.ndarray[Any, Any], sizes: list[int]) -> list[Any]:
    return list(np.split(rows, np.cumsum(sizes)[:-1]))


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
class Candidates:
    def __init__(self, pool_file: str) -> None:
        self.pool: LoadedPool = load_pool(Path(pool_file))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def answer(
        self, requests: list[tuple[int, FloatMatrix]]
    ) -> list[FloatMatrix | ModelOutputError]:
        """Class probabilities of model `index` for each request's rows."""
        results: list[FloatMatrix | None] = [None] * len(requests)
        for index in {i for i, _ in requests}:
            positions = [p for p, (i, _) in enumerate(requests) if i == index]
            chunks = [requests[p][1] for p in positions]
            candidate = self.pool.candidates[index]
            probabilities = candidate.class_probabilities(np.vstack(chunks))
            for position, part in zip(
                positions, _split(probabilities, [len(c) for c in chunks]), strict=True
            ):
                results[position] = part
        names = [self.pool.candidates[i].name for i, _ in requests]
        return [_finite_or_error(n, r) for n, r in zip(names, results, strict=True)]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def shadow(self, requests: list[FloatMatrix]) -> list[Any]:
        """Every candidate's predicted class for each request's rows, shape (rows, models)."""
        predictions = self.pool.predict_all(np.vstack(requests), no_class=NO_CLASS)
        return _split(predictions, [len(r) for r in requests])

    def check_health(self) -> None:
        if not self.pool.candidates:
            raise RuntimeError("no candidates loaded")


def _finite_or_error(
    name: str, probabilities: FloatMatrix | None
) -> FloatMatrix | ModelOutputError:
    """Each request gets its rows, or the error naming the model (only its own request fails)."""
    assert probabilities is not None
    if not np.all(np.isfinite(probabilities)):
        return ModelOutputError(f"model {name!r} returned non-finite class probabilities")
    return probabilities
