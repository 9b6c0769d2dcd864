"""The ingress: inference (own API and Open Inference Protocol v2), labeler queue,
feedback, selection, rounds, metrics. Glue only: the rules are `service.rules`, the math is
`picker`'s, the background work is `service.runtime`'s."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path as FilePath
from typing import Any

import numpy as np
from fastapi import Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve.handle import DeploymentHandle

from service import schemas, v2
from service.auth import Authenticator, Caller, Role
from service.candidates import ModelOutputError
from service.http import AsciiJSONResponse, make_api
from service.labeling import apply_labels, check_labels
from service.live import LabelResult, LiveState, new_op
from service.metrics import render
from service.pool import FloatMatrix, PoolSpec, as_feature_matrix, read_pool_spec
from service.rules import Selection
from service.runtime import ReplicaRuntime
from service.schemas import KEY_PATTERN, RuntimeKnobs
from service.settings import Settings
from service.shadow import ShadowEvaluator
from service.store import StoreError, open_backend
from service.store.factory import retention

logger = logging.getLogger("pickserve")
_limits = {"max_request_bytes": Settings.model_fields["max_request_bytes"].default}
api = make_api(lambda: int(_limits["max_request_bytes"]))
_auth = {"authenticator": Authenticator([])}


def needs(*roles: Role, browser: bool = False) -> Any:
    """A route dependency: the caller, if its token has one of `roles` (admin has every
    role). 401 without a known token (for a page a browser opens, an HTTP Basic challenge,
    so that it asks for the token), 403 with a token that lacks them."""
    challenge = 'Basic realm="pickserve"' if browser else 'Bearer realm="pickserve"'

    async def caller_with_role(
        authorization: str | None = Header(None, include_in_schema=False),
    ) -> Caller:
        caller = _auth["authenticator"].caller(authorization)
        if caller is None:
            raise HTTPException(
                401, "missing or unknown token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": challenge},
            )  # fmt: skip
        if not any(caller.may(role) for role in roles):
            wanted = " or ".join(repr(r) for r in roles)
            raise HTTPException(403, f"the token of {caller.name!r} lacks the {wanted} role")
        return caller

    return Depends(caller_with_role)


INFER, LABEL, ADMIN = needs("infer"), needs("label"), needs("admin")
INFER_OR_LABEL = needs("infer", "label")
LABEL_PAGE = needs("label", browser=True)
PAGE = (FilePath(__file__).parent / "static" / "label.html").read_text()


def idempotency_header() -> Any:
    """The Idempotency-Key header (a default value: Ray pickles the class by value, so a
    name used only in a string annotation would not resolve in the replica)."""
    return Header(
        None, pattern=KEY_PATTERN,
        description="repeat a request with the same key after a 503 to learn its outcome; "
        "nothing is applied twice",
    )  # fmt: skip


@api.middleware("http")
async def tag_replica(request: Request, call_next: Any) -> Response:
    """Every response names the replica that answered (x-pickserve-replica)."""
    response: Response = await call_next(request)
    response.headers["x-pickserve-replica"] = serve.get_replica_context().replica_id.unique_id
    return response


MODEL_NAME = Path(
    ..., max_length=64, description="`router` (the served model) or a candidate's name"
)


def _unavailable(error: StoreError, what: str) -> HTTPException:
    return HTTPException(503, f"state store unavailable ({what}): {error}")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=512)
@serve.ingress(api)
class Router:
    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self,
        candidates: DeploymentHandle[Any],
        settings_json: str,
        pool_file: str,
        token_table: list[dict[str, Any]],
    ) -> None:
        self.settings = Settings.model_validate_json(settings_json)
        _limits["max_request_bytes"] = self.settings.max_request_bytes
        _auth["authenticator"] = Authenticator(token_table)
        self.candidates = candidates
        self.pool: PoolSpec = read_pool_spec(FilePath(pool_file))
        self.names = [c.name for c in self.pool.candidates]
        initial = 0 if self.pool.initial is None else self.names.index(self.pool.initial)
        self.state = LiveState(open_backend(self.settings), retention(self.settings))
        self.runtime = ReplicaRuntime(self.state, self.settings.selection_refresh_s)
        await self.runtime.run_store(self.state.initialise, self.names, initial, None, time.time())
        await self.runtime.refresh()
        self.rng = np.random.default_rng()
        self.shadow = ShadowEvaluator(
            candidates, self.state, self.runtime.run_store, self.runtime.counters,
            self.settings.shadow_max_in_flight,
        )  # fmt: skip
        self._last_metrics: tuple[dict[str, float], int] = ({}, 0)
        self.runtime.start()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray Serve's user_config: the picker's knobs change without a restart."""
        knobs = RuntimeKnobs.model_validate(user_config)
        if knobs.seed != self.runtime.knobs.seed or knobs.seed is None:
            self.rng = np.random.default_rng(knobs.seed)
        self.runtime.configure(knobs)

    @property
    def knobs(self) -> RuntimeKnobs:
        return self.runtime.knobs

    @property
    def selection(self) -> Selection:
        assert self.runtime.selection is not None  # read in __init__
        return self.runtime.selection

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
        started, model, counters = time.perf_counter(), self.names[index], self.runtime.counters
        try:
            result = await self.candidates.answer.remote((index, features))
        except Exception as error:
            counters.inc("errors", "model")
            logger.warning("model %s failed: %s", model, error)
            # The client gets the exception's own line, the log gets Ray's traceback.
            reason = str(error).strip().splitlines()[-1]
            raise HTTPException(503, f"model {model!r} failed: {reason}") from error
        if isinstance(result, ModelOutputError):
            counters.inc("errors", "model")
            raise HTTPException(503, f"model {model!r} failed: {result}")
        counters.inc("requests", model)
        counters.inc("items_served", model, value=len(features))
        counters.observe_latency(model, time.perf_counter() - started)
        probabilities: FloatMatrix = result
        return probabilities

    async def _serve(self, features: FloatMatrix) -> tuple[Selection, FloatMatrix, list[str]]:
        """Answer with the served model of the last known selection (no store call); sample
        items for shadow evaluation."""
        selection = self.selection
        probabilities = await self._run_model(selection.served, features)
        item_ids = [uuid.uuid4().hex for _ in range(len(features))]
        self.shadow.start(features, item_ids, self.knobs, self.rng)
        return selection, probabilities, item_ids

    # ---- inference -------------------------------------------------------------------

    @api.post("/v1/predict", response_model=schemas.PredictResponse, response_model_by_alias=True)
    async def predict(
        self, request: schemas.PredictRequest, caller: Caller = INFER
    ) -> schemas.PredictResponse:
        """Predict with the current best model; each item gets an id for feedback."""
        features = self._features(request.instances)
        selection, probabilities, item_ids = await self._serve(features)
        classes = self.pool.class_names
        predictions = [
            schemas.ItemPrediction(
                item_id=i, predicted_class=int(p.argmax()), class_name=classes[int(p.argmax())],
                probabilities=p.tolist(),
            )
            for i, p in zip(item_ids, probabilities, strict=True)
        ]  # fmt: skip
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
            selection, probabilities, item_ids = await self._serve(features)
            served, version = self.names[selection.served], selection.version
        else:
            probabilities = await self._run_model(index, features)
            served, version, item_ids = self.names[index], None, None
        return v2.response(
            name, request.id, probabilities, self.pool.class_names, served, version, item_ids
        )

    # ---- labeling ----------------------------------------------------------------------

    @api.get("/v1/queries", response_model=schemas.QueriesResponse)
    async def queries(
        self,
        limit: int = Query(10, ge=1, le=500, description="items to lease at most"),
        include_predictions: bool = Query(
            False, description="also each candidate's prediction (always for admin)"
        ),
        caller: Caller = LABEL,
    ) -> schemas.QueriesResponse:
        """Items to label, leased to the caller for lease_s so no one else gets them.
        Labelers never see q (the probability an item was asked with: a labeler who knew
        it could pick the items whose labels weigh most), nor, unless they ask, the
        candidates' predictions (they anchor judgement); admins see both."""
        admin = caller.may("admin")
        with_predictions = admin or include_predictions
        now, knobs = time.time(), self.knobs
        try:
            leased = await self.runtime.run_store(
                self.state.lease, limit, now, knobs.lease_s, knobs.query_ttl_s
            )
            depth = await self.runtime.run_store(self.state.queue_depth, now, knobs.query_ttl_s)
        except StoreError as error:
            raise _unavailable(error, "the queue") from error
        items = [
            schemas.QueryItem(
                item_id=i.item_id, instance=list(i.instance), q=i.q if admin else None,
                round=i.round,
                predictions=dict(zip(self.names, i.predictions, strict=True))
                if with_predictions else None,
                lease_expires_at=now + knobs.lease_s,
            )
            for i in leased
        ]  # fmt: skip
        return schemas.QueriesResponse(
            items=items, classes=self.pool.class_names, queue_depth=depth
        )

    @api.post("/v1/queries/renew", response_model=schemas.RenewResponse)
    async def renew_leases(
        self, request: schemas.RenewRequest, caller: Caller = LABEL
    ) -> schemas.RenewResponse:
        """Keep items a labeler still works on (a task open in a labeling tool): their
        leases end lease_s from now. Items that no longer wait for a label are listed as
        gone: withdraw them from the labeling tool."""
        now, knobs = time.time(), self.knobs
        try:
            renewed = await self.runtime.run_store(
                self.state.renew, new_op("renew"), request.item_ids, now, knobs.lease_s,
                knobs.query_ttl_s,
            )  # fmt: skip
        except StoreError as error:
            raise _unavailable(error, "the queue") from error
        gone = [i for i in dict.fromkeys(request.item_ids) if i not in set(renewed)]
        return schemas.RenewResponse(
            renewed=renewed, gone=gone, lease_expires_at=now + knobs.lease_s
        )

    @api.get("/label", response_class=HTMLResponse, include_in_schema=False)
    async def label_page(self, caller: Caller = LABEL_PAGE) -> HTMLResponse:
        """The labeling page: one item at a time, a button (and a key) per class, skip, and
        the round's progress. Plain HTML and a little JavaScript."""
        return HTMLResponse(PAGE, headers={"cache-control": "no-store"})

    @api.post("/v1/feedback", response_model=schemas.FeedbackResponse)
    async def feedback(
        self,
        request: schemas.FeedbackRequest,
        idempotency_key: str | None = idempotency_header(),
        caller: Caller = LABEL,
    ) -> JSONResponse:
        """Labels by item id. A request with an invalid label applies nothing (422);
        otherwise each label is applied once and answered accepted, duplicate or unknown.
        The status is 200 when any label was accepted, else 409 (duplicates) or 404. When the
        store fails part-way, 503: repeat with the same Idempotency-Key to learn the rest."""
        counters = self.runtime.counters
        labels, invalid = check_labels(request.labels, self.pool.class_names)
        if invalid:
            counters.inc("labels", "invalid", value=len(invalid))
            rejected = [r.model_dump() for r in invalid]
            return AsciiJSONResponse(
                {"detail": "no label was applied", "results": rejected}, status_code=422
            )
        key = idempotency_key or uuid.uuid4().hex
        done: list[LabelResult] = []
        failure: StoreError | None = None
        try:
            await self.runtime.run_store(
                apply_labels, self.state, labels, key, time.time(),
                self.knobs.query_ttl_s, done, caller.name,
            )  # fmt: skip
        except StoreError as error:
            failure = error
        for result in done:
            if result.outcome != "accepted":  # accepted ones count in the label's own write
                counters.inc("labels", result.outcome)
        results = [schemas.LabelResult(item_id=r.item_id, outcome=r.outcome, detail=r.detail)
                   for r in done]  # fmt: skip
        accepted = [r.item_id for r in done if r.outcome == "accepted"]
        selection = await self._reconcile_after_labels(accepted[-1] if accepted else None)
        headers = {"idempotency-key": key}
        if failure is not None:
            detail = (f"state store unavailable: {failure}. {len(done)} of "
                      f"{len(request.labels)} labels were decided (see results); the others may "
                      "or may not have been applied: repeat this request with the same "
                      "Idempotency-Key to learn their outcome")  # fmt: skip
            body = {"detail": detail, "results": [r.model_dump() for r in results]}
            return AsciiJSONResponse(body, status_code=503, headers=headers)
        outcomes = {r.outcome for r in done}
        status = 200 if accepted else 409 if "duplicate" in outcomes else 404
        response = schemas.FeedbackResponse(
            results=results, served_model=self.names[selection.served],
            selection_version=selection.version,
        )  # fmt: skip
        return AsciiJSONResponse(response.model_dump(), status_code=status, headers=headers)

    async def _reconcile_after_labels(self, trigger: str | None) -> Selection:
        """After every feedback request, whatever its outcomes: the served model follows the
        posterior's best. If the store fails here, the refresh loop does it within ~1 s."""
        try:
            return await self.runtime.reconcile(trigger)
        except StoreError as error:
            logger.warning("swap check after labels failed (the refresh loop retries): %s", error)
            return self.selection

    # ---- selection, rounds, metrics ----------------------------------------------------

    @api.get("/v1/pool", response_model=schemas.PoolInfo)
    async def get_pool(self, caller: Caller = INFER_OR_LABEL) -> schemas.PoolInfo:
        """The pool being served: features per instance, class names, candidates."""
        return schemas.PoolInfo(
            n_features=self.pool.n_features, classes=self.pool.class_names,
            candidates=[schemas.PoolCandidate(name=c.name, kind=c.kind)  # type: ignore[arg-type]
                        for c in self.pool.candidates],
            initial=self.pool.initial or self.names[0], image_shape=self.pool.image_shape,
        )  # fmt: skip

    @api.get("/v1/selection", response_model=schemas.Selection)
    async def get_selection(self, caller: Caller = LABEL) -> schemas.Selection:
        """The picker's state, the served model and the audit trail of swaps."""
        return await self._selection_response()

    async def _selection_response(self) -> schemas.Selection:
        try:
            selection = await self.runtime.run_store(self.state.selection)
        except StoreError as error:
            raise _unavailable(error, "the selection") from error
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
    async def new_round(
        self,
        request: schemas.RoundRequest | None = None,
        idempotency_key: str | None = idempotency_header(),
        caller: Caller = ADMIN,
    ) -> schemas.Selection:
        """Start a new round (a new data period): losses and step reset, the queue is
        dropped, the served model stays until labels move the posterior."""
        op = f"round:{idempotency_key}" if idempotency_key else new_op("round")
        try:
            budget = self.selection.meta.config_budget
            if request is not None and "label_budget" in request.model_fields_set:
                budget = request.label_budget
            await self.runtime.run_store(self.state.start_round, op, budget, time.time())
        except StoreError as error:
            raise _unavailable(error, "rounds") from error
        return await self._selection_response()

    @api.get("/v1/rounds", response_model=schemas.RoundsResponse)
    async def list_rounds(
        self,
        limit: int = Query(20, ge=1, le=1000, description="rounds to list, newest first"),
        caller: Caller = ADMIN,
    ) -> schemas.RoundsResponse:
        """Round history: start, end, budget, labels, queries, final posterior, swaps."""
        try:
            records = await self.runtime.run_store(self.state.rounds, limit)
        except StoreError as error:
            raise _unavailable(error, "rounds") from error
        rounds = []
        for record in records:
            picker = record.tally.picker
            rounds.append(schemas.RoundRecord(
                round=record.number, started_at=record.tally.started_at,
                ended_at=record.tally.ended_at, label_budget=picker.budget, step=picker.step,
                queries=picker.queries, labels=picker.labels,
                posterior=dict(zip(self.names, picker.weights().tolist(), strict=True)),
                best_model=self.names[record.best],
                swaps=[schemas.SwapRecord.model_validate(s) for s in record.swaps],
            ))  # fmt: skip
        return schemas.RoundsResponse(rounds=rounds)

    @api.get("/v1/rounds/{number}/labels", response_model=schemas.LabelAudit)
    async def round_labels(
        self,
        number: int = Path(..., ge=0, le=2**53, description="the round"),
        limit: int = Query(1000, ge=1, le=100_000, description="the newest labels, at most"),
        caller: Caller = ADMIN,
    ) -> schemas.LabelAudit:
        """The round's label audit: every accepted label, who gave it and when."""
        try:
            entries = await self.runtime.run_store(self.state.audit, number, limit)
        except StoreError as error:
            raise _unavailable(error, "the label audit") from error
        if entries is None:
            raise HTTPException(404, f"round {number} is not kept (PICKSERVE_ROUNDS_KEPT)")
        classes = self.pool.class_names
        return schemas.LabelAudit(round=number, labels=[
            schemas.AuditedLabel(item_id=e["item_id"], label=e["label"],
                                 class_name=classes[e["label"]], by=e["by"], at=e["at"])
            for e in entries
        ])  # fmt: skip

    @api.patch("/v1/rounds/current", response_model=schemas.Selection)
    async def set_round_budget(
        self, request: schemas.BudgetRequest, caller: Caller = ADMIN
    ) -> schemas.Selection:
        """Change the current round's label budget (queries already issued stay)."""
        try:
            await self.runtime.run_store(
                self.state.set_budget, new_op("budget"), request.label_budget
            )
        except StoreError as error:
            raise _unavailable(error, "rounds") from error
        return await self._selection_response()

    @api.get("/metrics")
    async def metrics(self) -> Response:
        """Prometheus text format; the same numbers whichever replica answers. While the
        store is unreachable: this replica's last known numbers, with pickserve_store_up 0."""
        now = time.time()
        try:
            await self.runtime.flush()
            stored = await self.runtime.run_store(self.state.counters)
            selection = await self.runtime.run_store(self.state.selection)
            depth = await self.runtime.run_store(
                self.state.queue_depth, now, self.knobs.query_ttl_s
            )
            self._last_metrics = (stored, depth)
            text = render(stored, selection, depth, store_up=True)
        except StoreError:
            stored, depth = self._last_metrics
            text = render(stored, self.selection, depth, store_up=False)
        return Response(text, media_type=CONTENT_TYPE_LATEST)
