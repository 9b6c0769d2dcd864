"""The knobs an operator turns while the service runs (Ray Serve's user_config): no
restart, every replica picks them up. Configuration, beside the start-up settings."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from picker import DEFAULT_GAMMA
from picker.large_pool import DEFAULT_ACTIVE_MODELS, DEFAULT_DELTA

MOST_ACTIVE = 1_000_000  # the largest active set the knob takes


class Strict(BaseModel):
    """A model that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")


class RuntimeKnobs(Strict):
    """Knobs changed at run time through Ray Serve's user_config (no restart)."""

    gamma: float = Field(
        DEFAULT_GAMMA, gt=0, le=1e6,
        description="ModelPicker's query scale (calibrate: python -m picker calibrate)",
    )  # fmt: skip
    shadow_rate: float = Field(
        0.5, ge=0, le=1, description="share of served items also run through every candidate"
    )
    queue_target: int | None = Field(
        20, ge=1, le=1_000_000,
        description="items waiting in the label queue (not leased) at which shadow sampling "
        "falls to shadow_trickle_rate; it rises again below it. None: always shadow_rate",
    )  # fmt: skip
    shadow_trickle_rate: float = Field(
        0.01, ge=0, le=1,
        description="shadow sampling while the label queue is full (keeps the picker's step "
        "and the monitoring going)",
    )  # fmt: skip
    label_budget: int | None = Field(
        None, ge=0, le=10_000_000,
        description="queries per round at most (None: gamma alone limits them; with "
        "selector pool-based: labels asked per round); a change here applies to the "
        "current round once, when the deployed config changes",
    )  # fmt: skip
    selector: Literal["modelpicker", "pool-based"] = Field(
        "modelpicker",
        description="how items are chosen for labels: modelpicker (an online coin per item, "
        "importance-weighted losses) or pool-based (every disagreement item joins the round's "
        "pool, the queue is handed out in the order of a calibrated belief re-ranked after "
        "every label); a change starts a new round",
    )
    active_models: Annotated[int, Field(ge=2, le=MOST_ACTIVE)] | Literal["auto", "all"] = Field(
        "auto",
        description="selector modelpicker, large pools: candidates run on every shadow item "
        "(the active set: the lowest losses, with the served model); the picker's queued "
        "items are run through the rest before they are queued, so a label moves every "
        f"candidate's loss. auto: {DEFAULT_ACTIVE_MODELS} once the pool has more, else all; "
        "all: every candidate on every shadow item",
    )

    @field_validator("active_models", mode="before")
    @classmethod
    def _one_line_for_active_models(cls, value: object) -> object:
        """One clear reason instead of one per member of the union."""
        if value in ("auto", "all"):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MOST_ACTIVE:
            raise ValueError(
                f"must be a whole number from 2 to {MOST_ACTIVE}, auto or all; got {value!r}"
            )
        return value

    elimination_delta: Annotated[float, Field(gt=0, lt=1)] | Literal["off"] = Field(
        DEFAULT_DELTA,
        description="large-pool mode: a candidate leaves the round once the elimination "
        "test (a betting test against the leader on the labels) reaches 1/delta; delta is "
        "the chance that the round's best ever leaves. off: none leaves",
    )

    @field_validator("elimination_delta", mode="before")
    @classmethod
    def _one_line_for_elimination_delta(cls, value: object) -> object:
        """One clear reason instead of one per member of the union."""
        if value == "off":
            return value
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not 0.0 < number < 1.0:
            raise ValueError(f"must be a number between 0 and 1 (exclusive), or off; got {value!r}")
        return number

    pool_max_items: int = Field(
        20_000, ge=10, le=1_000_000,
        description="selector pool-based: items a round's pool holds at most (then no more "
        "join it until a new round)",
    )  # fmt: skip
    drift_action: Literal["new_round", "alert", "off"] = Field(
        "new_round",
        description="on drift in the live stream: start a new round (the evidence goes in "
        "the round history), alert only (metric and log), or do not monitor",
    )
    drift_window: int = Field(
        300, ge=50, le=1_000_000,
        description="shadow-evaluated items per drift window (the reference is the round's "
        "first window; each later window is tested against it)",
    )  # fmt: skip
    drift_alpha: float = Field(
        1e-4, gt=0, lt=0.5,
        description="false-alarm probability per tested window on a stationary stream "
        "(split over the two tests, Bonferroni)",
    )  # fmt: skip
    failover: bool = Field(
        True,
        description="a served model that fails answers through the next candidate in "
        "posterior order (off: a 503 naming it)",
    )
    swap_mode: Literal["instant", "canary"] = Field(
        "instant",
        description="instant: a swap moves all traffic at once; canary: traffic moves to the "
        "new best in canary_steps, rolled back on errors or latency past their bounds",
    )
    canary_steps: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.1, 0.5], min_length=1, max_length=10,
        description="shares of served requests the canary gets, step by step (then all)",
    )  # fmt: skip
    canary_step_requests: int = Field(
        50, ge=1, le=1_000_000,
        description="canary requests a replica sends at a step before the canary moves on",
    )  # fmt: skip
    canary_max_error_rate: float = Field(
        0.05, ge=0, le=1, description="a canary failing more of its requests is rolled back"
    )
    canary_max_latency_ms: float | None = Field(
        None, gt=0, le=600_000,
        description="a canary whose median latency is above this is rolled back (None: no "
        "latency bound)",
    )  # fmt: skip
    switch_margin: float = Field(
        0.0, ge=0, lt=1, description="posterior lead the best needs over the served model"
    )
    min_labels_between_swaps: int = Field(
        0, ge=0, le=1_000_000,
        description="labels needed since the last swap (in this round) before another",
    )  # fmt: skip
    overlap_rate: float = Field(
        0.1, ge=0, le=1,
        description="share of labeled items handed to a second labeler (another token) after "
        "the first label, and to a third when the two disagree: evidence of each labeler's "
        "accuracy (GET /v1/labelers). Needs tokens (with none, everyone is one labeler)",
    )  # fmt: skip
    gold_rate: float = Field(
        0.05, ge=0, lt=1,
        description="share of the items handed to a labeler that are gold items (POST "
        "/v1/gold: a known answer; never a selection label), each at most once per labeler",
    )  # fmt: skip
    audit_overlap_rate: float = Field(
        1.0, ge=0, le=1,
        description="overlap_rate for the labels of a labeler under audit: their accuracy "
        "is estimated below labeler_min_accuracy on too little evidence to flag them "
        "(GET /v1/labelers, `audited`). Checking more of their own labels tells a careless "
        "labeler apart within tens of labels; the others' labels are checked as before",
    )  # fmt: skip
    audit_gold_rate: float = Field(
        0.25, ge=0, lt=1,
        description="gold_rate for a labeler under audit (the higher of this and gold_rate)",
    )  # fmt: skip
    labeler_min_accuracy: float = Field(
        0.8, gt=0, le=1,
        description="a labeler whose estimated accuracy is below this with 95 % confidence "
        "is flagged (GET /v1/labelers)",
    )  # fmt: skip
    agreement_lag_s: float = Field(
        3600.0, ge=0, le=30 * 86_400,
        description="a labeler's own agreement figure (GET /v1/labelers/me, the labeling "
        "page) counts evidence at least this old, so that it never moves right after an "
        "item and tells them it was an overlap or gold item",
    )  # fmt: skip
    weigh_labels: bool = Field(
        True,
        description="a label moves the losses by its labeler's reliability w = (C a - 1)/(C - "
        "1), a the upper end of their accuracy's 95 % interval (GET /v1/labelers): 1 until "
        "the evidence shows them less than perfect; the expected loss under the label's "
        "posterior (with tokens). A pool-based round's belief takes the label as one from a "
        "labeler of accuracy a",
    )  # fmt: skip
    quarantine_flagged: bool = Field(
        True,
        description="a labeler flagged by the evidence is quarantined at once (with tokens: "
        "their labels of the current round stop counting, exactly, as an admin's quarantine "
        "does), until an admin lifts it",
    )
    lease_s: float = Field(60.0, gt=0, le=86_400, description="how long a labeler holds items")
    query_ttl_s: float = Field(
        86_400.0, gt=0, le=30 * 86_400, description="a queued item expires after this"
    )
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="seed of the picker's coin (None: entropy)"
    )


def active_size(knobs: RuntimeKnobs) -> int | None:
    """The active set's size the knob asks for (None: every candidate)."""
    if knobs.active_models == "all":
        return None
    if knobs.active_models == "auto":
        return DEFAULT_ACTIVE_MODELS
    return knobs.active_models


def elimination_level(knobs: RuntimeKnobs, pool_size: int) -> float | None:
    """The elimination test's delta for a label, or None: only in the large-pool mode
    (an active set smaller than the pool) and unless the knob says off."""
    size = active_size(knobs)
    if size is None or pool_size <= size or knobs.elimination_delta == "off":
        return None
    return knobs.elimination_delta
