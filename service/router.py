"""The ingress: inference (own API and Open Inference Protocol v2), labeler queue,
feedback, selection, rounds, metrics. Glue only: the math is `picker`'s."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve.handle import DeploymentHandle

from service import schemas, v2
from service.labeling import apply_labels, check_labels, swap_if_best_changed
from service.metrics import LocalCounters, render
from service.pool import FloatMatrix, PoolSpec, as_feature_matrix, read_pool_spec
from service.schemas import RuntimeKnobs
from service.settings import Settings
from service.shadow import ShadowEvaluator
from service.store import StateStore, StoredSelection, StoreError, open_store

logger = logging.getLogger("pickserve")
api = FastAPI(
    title="pickserve",
    description="Serves the best of a pool of classifiers; asks for the few labels that tell "
    "them apart (ModelPicker) and hot-swaps the served model when the evidence changes.",
    version="0.1.0",
)
COUNTER_FLUSH_S = 0.5
T = TypeVar("T")


@api.middleware("http")
async def tag_replica(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Every response names the replica that answered (x-pickserve-replica)."""
    response = await call_next(request)
    response.headers["x-pickserve-replica"] = serve.get_replica_context().replica_id.unique_id
    return response


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=512)
@serve.ingress(api)
class Router:
    def __init__(
        self, candidates: DeploymentHandle[Any], settings_json: str, pool_file: str
    ) -> None:
        self.settings = Settings.model_validate_json(settings_json)
        self.candidates = candidates
        self.pool: PoolSpec = read_pool_spec(Path(pool_file))
        self.names = [c.name for c in self.pool.candidates]
        initial = 0 if self.pool.initial is None else self.names.index(self.pool.initial)
        self.store: StateStore = open_store(self.settings)
        self.store.initialise(self.names, initial, self.settings.knobs.label_budget)
        self.knobs = self.settings.knobs
        self.rng = np.random.default_rng(self.knobs.seed)
        self.counters = LocalCounters()
        self.selection: StoredSelection = self.store.selection()
        self.selection_read_at = time.monotonic()
        self.flusher: asyncio.Task[None] | None = None
        self.shadow = ShadowEvaluator(
            candidates, self.store, self.counters, self.settings.shadow_max_in_flight
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray Serve's user_config: the picker's knobs change without a restart."""
        knobs = RuntimeKnobs.model_validate(user_config)
        if knobs.label_budget != self.knobs.label_budget:
            self.store.set_budget(knobs.label_budget)
        if knobs.seed != self.knobs.seed:
            self.rng = np.random.default_rng(knobs.seed)
        self.knobs = knobs

    async def _blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call in a thread; a store failure is a 503, not a 500."""
        try:
            return await asyncio.to_thread(function, *args)
        except StoreError as error:
            self.counters.inc("errors", "store")
            logger.warning("state store failed: %s", error)
            raise HTTPException(503, f"state store unavailable: {error}") from error

    async def _current(self) -> StoredSelection:
        """The selection, re-read at most every selection_refresh_s (hot swap < 1 s)."""
        if time.monotonic() - self.selection_read_at > self.settings.selection_refresh_s:
            try:
                self.selection = await asyncio.to_thread(self.store.selection)
                self.selection_read_at = time.monotonic()
            except StoreError as error:  # keep serving the last known model
                self.counters.inc("errors", "store")
                logger.warning("cannot refresh the selection: %s", error)
        return self.selection

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
        started = time.perf_counter()
        try:
            probabilities: FloatMatrix = await self.candidates.answer.remote((index, features))
        except Exception as error:
            self.counters.inc("errors", "model")
            logger.warning("model %s failed: %s", self.names[index], error)
            # Ray wraps the model's exception in its remote traceback; the client gets the
            # exception's own line, the log gets the rest.
            reason = str(error).strip().splitlines()[-1]
            raise HTTPException(503, f"model {self.names[index]!r} failed: {reason}") from error
        model = self.names[index]
        self.counters.inc("requests", model)
        self.counters.inc("items_served", model, value=len(features))
        self.counters.observe_latency(model, time.perf_counter() - started)
        return probabilities

    async def _serve(self, features: FloatMatrix) -> tuple[StoredSelection, FloatMatrix, list[str]]:
        """Answer with the served model; sample items for shadow evaluation."""
        selection = await self._current()
        probabilities = await self._run_model(selection.served, features)
        item_ids = [uuid.uuid4().hex for _ in range(len(features))]
        self.shadow.start(features, item_ids, self.knobs, self.rng)
        self._maybe_flush()
        return selection, probabilities, item_ids

    def _maybe_flush(self) -> None:
        """Keep a background task adding this replica's counts to the store every
        COUNTER_FLUSH_S, so a replica that falls quiet holds back nothing."""
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(COUNTER_FLUSH_S)
            await self._flush()

    async def _flush(self) -> None:
        deltas = self.counters.drain()
        if not deltas:
            return
        try:
            await asyncio.to_thread(self.store.add_counters, deltas)
        except StoreError as error:
            self.counters.restore(deltas)
            logger.warning("cannot flush metrics: %s", error)

    # ---- inference -------------------------------------------------------------------

    @api.post("/v1/predict", response_model=schemas.PredictResponse, response_model_by_alias=True)
    async def predict(self, request: schemas.PredictRequest) -> schemas.PredictResponse:
        """Predict with the current best model; each item gets an id for feedback."""
        features = self._features(request.instances)
        selection, probabilities, item_ids = await self._serve(features)
        predictions = [
            schemas.ItemPrediction(
                item_id=i, predicted_class=int(p.argmax()), probabilities=p.tolist()
            )
            for i, p in zip(item_ids, probabilities, strict=True)
        ]
        return schemas.PredictResponse(
            model=self.names[selection.served],
            selection_version=selection.version,
            predictions=predictions,
        )

    @api.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        """Ready when the state store answers."""
        try:
            await asyncio.to_thread(self.store.ping)
        except StoreError as error:
            return JSONResponse({"ready": False, "reason": str(error)}, status_code=503)
        return JSONResponse({"ready": True})

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
    async def model_metadata(self, name: str) -> dict[str, Any]:
        self._model_index(name)
        return v2.metadata(name, self.pool.n_features, len(self.pool.class_names))

    @api.post("/v2/models/{name}/infer")
    async def infer(self, name: str, request: schemas.V2InferRequest) -> dict[str, Any]:
        """Open Inference Protocol v2. `router` answers with the served model (and its
        items may be sampled for labeling); a candidate's name runs that candidate alone."""
        index = self._model_index(name)
        try:
            instances = v2.instances(request.inputs[0], self.pool.n_features)
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        features = self._features(instances)
        if index is None:
            selection, probabilities, item_ids = await self._serve(features)
            served, version = self.names[selection.served], selection.version
        else:
            probabilities = await self._run_model(index, features)
            served, version, item_ids = self.names[index], None, None
        return v2.response(name, request.id, probabilities, served, version, item_ids)

    # ---- labeling ----------------------------------------------------------------------

    @api.get("/v1/queries", response_model=schemas.QueriesResponse)
    async def queries(self, limit: int = Query(10, ge=1, le=500)) -> schemas.QueriesResponse:
        """Items to label, leased to the caller for lease_s so no one else gets them."""
        now = time.time()
        leased = await self._blocking(
            self.store.lease, limit, now, self.knobs.lease_s, self.knobs.query_ttl_s
        )
        depth = await self._blocking(self.store.queue_depth, now, self.knobs.query_ttl_s)
        items = [
            schemas.QueryItem(
                item_id=i.item_id, instance=i.instance, q=i.q, round=i.round,
                predictions=dict(zip(self.names, i.predictions, strict=True)),
                lease_expires_at=i.lease_expires_at,
            )
            for i in leased
        ]  # fmt: skip
        return schemas.QueriesResponse(
            items=items, classes=self.pool.class_names, queue_depth=depth
        )

    @api.post("/v1/feedback", response_model=schemas.FeedbackResponse)
    async def feedback(self, request: schemas.FeedbackRequest) -> JSONResponse:
        """Labels by item id. A request with an invalid label applies nothing (422);
        otherwise each label is applied once and answered accepted, duplicate or unknown.
        The status is 200 when any label was accepted, else 409 (duplicates) or 404."""
        invalid = check_labels(request.labels, len(self.pool.class_names))
        if invalid:
            self.counters.inc("labels", "invalid", value=len(invalid))
            rejected = [r.model_dump() for r in invalid]
            return JSONResponse(
                {"detail": "no label was applied", "results": rejected}, status_code=422
            )
        results = await self._blocking(apply_labels, self.store, request.labels, self.knobs)
        for result in results:
            self.counters.inc("labels", result.outcome)
        accepted = [r for r in results if r.outcome == "accepted"]
        selection = self.selection
        if accepted:
            selection, swapped = await self._blocking(
                swap_if_best_changed, self.store, self.knobs.switch_margin, accepted[-1].item_id
            )
            self.counters.inc("swaps", value=float(swapped))
            self.selection, self.selection_read_at = selection, time.monotonic()
        self._maybe_flush()
        status = 200 if accepted else 409 if any(r.outcome == "duplicate" for r in results) else 404
        response = schemas.FeedbackResponse(
            results=results,
            served_model=self.names[selection.served],
            selection_version=selection.version,
        )
        return JSONResponse(response.model_dump(), status_code=status)

    # ---- selection, rounds, metrics ----------------------------------------------------

    @api.get("/v1/selection", response_model=schemas.Selection)
    async def get_selection(self) -> schemas.Selection:
        """The picker's state, the served model and the audit trail of swaps."""
        selection: StoredSelection = await self._blocking(self.store.selection)
        picker = selection.picker
        return schemas.Selection(
            round=picker.round, step=picker.step, queries=picker.queries, labels=picker.labels,
            label_budget=picker.budget,
            posterior=dict(zip(self.names, picker.weights().tolist(), strict=True)),
            losses=dict(zip(self.names, picker.losses, strict=True)),
            best_model=self.names[selection.best],
            served_model=self.names[selection.served], selection_version=selection.version,
            swaps=[schemas.SwapRecord.model_validate(s) for s in selection.swaps],
        )  # fmt: skip

    @api.post("/v1/rounds", response_model=schemas.Selection)
    async def new_round(self, request: schemas.RoundRequest | None = None) -> schemas.Selection:
        """Start a new round (a new data period): losses and step reset, the queue is
        dropped, the served model stays until labels move the posterior."""
        given = request.label_budget if request is not None else None
        await self._blocking(
            self.store.start_round, given if given is not None else self.knobs.label_budget
        )
        return await self.get_selection()

    @api.get("/metrics")
    async def metrics(self) -> Response:
        """Prometheus text format; the same numbers whichever replica answers."""
        await self._flush()
        now = time.time()
        stored = await self._blocking(self.store.counters)
        selection = await self._blocking(self.store.selection)
        depth = await self._blocking(self.store.queue_depth, now, self.knobs.query_ttl_s)
        return Response(render(stored, selection, depth), media_type=CONTENT_TYPE_LATEST)
