"""Model calls off the event loop with a timeout: a hanging model is reported within the
timeout, then at once while its threads are held; other models and the loop go on."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.models.loaders import Candidate
from service.models.runner import ModelError, ModelRunner


class Gate:
    """predict_proba blocks while the gate is closed (a hanging model)."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        self.open.wait(30)
        return np.full((len(features), 2), 0.5)


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if self.value < 0:
            raise ValueError("bad weights")
        return np.full((len(features), 2), self.value)


def runner(*models: object, timeout_s: float = 0.2, threads: int = 1) -> ModelRunner:
    candidates = [Candidate(f"m{i}", m, 2, "python") for i, m in enumerate(models)]
    return ModelRunner(candidates, timeout_s, threads_per_model=threads)


def test_a_hanging_model_times_out_then_fails_at_once_while_its_threads_are_held() -> None:
    gate = Gate()
    models = runner(gate, Constant(0.5))

    async def scenario() -> None:
        features = np.zeros((2, 3))
        started = time.monotonic()
        with pytest.raises(ModelError, match=r"'m0' timed out after 0\.2 s") as first:
            await models.probabilities(0, features)
        assert first.value.kind == "timeout"
        assert 0.15 < time.monotonic() - started < 2.0
        await asyncio.sleep(0.05)  # its one thread is still held by the hung call
        started = time.monotonic()
        with pytest.raises(ModelError, match="'m0' is hung"):
            await models.probabilities(0, features)
        assert time.monotonic() - started < 0.1  # no new wait behind a hung call
        np.testing.assert_allclose(await models.probabilities(1, features), 0.5)  # others go on
        gate.open.set()  # the model recovers
        await asyncio.sleep(0.1)
        np.testing.assert_allclose(await models.probabilities(0, features), 0.5)

    asyncio.run(scenario())
    models.close()


def test_a_model_that_raises_or_answers_nan_is_a_model_error_naming_it() -> None:
    models = runner(Constant(-1.0), Constant(float("nan")))

    async def scenario() -> None:
        with pytest.raises(ModelError, match="'m0' failed: ValueError: bad weights") as raised:
            await models.probabilities(0, np.zeros((1, 3)))
        assert raised.value.kind == "error"
        with pytest.raises(ModelError, match="'m1' failed: it returned non-finite") as nan:
            await models.probabilities(1, np.zeros((1, 3)))
        assert nan.value.kind == "nonfinite"
        raw = await models.raw_probabilities(1, np.zeros((1, 3)))
        assert np.isnan(raw).all()

    asyncio.run(scenario())


def test_predictions_mark_non_finite_rows_and_fail_on_a_hung_model() -> None:
    gate = Gate()
    models = runner(Constant(0.5), Constant(float("nan")), gate)

    async def scenario() -> None:
        gate.open.set()
        predictions = await models.predictions(np.zeros((3, 3)), no_class=-1)
        assert predictions.tolist() == [[0, -1, 0]] * 3
        gate.open.clear()
        with pytest.raises(ModelError, match="'m2' timed out"):
            await models.predictions(np.zeros((3, 3)), no_class=-1)
        gate.open.set()

    asyncio.run(scenario())
