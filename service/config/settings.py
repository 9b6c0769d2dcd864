"""Every knob of pickserve, read once at start-up from the environment (PICKSERVE_*)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.config.knobs import RuntimeKnobs


@dataclass(frozen=True)
class Limits:
    """What one request may bring (the settings of the same names; `service.http.limits`)."""

    max_request_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    body_timeout_s: float = 30.0


class Settings(BaseSettings):
    """Start-up settings. The picker's runtime knobs (`knobs`) can also be changed later
    through Ray Serve's `user_config` without a restart."""

    model_config = SettingsConfigDict(env_prefix="PICKSERVE_", env_nested_delimiter="__")

    host: str = Field("127.0.0.1", description="address the HTTP proxy listens on")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    pool: Path | None = Field(None, description="pool YAML; none: the bundled demo pool")
    state_dir: Path = Field(Path("var"), description="embedded store file, demo pool cache")
    store: Literal["embedded", "redis", "memory"] = Field(
        "embedded",
        description="state store: embedded (SQLite file on local disk), redis, or memory "
        "(one router replica, nothing kept on restart: for trials)",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "PICKSERVE_REDIS_URL"),
        description="Redis URL, used when store=redis",
    )
    redis_allow_unsafe: bool = Field(
        False,
        description="accept a Redis without appendonly yes / maxmemory-policy noeviction "
        "(it may lose acknowledged labels): throwaway setups only",
    )
    store_timeout_s: float = Field(
        1.0, gt=0, le=30, description="socket timeout (Redis) and lock wait (SQLite) per call"
    )
    store_namespace: str = Field(
        "pickserve", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="separates pickserve states"
    )
    item_retention_s: float = Field(
        7 * 86_400.0, gt=0, le=365 * 86_400,
        description="an item's record is kept this long after it was queued",
    )  # fmt: skip
    swap_log_cap: int = Field(1000, ge=1, le=1_000_000, description="swap records kept")
    rounds_kept: int = Field(
        100, ge=1, le=100_000, description="rounds whose record and label audit are kept"
    )
    label_audit_cap: int = Field(
        100_000, ge=1, le=10_000_000, description="label audit records kept per round"
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=1024**3, description="request bodies larger get a 413"
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, le=1024**2,
        description="request headers larger in all (names and values) get a 431",
    )  # fmt: skip
    max_headers: int = Field(
        100, ge=8, le=10_000, description="requests with more headers get a 431"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="a request body not complete this long after the request arrived gets a "
        "408 (a client that trickles its body cannot hold a connection)",
    )  # fmt: skip
    router_replicas: int = Field(1, ge=1, le=64, description="ingress replicas")
    router_replicas_per_node: int | None = Field(
        None, ge=1, le=64,
        description="at most this many router replicas on one Ray node (spreads them over "
        "the cluster's nodes); None: Ray Serve places them",
    )  # fmt: skip
    max_batch_size: int = Field(256, ge=1, le=100_000, description="instances per request")
    shadow_max_in_flight: int = Field(
        4, ge=1, le=1024, description="shadow batches running at once per replica; more are shed"
    )
    shadow_batch_size: int = Field(
        64, ge=1, le=10_000,
        description="sampled items a router gathers into one shadow batch (one call of each "
        "model for all of them)",
    )  # fmt: skip
    shadow_batch_wait_s: float = Field(
        0.5, ge=0, le=60, description="longest a sampled item waits for its shadow batch"
    )
    shadow_replicas: int = Field(
        1, ge=1, le=1024,
        description="replicas of the Candidates deployment (shadow evaluation); the start "
        "and lower bound when shadow_max_replicas is set",
    )  # fmt: skip
    shadow_max_replicas: int | None = Field(
        None, ge=1, le=1024,
        description="autoscale the Candidates deployment up to this many replicas (Ray "
        "Serve autoscaling on ongoing requests); None: a fixed shadow_replicas",
    )  # fmt: skip
    serve_from: Literal["router", "candidates"] = Field(
        "router",
        description="where the served model answers: router (every router replica loads "
        "the pool and answers in-process, no extra hop) or candidates (the router calls the "
        "Candidates deployment: for pools too large to load in every router replica)",
    )
    max_resident_models: int | None = Field(
        None, ge=1, le=1_000_000,
        description="models each replica holds in memory at most (the Candidates "
        "deployment, and router replicas with serve_from router): the others are loaded "
        "when a call needs them, the least recently used evicted; the served model stays "
        "loaded. None: every candidate, loaded at start",
    )  # fmt: skip
    model_timeout_s: float = Field(
        5.0, gt=0, le=600,
        description="longest any model call may take (served and shadow); a served model "
        "past it is a 503 naming it, a shadow batch past it is shed and counted",
    )  # fmt: skip
    candidate_load_timeout_s: float = Field(
        60.0, gt=0, le=3600,
        description="a candidate added at run time must load and answer its probe within "
        "this, in a process of its own, or it is refused (422)",
    )  # fmt: skip
    candidate_load_memory_mb: int = Field(
        4096, ge=256, le=1024**2,
        description="address space of the process a candidate added at run time is loaded "
        "in first; past it, the candidate is refused (422)",
    )  # fmt: skip
    model_threads: int = Field(
        2, ge=1, le=64, description="worker threads per model in each replica that runs it"
    )
    selection_refresh_s: float = Field(
        0.2, gt=0, le=1.0, description="how often a replica re-reads the served model"
    )
    tokens_file: Path | None = Field(
        None, description="YAML or JSON list of {name, token, roles}; roles: infer, label, admin"
    )
    tokens: str | None = Field(
        None, repr=False,
        description="the same list as JSON, in the variable PICKSERVE_TOKENS (e.g. from a "
        "Kubernetes Secret)",
    )  # fmt: skip
    allow_insecure: bool = Field(
        False,
        description="serve every route to anyone, with no tokens, on an address other than "
        "127.0.0.1: never in production",
    )
    mlflow_tracking_uri: str | None = Field(
        None, repr=False, max_length=2048,
        validation_alias=AliasChoices("PICKSERVE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI",
                                      "mlflow_tracking_uri"),
        description="MLflow tracking server (and registry): where `mlflow:` candidates are "
        "loaded from and, unless mlflow_tracking is false, every round is written as a run",
    )  # fmt: skip
    mlflow_tracking: bool = Field(
        True, description="with a tracking URI: write every round as an MLflow run"
    )
    mlflow_experiment: str = Field(
        "pickserve", min_length=1, max_length=256, description="the MLflow experiment of the runs"
    )
    mlflow_champion_alias: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$",
        description="move this registered-model alias (e.g. champion) to the served "
        "candidate's version after every swap (registry candidates only)",
    )  # fmt: skip
    knobs: RuntimeKnobs = Field(default_factory=RuntimeKnobs)

    @model_validator(mode="after")
    def consistent(self) -> Settings:
        """Who may connect is checked where the tokens are read (`auth.check_access`)."""
        if self.shadow_max_replicas is not None and self.shadow_max_replicas < self.shadow_replicas:
            raise ValueError("shadow_max_replicas must be at least shadow_replicas")
        return self

    @property
    def tracking(self) -> bool:
        """Every round an MLflow run (`service.replica.tracking`)."""
        return self.mlflow_tracking and self.mlflow_tracking_uri is not None

    def limits(self) -> Limits:
        return Limits(self.max_request_bytes, self.max_header_bytes, self.max_headers,
                      self.body_timeout_s)  # fmt: skip

    def store_path(self) -> Path:
        return self.state_dir / f"{self.store_namespace}.sqlite3"
