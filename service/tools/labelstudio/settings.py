"""The bridge's settings: flags, or PICKSERVE_* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PICKSERVE_", populate_by_name=True)

    pickserve_url: str = Field(
        "http://127.0.0.1:8000", validation_alias=AliasChoices("pickserve_url", "PICKSERVE_URL")
    )
    pickserve_token: str | None = Field(
        None, repr=False, validation_alias=AliasChoices("pickserve_token", "PICKSERVE_TOKEN"),
        description="a pickserve token with the bridge role (the label role with "
        "annotators off; none: pickserve has no tokens)",
    )  # fmt: skip
    label_studio_url: str = Field("http://127.0.0.1:8080")
    label_studio_token: str = Field(..., repr=False, description="Label Studio API token")
    project: str = Field("pickserve", min_length=1, max_length=50, description="project title")
    state: Path = Field(Path("var/labelstudio-bridge.sqlite3"), description="item → task map")
    open_tasks: int = Field(20, ge=1, le=500, description="unannotated tasks kept open")
    poll_s: float = Field(2.0, gt=0, le=600, description="how often leases are renewed/filled")
    sweep_s: float = Field(10.0, gt=0, le=3600, description="how often all tasks are read")
    webhook_host: str = Field("127.0.0.1", description="where the webhook receiver listens")
    webhook_port: int = Field(0, ge=0, le=65535, description="0: no webhook (sweep only)")
    webhook_url: str | None = Field(
        None, description="the receiver's URL as Label Studio reaches it (default: host:port)"
    )
    show_predictions: bool = Field(False, description="show candidates' predictions")
    annotators: bool = Field(
        True, description="post each annotation for the Label Studio user who made it, a "
        "labeler of their own in pickserve (measured, weighed, quarantined on their own); "
        "needs a pickserve token with the bridge role. False: every annotation is the "
        "bridge token's",
    )  # fmt: skip
