"""Inference routes: the own API, Open Inference Protocol v2, health, the pool."""

import time
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from service.http import schemas, v2
from service.http.api import (
    INFER,
    MODEL_NAME,
    RouterBase,
    api,
)
from service.http.auth import Caller
from service.http.limits import AsciiJSONResponse
from service.models.pool_file import FloatMatrix, as_feature_matrix
from service.models.runner import ModelError
from service.replica.serving import Answer
from service.replica.shadow import paced_rate
from service.state.rules import Selection
from service.state.rules.swaps import canary_key, canary_share
from service.state.store.base import StoreError


class InferenceRoutes(RouterBase):
    def _features(self, instances: list[list[float]]) -> FloatMatrix:
        if len(instances) > self.settings.max_batch_size:
            raise HTTPException(
                413, f"batch of {len(instances)} instances exceeds the limit of "
                f"{self.settings.max_batch_size} (PICKSERVE_MAX_BATCH_SIZE)",
            )  # fmt: skip
        try:
            return as_feature_matrix(instances, self.pool.n_features)
        except ValueError as error:
            raise HTTPException(422, str(error)) from error

    async def _run_model(self, index: int, features: FloatMatrix) -> FloatMatrix:
        """One model alone (a client named it): a failure is a 503 naming it."""
        try:
            return await self.server.run(index, features)
        except ModelError as failure:
            raise HTTPException(503, str(failure)) from None

    async def _serve(self, features: FloatMatrix) -> tuple[Selection, Answer, list[str]]:
        """Answer with the served model of the last known selection (no store call), or
        its failover; sample items for shadow evaluation."""
        selection, knobs = self.selection, self.knobs
        canary = selection.meta.canary
        try:
            if canary is not None and self.rng.random() < canary_share(canary, knobs):
                answer = await self._canary_answer(canary, selection, features)
            else:
                answer = await self.server.answer(
                    selection.served, selection.weights, features, knobs.failover
                )
        except ModelError as failure:
            raise HTTPException(503, str(failure)) from None
        item_ids = [uuid.uuid4().hex for _ in range(len(features))]
        rate = paced_rate(knobs, self.runtime.waiting)
        self.shadow.offer(features, item_ids, rate, knobs, self.rng)
        return selection, answer, item_ids

    async def _canary_answer(
        self, canary: Mapping[str, Any], selection: Selection, features: FloatMatrix
    ) -> Answer:
        """The canary's answer; if it fails, the served model's (counted against it)."""
        key, started = canary_key(canary), time.perf_counter()
        try:
            probabilities = await self.server.run(int(canary["to"]), features)
        except ModelError:
            self.canary_stats.record(key, False, 0.0)
            return await self.server.answer(
                selection.served, selection.weights, features, self.knobs.failover
            )
        self.canary_stats.record(key, True, (time.perf_counter() - started) * 1000)
        return Answer(int(canary["to"]), probabilities)

    @api.post("/v1/predict", response_model=schemas.PredictResponse, response_model_by_alias=True)
    async def predict(
        self, request: schemas.PredictRequest, caller: Caller = INFER
    ) -> AsciiJSONResponse:
        """Predict with the current best model; each item gets an id for feedback."""
        features = self._features(request.instances)
        selection, answer, item_ids = await self._serve(features)
        probabilities, classes = answer.probabilities, self.pool.class_names
        # Written out directly in PredictResponse's shape (the OpenAPI document still
        # declares it): validating our own answer again costs more than the model call's
        # thread hand-off, on every request.
        predictions = [
            {"item_id": i, "class": c, "class_name": classes[c], "probabilities": p}
            for i, c, p in zip(item_ids, probabilities.argmax(axis=1).tolist(),
                               probabilities.tolist(), strict=True)
        ]  # fmt: skip
        return AsciiJSONResponse({
            "model": self.names[answer.model],
            "failed_over_from": answer.failed_over_from,
            "selection_version": selection.version,
            "predictions": predictions,
        })  # fmt: skip

    @api.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        """Ready when the state store answers (serving goes on without it; labeling not)."""
        try:
            await self.runtime.run_store(self.state.backend.ping)
        except StoreError as error:
            return AsciiJSONResponse({"ready": False, "reason": str(error)}, status_code=503)
        return AsciiJSONResponse({"ready": True})

    def _model_index(self, name: str) -> int | None:
        """None for `router` (the served model); 404 for a name not in the pool."""
        if name == "router":
            return None
        if name not in self.names:
            raise HTTPException(
                404, f"unknown model {name!r}; models: router, {', '.join(self.names)}"
            )
        return self.names.index(name)

    @api.get("/v2/models/{name}")
    async def model_metadata(
        self, name: str = MODEL_NAME, caller: Caller = INFER
    ) -> dict[str, Any]:
        self._model_index(name)
        return v2.metadata(name, self.pool.n_features, self.pool.class_names)

    @api.post("/v2/models/{name}/infer")
    async def infer(
        self, request: schemas.V2InferRequest, name: str = MODEL_NAME,
        caller: Caller = INFER,
    ) -> dict[str, Any]:  # fmt: skip
        """Open Inference Protocol v2. `router` answers with the served model (and its
        items may be sampled for labeling); a candidate's name runs that candidate alone."""
        index = self._model_index(name)
        try:
            instances = v2.instances(request.inputs[0], self.pool.n_features)
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        features = self._features(instances)
        if index is None:
            selection, answer, item_ids = await self._serve(features)
            probabilities, version = answer.probabilities, selection.version
            served, origin = self.names[answer.model], answer.failed_over_from
        else:
            probabilities = await self._run_model(index, features)
            served, version, item_ids, origin = self.names[index], None, None, None
        return v2.response(name, request.id, probabilities, self.pool.class_names, served,
                           version, item_ids, origin)  # fmt: skip
