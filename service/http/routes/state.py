"""The picker's state: selection, rounds and their history, the label audit, metrics."""

import time
from typing import Any

from fastapi import HTTPException, Path, Query
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from service.config.knobs import active_size
from service.http import schemas
from service.http.api import (
    ADMIN,
    INFER_OR_LABEL,
    LABEL,
    OPTIONAL_CALLER,
    RouterBase,
    api,
    idempotency_header,
    unavailable,
)
from service.http.auth import Caller
from service.http.views import round_view, selection_view
from service.replica.metrics import gauge, labeler_accuracy, render
from service.replica.shadow import paced_rate
from service.state import rules
from service.state.live import RoundNotKeptError, new_op
from service.state.rules import Selection
from service.state.rules.labelers import entry_weight
from service.state.store.base import StoreError


class StateRoutes(RouterBase):
    @api.get("/v1/pool", response_model=schemas.PoolInfo)
    async def get_pool(self, caller: Caller = INFER_OR_LABEL) -> schemas.PoolInfo:
        """The pool being served: features per instance, class names, candidates."""
        return schemas.PoolInfo(
            n_features=self.pool.n_features, classes=self.pool.class_names,
            candidates=[schemas.PoolCandidate(name=c.name, kind=c.kind,  # type: ignore[arg-type]
                                              registry=c.mlflow)
                        for c in self.pool.candidates],
            initial=self.pool.initial or self.names[0], image_shape=self.pool.image_shape,
        )  # fmt: skip

    @api.get("/v1/selection", response_model=schemas.Selection)
    async def get_selection(self, caller: Caller = LABEL) -> schemas.Selection:
        """The picker's state, the served model and the audit trail of swaps (the
        posterior, losses, step and best model for admins only)."""
        return await self._selection_response(caller.may("admin"))

    async def _selection_response(
        self, full: bool = True, round_number: int | None = None
    ) -> schemas.Selection:
        """The current round's view, or with `round_number` that round's (a round another
        request started right after it is not this request's answer)."""
        try:
            if round_number is None:
                selection = await self.runtime.run_store(self.state.selection)
            else:
                selection = await self.runtime.run_store(self.state.selection_of, round_number)
        except RoundNotKeptError as error:  # a key's repeat, after its round left the history
            raise HTTPException(
                410,
                f"this request started round {error.round_number}, which is no longer "
                "kept (PICKSERVE_ROUNDS_KEPT): it was applied then; GET /v1/selection shows "
                "the current round",
            ) from error
        except StoreError as error:
            raise unavailable(error, "the selection") from error
        return selection_view(selection, full, self._active(selection))

    @api.post("/v1/rounds", response_model=schemas.Selection)
    async def new_round(
        self,
        request: schemas.RoundRequest | None = None,
        idempotency_key: str | None = idempotency_header(),
        caller: Caller = ADMIN,
    ) -> schemas.Selection:
        """Start a new round (a new data period): losses and step reset, the queue is
        dropped, the served model stays until labels move the posterior."""
        await self.bind_key("rounds", idempotency_key, caller, request)
        op = f"round:{idempotency_key}" if idempotency_key else new_op("round")
        try:
            budget = self.selection.meta.config_budget
            if request is not None and "label_budget" in request.model_fields_set:
                budget = request.label_budget
            started = await self.runtime.run_store(self.state.start_round, op, budget, time.time())
        except StoreError as error:
            raise unavailable(error, "rounds") from error
        return await self._selection_response(round_number=started)

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
            raise unavailable(error, "rounds") from error
        rounds = [round_view(record, self.names) for record in records]
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
            raise unavailable(error, "the label audit") from error
        if entries is None:
            raise HTTPException(404, f"round {number} is not kept (PICKSERVE_ROUNDS_KEPT)")
        classes = self.pool.class_names
        return schemas.LabelAudit(round=number, labels=[
            schemas.AuditedLabel(item_id=e["item_id"], label=e["label"],
                                 class_name=classes[e["label"]], by=e["by"], at=e["at"],
                                 weight=entry_weight(e))
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
            raise unavailable(error, "rounds") from error
        return await self._selection_response()

    def _active(self, selection: Selection) -> tuple[int, ...] | None:
        """The large-pool mode's active set for this selection (None: every candidate)."""
        return rules.active_columns(selection, active_size(self.knobs), self.priors)

    def _replica_gauges(self) -> list[Any]:
        rate = paced_rate(self.knobs, self.runtime.waiting)
        active = self._active(self.selection)
        running = gauge("active_models", "Candidates each shadow item runs on now (the "
                        "large-pool mode's active set; every candidate outside it)",
                        float(len(self.names) if active is None else len(active)))  # fmt: skip
        meaning = ("Share of served items sampled for shadow evaluation now (shadow_rate, or "
                   "the trickle while the label queue is full)")  # fmt: skip
        healthy = GaugeMetricFamily(
            "pickserve_model_healthy", "1 while the model answers served requests (this "
            "replica's view; a failing model is skipped until a probe sees it answer)",
            labels=("model",),
        )  # fmt: skip
        for name in self.names:
            healthy.add_metric([name], float(self.server.health.healthy(name)))
        left = gauge("eliminated_models", "Candidates the elimination test took out of the "
                     "current round (the large-pool mode): never evaluated or served again "
                     "in it", float(self.selection.tally.out().sum()))  # fmt: skip
        return [gauge("shadow_rate", meaning, rate), running, left, healthy]

    @api.get("/metrics")
    async def metrics(self, caller: Caller | None = OPTIONAL_CALLER) -> Response:
        """Prometheus text format; the same numbers whichever replica answers. While the
        store is unreachable: this replica's last known numbers, with pickserve_store_up 0.
        Open, without the posterior, losses, best model and step; with a token of the
        `metrics` (or admin) role, with them."""
        full = caller is not None and caller.may("metrics")
        now = time.time()
        try:
            await self.runtime.flush()
            stored = await self.runtime.run_store(self.state.counters)
            selection = await self.runtime.run_store(self.state.selection)
            depth = await self.runtime.run_store(
                self.state.queue_depth, now, self.knobs.query_ttl_s
            )
            extra = self._replica_gauges()
            if full:  # how each person does: for those who may see the picker's figures
                reports = await self.runtime.run_store(self.state.labeler_reports,
                                                       len(self.pool.class_names))  # fmt: skip
                extra.append(labeler_accuracy({r.name: r.estimate.accuracy for r in reports}))
            self._last_metrics = (stored, depth)
            text = render(stored, selection, depth, True, extra, full)
        except StoreError:
            stored, depth = self._last_metrics
            text = render(stored, self.selection, depth, False, self._replica_gauges(), full)
        return Response(text, media_type=CONTENT_TYPE_LATEST)
