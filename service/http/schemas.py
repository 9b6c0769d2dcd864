"""The HTTP API's request and response models: the OpenAPI document at /docs is built
from these. Unknown fields are rejected; every field has bounds and a description."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

from service.config.knobs import Strict
from service.http.auth import NAME_PATTERN

ITEM_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
MAX_FEATURES = 1_000_000


def _encodable(text: str) -> str:
    """Strings must be valid Unicode: a lone surrogate ("\\ud800") is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("the string is not valid Unicode (lone surrogate)") from error
    return text


Text = Annotated[str, AfterValidator(_encodable)]
# A number where a number is meant: JSON booleans and strings are refused, not coerced.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
StrictInt = Annotated[int, Field(strict=True)]


class PredictRequest(Strict):
    instances: list[Annotated[list[FiniteFloat], Field(max_length=MAX_FEATURES)]] = Field(
        ..., min_length=1, max_length=100_000,
        description="feature vectors, one per item (length = the pool's n_features)",
    )  # fmt: skip


class ItemPrediction(Strict):
    item_id: str = Field(..., description="id to quote when posting a label for this item")
    predicted_class: int = Field(..., alias="class", ge=0, description="predicted class index")
    class_name: str = Field(..., description="the predicted class's name (the pool's classes)")
    probabilities: list[float] = Field(..., description="class probabilities, by class index")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PredictResponse(Strict):
    model: str = Field(..., description="the candidate that answered")
    failed_over_from: str | None = Field(
        None, description="the served model, when it failed and `model` answered instead"
    )
    selection_version: int = Field(..., ge=0, description="bumps on every hot swap")
    predictions: list[ItemPrediction] = Field(..., description="one per instance, in order")


class QueryItem(Strict):
    item_id: str = Field(..., description="quote it in the label")
    instance: list[float] = Field(..., description="the features, so a person can decide")
    predictions: dict[str, int] | None = Field(
        None, description="each candidate's predicted class (admins, or when asked for); "
        "candidates the elimination test took out of the round before the item was queued "
        "are not run on it, and not listed",
    )  # fmt: skip
    q: float | None = Field(
        None, gt=0, le=1, description="probability with which it was queried (admins only)"
    )
    round: int = Field(..., ge=0, description="the round it belongs to")
    lease_expires_at: float = Field(..., description="unix time the lease ends")


class QueriesResponse(Strict):
    items: list[QueryItem] = Field(..., description="items leased to the caller")
    classes: list[str] = Field(..., description="label index -> class name")
    queue_depth: int = Field(..., ge=0, description="items waiting, leased or not")


class RenewRequest(Strict):
    item_ids: list[Annotated[str, Field(pattern=ITEM_ID_PATTERN, max_length=64)]] = Field(
        ..., min_length=1, max_length=500, description="items the caller still works on"
    )


class RenewResponse(Strict):
    renewed: list[str] = Field(..., description="items whose lease now ends at lease_expires_at")
    gone: list[str] = Field(
        ..., description="items no longer waiting for this caller (labeled, expired, of an "
        "ended round, or leased to someone else)",
    )  # fmt: skip
    lease_expires_at: float = Field(..., description="unix time the renewed leases end")


class Label(Strict):
    item_id: str = Field(
        ..., pattern=ITEM_ID_PATTERN, max_length=64, description="from /v1/queries"
    )
    label: (
        Annotated[int, Field(strict=True, ge=-(2**31), le=2**31)]
        | Annotated[Text, Field(min_length=1, max_length=256)]
    ) = Field(..., description="the true class: its index, or its name (a string)")


class FeedbackRequest(Strict):
    labels: list[Label] = Field(..., min_length=1, max_length=1000, description="labels by item")
    labeler: str | None = Field(
        None, pattern=NAME_PATTERN, max_length=64,
        description="the annotator who gave these labels, for a labeling tool that speaks "
        "for several (a token with the bridge role only): they are recorded, measured and "
        "weighed as the labeler '{labeler}@{the token's name}'",
    )  # fmt: skip


Outcome = Literal["accepted", "duplicate", "unknown", "invalid", "leased"]


