"""Labelers: gold items and each labeler's estimated accuracy (admins; a labeler sees
their own, GET /v1/labelers/me)."""

import time
import uuid
from typing import NamedTuple

from fastapi import HTTPException, Path
from fastapi.responses import JSONResponse

from service.http import schemas
from service.http.api import (
    ADMIN,
    LABEL,
    RouterBase,
    _auth,
    api,
    idempotency_header,
    logger,
    unavailable,
)
from service.http.auth import NAME_PATTERN, Caller
from service.http.labels import class_index
from service.http.limits import AsciiJSONResponse
from service.models.pool_file import as_feature_matrix
from service.state.labelers import LabelerReport
from service.state.live import new_op
from service.state.rules.labelers import FLAGGED, Gold, QuarantineError
from service.state.store.base import StoreError


class LabelerTerms(NamedTuple):
    """How a labeler's labels are taken now (`LabelerRoutes.labeler_terms`)."""

    weight: float  # what a label of theirs weighs
    overlap_rate: float  # the share of their labeled items handed to another labeler
    gold_rate: float  # the share of gold items among what they are handed


def overlap_rate(knob: float) -> float:
    """The overlap share in force: none while every caller is one labeler (no tokens)."""
    return knob if _auth["authenticator"].enabled else 0.0


def figures(
    report: LabelerReport, min_accuracy: float, quarantined: set[str]
) -> schemas.LabelerFigures:
    estimate = report.estimate
    return schemas.LabelerFigures(
        name=report.name, labels=report.labels, overlaps=report.overlaps, gold=report.gold,
        accuracy=estimate.accuracy, accuracy_low=estimate.low, accuracy_high=estimate.high,
        accuracy_bound=estimate.bound, flagged=estimate.flagged(min_accuracy),
        audited=estimate.audited(min_accuracy), quarantined=report.name in quarantined,
    )  # fmt: skip


LABELER = Path(..., max_length=64, pattern=NAME_PATTERN,
               description="a labeler: their token's name")  # fmt: skip


