"""The HTTP API's request and response models: the OpenAPI document at /docs is built
from these. Unknown fields are rejected; every field has bounds and a description."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuntimeKnobs(Strict):
    """Knobs changed at run time through Ray Serve's user_config (no restart)."""

    gamma: float = Field(
        1.0, gt=0, le=1e6, description="ModelPicker's query scale (calibrate: python -m picker)"
    )
    shadow_rate: float = Field(
        0.5, ge=0, le=1, description="share of served items also run through every candidate"
    )
    label_budget: int | None = Field(
        None, ge=0, description="queries per round at most (None: gamma alone limits them)"
    )
    switch_margin: float = Field(
        0.0, ge=0, lt=1, description="posterior lead the best needs over the served model"
    )
    lease_s: float = Field(60.0, gt=0, le=86_400, description="how long a labeler holds items")
    query_ttl_s: float = Field(
        86_400.0, gt=0, le=30 * 86_400, description="a queued item expires after this"
    )
    seed: int | None = Field(None, description="seed of the picker's coin (None: entropy)")


class PredictRequest(Strict):
    instances: list[list[float]] = Field(
        ..., min_length=1, description="feature vectors, one per item (length = n_features)"
    )


class ItemPrediction(Strict):
    item_id: str = Field(..., description="id to quote when posting a label for this item")
    predicted_class: int = Field(..., alias="class", description="predicted class index")
    probabilities: list[float] | None = Field(None, description="class probabilities, if any")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PredictResponse(Strict):
    model: str = Field(..., description="the candidate that answered")
    selection_version: int = Field(..., ge=0, description="bumps on every hot swap")
    predictions: list[ItemPrediction]


class QueryItem(Strict):
    item_id: str
    instance: list[float] = Field(..., description="the features, so a person can decide")
    predictions: dict[str, int] = Field(..., description="each candidate's predicted class")
    q: float = Field(..., gt=0, le=1, description="probability with which it was queried")
    round: int = Field(..., ge=0)
    lease_expires_at: float = Field(..., description="unix time the lease ends")


class QueriesResponse(Strict):
    items: list[QueryItem]
    classes: list[str] = Field(..., description="label index -> class name")
    queue_depth: int = Field(..., ge=0, description="items waiting, leased or not")


class Label(Strict):
    item_id: str = Field(..., min_length=1, max_length=64)
    label: int = Field(..., description="true class index")


class FeedbackRequest(Strict):
    labels: list[Label] = Field(..., min_length=1, max_length=1000)


Outcome = Literal["accepted", "duplicate", "unknown", "invalid"]


class LabelResult(Strict):
    item_id: str
    outcome: Outcome
    detail: str | None = None


class FeedbackResponse(Strict):
    results: list[LabelResult]
    served_model: str
    selection_version: int


class SwapRecord(Strict):
    time: float
    from_model: str
    to_model: str
    labels: int = Field(..., description="labels applied in the round at the time")
    round: int
    trigger_item: str | None = Field(None, description="the label that moved the posterior")


class Selection(Strict):
    round: int
    step: int = Field(..., description="items the picker has seen this round")
    queries: int
    labels: int
    label_budget: int | None
    posterior: dict[str, float]
    losses: dict[str, float]
    best_model: str
    served_model: str
    selection_version: int
    swaps: list[SwapRecord]


class RoundRequest(Strict):
    label_budget: int | None = Field(None, ge=0, description="queries allowed in the new round")


class V2Tensor(Strict):
    name: str = Field(..., max_length=128)
    shape: list[int] = Field(..., min_length=1, max_length=2)
    datatype: Literal["FP32", "FP64", "INT32", "INT64"]
    data: list[Any] = Field(..., description="row-major values (flat or nested)")
    parameters: dict[str, Any] | None = None


class V2InferRequest(Strict):
    id: str | None = Field(None, max_length=128)
    inputs: list[V2Tensor] = Field(..., min_length=1, max_length=1)
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None