class LabelResult(Strict):
    item_id: str = Field(..., description="the item the label was for")
    outcome: Outcome = Field(
        ..., description="accepted, duplicate, unknown, invalid, or leased (another labeler "
        "holds the item's lease: not applied)",
    )  # fmt: skip
    detail: str | None = Field(None, description="why, when not accepted")


class FeedbackResponse(Strict):
    results: list[LabelResult] = Field(..., description="one per label, in order")
    served_model: str = Field(..., description="the served model after these labels")
    selection_version: int = Field(..., ge=0, description="bumps on every hot swap")


class SwapRecord(Strict):
    time: float = Field(..., description="unix time of the swap")
    kind: Literal[
        "swap", "canary_start", "canary_step", "canary_cancel", "rollback",
        "candidate_added", "candidate_removed",
    ] = Field(
        "swap", description="a swap; a canary's start, step, cancellation or rollback; a "
        "candidate added or removed at run time (from_model and to_model name it)",
    )  # fmt: skip
    via: str | None = Field(None, description="for a swap: swap (instant) or canary")
    reason: str | None = Field(None, description="why a canary moved or was rolled back")
    from_model: str = Field(..., description="served before")
    to_model: str = Field(..., description="served after")
    labels: int = Field(..., description="labels applied in the round at the time")
    round: int = Field(..., description="the round")
    trigger_item: str | None = Field(None, description="the label that moved the posterior")


class PoolCandidate(Strict):
    name: str = Field(..., description="the candidate's name")
    kind: Literal["sklearn", "onnx", "python", "mlflow"] = Field(
        ..., description="how it is loaded"
    )
    registry: str | None = Field(
        None, description="an `mlflow` candidate's registry URI (models:/name/version or @alias)"
    )


class PoolInfo(Strict):
    n_features: int = Field(..., ge=1, description="features per instance")
    classes: list[str] = Field(..., description="class index -> class name")
    candidates: list[PoolCandidate] = Field(..., description="the candidates, in pool order")
    initial: str = Field(..., description="the model served before any label")
    image_shape: list[int] | None = Field(
        ..., description="how to show an instance as an image (null: a table of features)"
    )


class Selection(Strict):
    """What the picker decided. The posterior, the losses, the step and the best model are
    for admins only: from them and an item's predictions, q (what a label weighs) could be
    worked out, and a labeler who knew it could steer the served model."""

    round: int = Field(..., ge=0, description="current round")
    step: int | None = Field(
        ..., ge=0, description="items the picker has seen this round (admins only)"
    )
    queries: int = Field(..., ge=0, description="items queued for labeling this round")
    labels: int = Field(..., ge=0, description="labels applied this round")
    label_budget: int | None = Field(..., description="queries allowed this round")
    selector: Literal["modelpicker", "pool-based"] = Field(
        ..., description="the round's selector (how its items were chosen)"
    )
    posterior: dict[str, float] | None = Field(
        ..., description="probability each model is the best (admins only)"
    )
    losses: dict[str, float] | None = Field(
        ..., description="importance-weighted loss L_i (pool-based: mistakes on labeled items; "
        "admins only)",
    )  # fmt: skip
    best_model: str | None = Field(..., description="the posterior's best (admins only)")
    served_model: str = Field(..., description="the model answering clients")
    selection_version: int = Field(..., ge=0, description="bumps on every hot swap")
    swaps: list[SwapRecord] = Field(..., description="recent swaps, oldest first")
    active_models: list[str] | None = Field(
        None, description="the candidates each shadow item runs on now, in the large-pool "
        "mode (knob active_models; admins only; null: every candidate, or not an admin)",
    )  # fmt: skip
    eliminated_models: list[str] | None = Field(
        None, description="candidates the elimination test took out of this round: never "
        "evaluated or served again in it (large-pool mode; admins only)",
    )  # fmt: skip


class EliminationRecord(Strict):
    """A candidate the elimination test took out of a round (the large-pool mode)."""

    model: str = Field(..., description="the candidate that left the round")
    labels: int = Field(..., ge=0, description="the round's labels when it left")
    step: int = Field(..., ge=0, description="items the picker had seen in the round then")
    at: float = Field(..., description="unix time it left")
    item_id: str = Field(..., description="the label that took it out")
    leader: str = Field(..., description="the candidate it was measured against")
    wealth: float = Field(..., description="the test's wealth against the leader then")
    threshold: float = Field(..., description="the wealth at which a candidate leaves: 1/delta")
    loss: float = Field(..., description="its loss L when it left (it stays so in the round)")
    leader_loss: float = Field(..., description="the leader's loss L then")