class LabelerRoutes(RouterBase):
    @api.post("/v1/gold", response_model=schemas.GoldResponse)
    async def add_gold(
        self,
        request: schemas.GoldRequest,
        idempotency_key: str | None = idempotency_header(),
        caller: Caller = ADMIN,
    ) -> JSONResponse:
        """Items with a known answer. Labelers get them among their items (gold_rate of
        what they are handed, each at most once, never told which), and their answers
        measure them (GET /v1/labelers); a gold answer is never a selection label. An
        answer outside the classes, or an instance of the wrong length, is a 422 and
        nothing is stored. Repeated with the same Idempotency-Key: the same ids, stored
        once."""
        await self.bind_key("gold", idempotency_key, caller, request)  # the key: this body
        answers = []
        for number, item in enumerate(request.items):
            index, detail = class_index(item.label, self.pool.class_names)
            if index is None:
                raise HTTPException(422, f"items[{number}]: {detail}")
            answers.append(index)
        try:
            features = as_feature_matrix([i.instance for i in request.items],
                                         self.pool.n_features)  # fmt: skip
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        predictions = await self.shadow.every_prediction(features)
        if predictions is None:
            raise HTTPException(503, "the candidates did not answer for the gold items "
                                "(their predictions are shown with them): try again")  # fmt: skip
        now, names = time.time(), list(self.names)
        golds = {}
        for row, answer, classes in zip(features, answers, predictions, strict=True):
            shown = dict(zip(names, map(int, classes), strict=True))
            golds[uuid.uuid4().hex] = Gold(tuple(map(float, row)), answer, shown, now,
                                           caller.name)  # fmt: skip
        op = f"gold:{idempotency_key or uuid.uuid4().hex}"
        try:
            ids = await self.runtime.run_store(self.state.add_gold, op, golds)
            total = await self.runtime.run_store(self.state.gold_count)
        except StoreError as error:
            raise unavailable(error, "gold items") from error
        return AsciiJSONResponse({"item_ids": ids, "gold_items": total})

    @api.get("/v1/labelers", response_model=schemas.LabelersResponse)
    async def labelers(self, caller: Caller = ADMIN) -> schemas.LabelersResponse:
        """Every labeler with their labels, overlap labels and gold answers, and their
        accuracy estimated from those (Dawid and Skene's model with one accuracy per
        labeler, `picker.labelers`) with a 95 % interval; flagged when its one-sided 95 %
        upper bound is below labeler_min_accuracy; audited while it is estimated below on
        too little evidence (more of their labels are checked then)."""
        knobs = self.knobs
        try:
            reports = await self.runtime.run_store(self.state.labeler_reports,
                                                   len(self.pool.class_names))  # fmt: skip
            total = await self.runtime.run_store(self.state.gold_count)
            barred = await self.runtime.run_store(self.state.quarantined)
        except StoreError as error:
            raise unavailable(error, "labelers") from error
        return schemas.LabelersResponse(
            labelers=[figures(r, knobs.labeler_min_accuracy, barred) for r in reports],
            min_accuracy=knobs.labeler_min_accuracy,
            overlap_rate=overlap_rate(knobs.overlap_rate), gold_items=total,
        )  # fmt: skip

    @api.get("/v1/labelers/me", response_model=schemas.OwnAgreement)
    async def own_agreement(self, caller: Caller = LABEL) -> schemas.OwnAgreement:
        """Your own figures: the labels you gave, and your estimated accuracy on the labels
        of yours that could be checked (against other labelers' on the same items, or a
        known answer), with its 95 % interval. It counts the evidence recorded at least
        agreement_lag_s ago: it never moves right after an item, so it never tells you
        which items were checked."""
        knobs = self.knobs
        lag = knobs.agreement_lag_s
        try:
            report = await self.runtime.run_store(self.state.own_report, caller.name,
                                                  len(self.pool.class_names),
                                                  time.time() - lag)  # fmt: skip
            barred = await self.runtime.run_store(self.state.quarantined)
        except StoreError as error:
            raise unavailable(error, "labelers") from error
        estimate, checked = report.estimate, report.overlaps + report.gold
        return schemas.OwnAgreement(
            name=caller.name, labels=report.labels, checked=checked,
            accuracy=estimate.accuracy if checked else None,
            accuracy_low=estimate.low, accuracy_high=estimate.high, lag_s=lag,
            quarantined=caller.name in barred,
        )  # fmt: skip

    @api.post("/v1/labelers/{name}/quarantine", response_model=schemas.QuarantineResponse)
    async def quarantine(self, name: str = LABELER, caller: Caller = ADMIN) -> JSONResponse:
        """Quarantine a labeler: their labels of the current round stop counting, exactly
        (the losses become those of the round without them, made again from its label
        audit in the order the labels came), their items go back to the queue for the
        others, and they get no items and apply no labels until it is lifted. Audited (an
        event with who and when). 409 where the losses cannot be made again exactly: a
        round whose candidates were eliminated or changed, an audit at its cap."""
        return await self._quarantine(name, True, caller)

    @api.delete("/v1/labelers/{name}/quarantine", response_model=schemas.QuarantineResponse)
    async def lift_quarantine(self, name: str = LABELER, caller: Caller = ADMIN) -> JSONResponse:
        """Lift a quarantine: their labels of the current round whose items still wait count
        again (the items leave the queue); an item someone else labeled meanwhile keeps
        that label. With nothing else changed, the losses are those before, to the bit."""
        return await self._quarantine(name, False, caller)

    async def _quarantine(self, name: str, on: bool, caller: Caller) -> JSONResponse:
        try:
            answer = await self.runtime.run_store(self.state.set_quarantine, new_op("quarantine"),
                                                  name, on, time.time(), caller.name)  # fmt: skip
        except QuarantineError as error:
            raise HTTPException(409, str(error)) from None
        except StoreError as error:
            raise unavailable(error, "labelers") from error
        try:
            await self.runtime.reconcile(None)  # the losses moved: the served model follows
        except StoreError as error:  # the refresh loop does it within a second
            logger.warning("swap check after a quarantine failed: %s", error)
        return AsciiJSONResponse(schemas.QuarantineResponse(**answer).model_dump())

    async def labeler_terms(self, name: str) -> LabelerTerms:
        """How `name`'s labels are taken now: what they weigh (`LabelerEstimate.weight`; 1
        with weigh_labels off), and the overlap and gold rates they get (the audit rates
        while they are under audit, `LabelerEstimate.audited`). Without tokens every caller
        is one labeler: weight 1, no overlap, gold_rate. The estimates are computed again
        only when the evidence grew."""
        knobs = self.knobs
        if not _auth["authenticator"].enabled:
            return LabelerTerms(1.0, 0.0, knobs.gold_rate)
        n_classes = len(self.pool.class_names)
        reports = await self.runtime.run_store(self.state.labeler_reports, n_classes)
        found = [r.estimate for r in reports if r.name == name]
        if not found:
            return LabelerTerms(1.0, knobs.overlap_rate, knobs.gold_rate)
        estimate = found[0]
        weight = estimate.weight(n_classes) if knobs.weigh_labels else 1.0
        if estimate.audited(knobs.labeler_min_accuracy):
            return LabelerTerms(weight, max(knobs.overlap_rate, knobs.audit_overlap_rate),
                                max(knobs.gold_rate, knobs.audit_gold_rate))  # fmt: skip
        return LabelerTerms(weight, knobs.overlap_rate, knobs.gold_rate)

    async def quarantine_flagged(self, barred: set[str]) -> None:
        """Quarantine every labeler the evidence flags (quarantine_flagged, with tokens),
        unless already quarantined (`barred`, as the request read it: one quarantined
        meanwhile is left as it is) or an admin let them go. Called after each feedback
        request; the estimates are computed again only when the evidence grew. A failure
        is logged: the next request tries again."""
        knobs = self.knobs
        if not (knobs.quarantine_flagged and _auth["authenticator"].enabled):
            return
        try:
            reports = await self.runtime.run_store(self.state.labeler_reports,
                                                   len(self.pool.class_names))  # fmt: skip
            for report in reports:
                if report.name in barred or not report.estimate.flagged(knobs.labeler_min_accuracy):
                    continue
                answer = await self.runtime.run_store(
                    self.state.set_quarantine, new_op("flagged"), report.name, True,
                    time.time(), FLAGGED,
                )  # fmt: skip
                if answer["changed"]:
                    logger.warning("labeler %s flagged (accuracy %.3f, at most %.3f): "
                                   "quarantined, %d items back in the queue", report.name,
                                   report.estimate.accuracy, report.estimate.high,
                                   answer["items"])  # fmt: skip
        except (StoreError, QuarantineError) as error:
            logger.warning("a flagged labeler was not quarantined: %s", error)
