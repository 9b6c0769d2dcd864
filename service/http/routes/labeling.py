"""Labeling routes: the queue, lease renewal, the labeling page, feedback."""

import time
import uuid

from fastapi import HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse

from service.config.knobs import elimination_level
from service.http import schemas
from service.http.api import (
    LABEL,
    LABEL_PAGE,
    PAGE,
    api,
    idempotency_header,
    logger,
    unavailable,
)
from service.http.auth import Caller
from service.http.labels import apply_labels, check_labels
from service.http.limits import AsciiJSONResponse
from service.http.routes.labelers import LabelerRoutes
from service.models.pool_file import NOT_EVALUATED
from service.state.live import LabelResult, new_op
from service.state.rules import Selection
from service.state.rules.labelers import QUARANTINED
from service.state.store.base import StoreError


def evaluated(names: list[str], predictions: tuple[int, ...]) -> dict[str, int]:
    """Each candidate's class for an item, leaving out those not run on it (out of the
    round by then)."""
    return {n: p for n, p in zip(names, predictions, strict=True) if p != NOT_EVALUATED}


def labeler_name(caller: Caller, annotator: str | None) -> str:
    """Who gave a feedback request's labels: the caller, or for a labeling tool with the
    bridge role the annotator it names, as `{annotator}@{the token's name}` (so that no
    bridge can speak as a token of its own, nor as another bridge's annotators). 403 for
    an annotator named by a token without the bridge role; 422 for a name over 64
    characters."""
    if annotator is None:
        return caller.name
    if not caller.may("bridge"):
        raise HTTPException(403, f"the token of {caller.name!r} lacks the 'bridge' role: only "
                            "a labeling tool with it may name the annotator (labeler)")  # fmt: skip
    name = f"{annotator}@{caller.name}"
    if len(name) > 64:
        raise HTTPException(422, f"labeler: {name!r} is over 64 characters with the token's "
                            "name: name the annotator more briefly")  # fmt: skip
    return name


class LabelingRoutes(LabelerRoutes):
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
            terms = await self.labeler_terms(caller.name)
            leased = await self.runtime.run_store(
                self.state.lease,
                limit,
                now,
                knobs.lease_s,
                knobs.query_ttl_s,
                caller.name,
                self.rng,
                terms.gold_rate,
            )
            depth = await self.runtime.run_store(self.state.queue_depth, now, knobs.query_ttl_s)
        except StoreError as error:
            raise unavailable(error, "the queue") from error
        items = [
            schemas.QueryItem(
                item_id=i.item_id, instance=list(i.instance),
                q=i.q if admin and i.q > 0 else None,  # 0: a gold item
                round=i.round,
                predictions=evaluated(self.names, i.predictions) if with_predictions else None,
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
                knobs.query_ttl_s, caller.name,
            )  # fmt: skip
        except StoreError as error:
            raise unavailable(error, "the queue") from error
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
        otherwise each label is applied once and answered accepted, duplicate, unknown, or
        leased (another labeler holds the item's lease). The status is 200 when any label
        was accepted, else 409 (duplicates, leased) or 404. When the store fails part-way,
        503: repeat with the same Idempotency-Key to learn the rest. The key names one
        request: with another body, or from another caller, it is a 422."""
        counters = self.runtime.counters
        by = labeler_name(caller, request.labeler)
        await self.bind_key("feedback", idempotency_key, caller, request)
        try:
            barred = await self.runtime.run_store(self.state.quarantined)
            terms = await self.labeler_terms(by)
        except StoreError as error:
            raise unavailable(error, "labelers") from error
        if by in barred:
            raise HTTPException(403, QUARANTINED)
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
                self.knobs.query_ttl_s, done, by,
                elimination_level(self.knobs, len(self.names)),
                terms.overlap_rate, terms.weight, caller.name,
            )  # fmt: skip
        except StoreError as error:
            failure = error
        for result in done:
            if result.outcome != "accepted":  # accepted ones count in the label's own write
                counters.inc("labels", result.outcome)
        accepted = [r.item_id for r in done if r.outcome == "accepted"]
        if accepted:
            await self.quarantine_flagged(barred)
        selection = await self._reconcile_after_labels(accepted[-1] if accepted else None)
        if accepted and self.tracking is not None:
            await self._journal_point()
        return _feedback_answer(done, failure, len(request.labels), key,
                                self.names[selection.served], selection.version)  # fmt: skip

    async def _journal_point(self) -> None:
        """The round's point after this label batch (`rules.journal`); if the store fails
        now, the tracking loop records it on its next tick."""
        assert self.tracking is not None
        try:
            await self.tracking.record()
        except StoreError as error:
            logger.warning("journal point after labels failed (the tracking loop retries): %s",
                           error)  # fmt: skip

    async def _reconcile_after_labels(self, trigger: str | None) -> Selection:
        """After every feedback request, whatever its outcomes: the served model follows the
        posterior's best. If the store fails here, the refresh loop does it within ~1 s."""
        try:
            return await self.runtime.reconcile(trigger)
        except StoreError as error:
            logger.warning("swap check after labels failed (the refresh loop retries): %s", error)
            return self.selection


def _feedback_answer(
    done: list[LabelResult],
    failure: StoreError | None,
    sent: int,
    key: str,
    served_model: str,
    selection_version: int,
) -> JSONResponse:
    """POST /v1/feedback's answer: 503 when the store failed part-way (with what was
    decided), else 200 when any label was accepted, 409 (duplicates, leased) or 404."""
    results = [schemas.LabelResult(item_id=r.item_id, outcome=r.outcome, detail=r.detail)
               for r in done]  # fmt: skip
    headers = {"idempotency-key": key}
    if failure is not None:
        detail = (f"state store unavailable: {failure}. {len(done)} of {sent} labels were "
                  "decided (see results); the others may or may not have been applied: "
                  "repeat this request with the same Idempotency-Key to learn their "
                  "outcome")  # fmt: skip
        body = {"detail": detail, "results": [r.model_dump() for r in results]}
        return AsciiJSONResponse(body, status_code=503, headers=headers)
    outcomes = {r.outcome for r in done}
    status = 200 if "accepted" in outcomes else 409 if outcomes & {"duplicate", "leased"} else 404
    response = schemas.FeedbackResponse(
        results=results, served_model=served_model, selection_version=selection_version
    )
    return AsciiJSONResponse(response.model_dump(), status_code=status, headers=headers)