class RoundRecord(Strict):
    round: int = Field(..., ge=0, description="the round's number")
    started_at: float = Field(..., description="unix time it started")
    ended_at: float | None = Field(..., description="unix time it ended (null: current)")
    label_budget: int | None = Field(..., description="queries allowed in it")
    selector: Literal["modelpicker", "pool-based"] = Field(
        "modelpicker", description="how its items were chosen"
    )
    step: int = Field(..., ge=0, description="items the picker saw in it")
    queries: int = Field(..., ge=0, description="items queued for labeling in it")
    labels: int = Field(..., ge=0, description="labels applied in it")
    posterior: dict[str, float] = Field(..., description="the posterior at its end (or now)")
    best_model: str = Field(..., description="the posterior's best at its end (or now)")
    swaps: list[SwapRecord] = Field(..., description="swaps made in it (the ones still kept)")
    started_by: dict[str, Any] | None = Field(
        None, description="why it started: null (an operator, or start-up), or the drift "
        "evidence (reason, test, statistics, p-values, windows, step)",
    )  # fmt: skip
    eliminated: list[EliminationRecord] = Field(
        default_factory=list,
        description="candidates the elimination test took out of it (large-pool mode), in "
        "the order they left",
    )


class RoundsResponse(Strict):
    rounds: list[RoundRecord] = Field(..., description="the newest rounds, newest first")


class AuditedLabel(Strict):
    item_id: str = Field(..., description="the item labeled")
    label: int = Field(..., ge=0, description="the class index given")
    class_name: str = Field(..., description="the class's name")
    by: str = Field(..., description="the name of the token that gave it")
    at: float = Field(..., description="unix time it was applied")
    weight: float = Field(
        ..., ge=0, le=1, description="what the label weighed in the losses: its labeler's "
        "reliability when it was applied (weigh_labels; 1 for full weight)",
    )  # fmt: skip


class LabelAudit(Strict):
    round: int = Field(..., ge=0, description="the round")
    labels: list[AuditedLabel] = Field(..., description="accepted labels, oldest first")


class RoundRequest(Strict):
    label_budget: StrictInt | None = Field(
        None, ge=0, le=10_000_000,
        description="queries allowed in the new round; absent: the deployment's label_budget, "
        "null: no budget",
    )  # fmt: skip


class BudgetRequest(Strict):
    label_budget: StrictInt | None = Field(
        ..., ge=0, le=10_000_000, description="queries allowed in the current round (null: none)"
    )


V2Parameters = dict[
    Annotated[Text, Field(max_length=64)],
    FiniteFloat | bool | Annotated[Text, Field(max_length=256)],
]


class V2Tensor(Strict):
    name: Text = Field(..., min_length=1, max_length=128, description="input name")
    shape: list[Annotated[int, Field(ge=0, le=100_000_000)]] = Field(
        ..., min_length=1, max_length=2, description="[rows, features] or [features]"
    )
    datatype: Literal["FP32", "FP64", "INT32", "INT64"] = Field(..., description="element type")
    data: list[FiniteFloat] | list[Annotated[list[FiniteFloat], Field(max_length=MAX_FEATURES)]] = (
        Field(..., max_length=100_000_000, description="row-major values, flat or nested rows")
    )
    parameters: V2Parameters | None = Field(
        None, max_length=16, description="OIP tensor parameters (accepted, not used)"
    )


class V2RequestedOutput(Strict):
    name: Text = Field(..., min_length=1, max_length=128, description="an output to return")
    parameters: V2Parameters | None = Field(
        None, max_length=16, description="OIP output parameters (accepted, not used)"
    )


class V2InferRequest(Strict):
    id: Text | None = Field(None, max_length=128, description="echoed in the response")
    inputs: list[V2Tensor] = Field(..., min_length=1, max_length=1, description="one input")
    outputs: list[V2RequestedOutput] | None = Field(
        None, max_length=8, description="accepted; every output is returned"
    )
    parameters: V2Parameters | None = Field(
        None, max_length=16, description="OIP request parameters (accepted, not used)"
    )


class CandidateChange(Strict):
    candidates: list[str] = Field(..., description="the pool's candidates now, in order")
    served_model: str = Field(..., description="the model served now")
    loss: float | None = Field(
        None, ge=0, description="an added candidate's loss, backfilled from the round's labels"
    )
    labels: int | None = Field(None, ge=0, description="the labels its loss was computed from")


class GoldItem(Strict):
    instance: list[FiniteFloat] = Field(
        ..., min_length=1, max_length=MAX_FEATURES, description="the features (n_features)"
    )
    label: (
        Annotated[int, Field(strict=True, ge=-(2**31), le=2**31)]
        | Annotated[Text, Field(min_length=1, max_length=256)]
    ) = Field(..., description="the known class: its index, or its name (a string)")


class GoldRequest(Strict):
    items: list[GoldItem] = Field(
        ..., min_length=1, max_length=1000, description="items with a known answer"
    )


class GoldResponse(Strict):
    item_ids: list[str] = Field(..., description="the gold items' ids, in order")
    gold_items: int = Field(..., ge=0, description="gold items stored now, in all")


class LabelerFigures(Strict):
    name: str = Field(..., description="the labeler: their token's name")
    labels: int = Field(..., ge=0, description="selection labels they gave")
    overlaps: int = Field(..., ge=0, description="their labels on items another labeler labeled")
    gold: int = Field(..., ge=0, description="gold items they answered")
    accuracy: float = Field(
        ..., ge=0, le=1, description="estimated share of right labels (Dawid-Skene, one coin)"
    )
    accuracy_low: float = Field(..., ge=0, le=1, description="the estimate's 95 % interval, low")
    accuracy_high: float = Field(..., ge=0, le=1, description="the interval's high end")
    accuracy_bound: float = Field(
        ..., ge=0, le=1, description="the one-sided 95 % upper bound of the accuracy"
    )
    flagged: bool = Field(
        ..., description="accuracy below labeler_min_accuracy with 95 % confidence (the "
        "bound below it), on at least 20 checked labels",
    )  # fmt: skip
    audited: bool = Field(
        ..., description="estimated below labeler_min_accuracy on too little evidence to "
        "flag them: more of their labels are checked (audit_overlap_rate, audit_gold_rate)",
    )  # fmt: skip
    quarantined: bool = Field(
        ..., description="their labels do not count (POST /v1/labelers/{name}/quarantine)"
    )


class QuarantineResponse(Strict):
    labeler: str = Field(..., description="the labeler")
    quarantined: bool = Field(..., description="whether their labels are quarantined now")
    changed: bool = Field(..., description="false when it already was so (nothing changed)")
    items: int = Field(
        ..., ge=0, description="their items of the current round sent back to the queue "
        "(quarantine), or labeled again with their label (lift)",
    )  # fmt: skip
    labels: int = Field(..., ge=0, description="labels counting in the current round now")


class OwnAgreement(Strict):
    name: str = Field(..., description="you: your token's name")
    labels: int = Field(..., ge=0, description="selection labels you gave")
    checked: int = Field(
        ..., ge=0, description="your labels that could be checked against other labelers' or "
        "a known answer, recorded at least lag_s ago",
    )  # fmt: skip
    accuracy: float | None = Field(
        ..., ge=0, le=1, description="your estimated share of right labels on those (null: "
        "none checked yet)",
    )  # fmt: skip
    accuracy_low: float = Field(..., ge=0, le=1, description="its 95 % interval, low")
    accuracy_high: float = Field(..., ge=0, le=1, description="the interval's high end")
    lag_s: float = Field(
        ..., ge=0, description="the figure counts evidence this old or older "
        "(agreement_lag_s), so it never tells which of your recent items was checked",
    )  # fmt: skip
    quarantined: bool = Field(..., description="your labels do not count (an admin's decision)")


class LabelersResponse(Strict):
    labelers: list[LabelerFigures] = Field(..., description="every labeler known, by name")
    min_accuracy: float = Field(..., description="the labeler_min_accuracy knob")
    overlap_rate: float = Field(
        ..., description="share of labeled items handed to a second labeler (0 without tokens)"
    )
    gold_items: int = Field(..., ge=0, description="gold items stored")
