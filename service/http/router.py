"""The ingress: one Ray Serve deployment whose routes live in one module per resource
(`routes/inference.py`, `routes/labeling.py`, `routes/labelers.py`, `routes/state.py`,
`routes/candidates.py`).
This module sets a replica up and runs its background ticks; the rules are
`service.state.rules`, the math is `picker`'s, the background work is
`service.replica.loops`'s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path as FilePath
from typing import Any

import numpy as np
import ray.cloudpickle
from ray import serve
from ray.serve.handle import DeploymentHandle

from service.config.knobs import RuntimeKnobs
from service.config.settings import Settings
from service.http.api import (
    _auth,
    _limits,
    api,
)
from service.http.auth import Authenticator, check_access
from service.http.routes import candidates as routes_candidates
from service.http.routes import inference as routes_inference
from service.http.routes import labelers as routes_labelers
from service.http.routes import labeling as routes_labeling
from service.http.routes import state as routes_state
from service.http.routes.candidates import CandidateRoutes
from service.http.routes.inference import InferenceRoutes
from service.http.routes.labelers import LabelerRoutes
from service.http.routes.labeling import LabelingRoutes
from service.http.routes.state import StateRoutes
from service.models import registry
from service.models.pool_file import PoolSpec, read_pool_spec
from service.models.resident import ResidencyMetrics, open_pool
from service.models.runner import ModelRunner
from service.replica.canary import CanaryStats
from service.replica.health import PROBE_S
from service.replica.loops import ReplicaRuntime
from service.replica.serving import Server
from service.replica.shadow import ShadowEvaluator
from service.replica.tracking import TRACKING_S, JournalWriter, TrackingConfig, TrackingTicks
from service.state.follow import follow_store
from service.state.live import LiveState
from service.state.rules.swaps import canary_key
from service.state.store.factory import open_backend, retention

# Ray Serve turns the route methods into FastAPI class-based views in the driver, by
# rewriting each method's signature, then ships the app to the replicas. Methods defined in
# other modules would travel by reference and arrive without that rewrite: send them whole
# (which is also why those modules evaluate their annotations: no `from __future__`).
for _module in (
    routes_inference,
    routes_labeling,
    routes_labelers,
    routes_state,
    routes_candidates,
):
    ray.cloudpickle.register_pickle_by_value(_module)  # type: ignore[no-untyped-call]


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=512)
@serve.ingress(api)
class Router(InferenceRoutes, LabelingRoutes, LabelerRoutes, StateRoutes, CandidateRoutes):
    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self,
        candidates: DeploymentHandle[Any],
        settings_json: str,
        pool_file: str,
        token_table: list[dict[str, Any]],
    ) -> None:
        self.settings = settings = Settings.model_validate_json(settings_json)
        registry.use_tracking_uri(settings.mlflow_tracking_uri)  # before any model loads
        _limits["limits"] = settings.limits()
        if not token_table:  # however the app was built: no open door off loopback
            check_access(settings.host, [], settings.allow_insecure)
        _auth["authenticator"] = Authenticator(token_table)
        self.candidates = candidates
        self.pool_file = FilePath(pool_file)
        self._pool_lock = asyncio.Lock()
        classes = len(read_pool_spec(self.pool_file).class_names)
        self.state = LiveState(open_backend(settings), retention(settings), classes)
        # A replica restarted after a candidate change stopped half-way: the file catches up.
        await asyncio.to_thread(follow_store, self.state.backend, self.pool_file)
        self.pool: PoolSpec = read_pool_spec(self.pool_file)
        self.names = [c.name for c in self.pool.candidates]
        self._start_work(candidates)
        initial = 0 if self.pool.initial is None else self.names.index(self.pool.initial)
        await self.runtime.run_store(self.state.initialise, self.names, initial, None,
                                     time.time(), settings.knobs.selector)  # fmt: skip
        await self.runtime.refresh()
        self.rng = np.random.default_rng(settings.knobs.seed)  # reconfigure() may reseed it
        self._last_metrics: tuple[dict[str, float], int] = ({}, 0)
        self.runtime.start()

    def _start_work(self, candidates: DeploymentHandle[Any]) -> None:
        """What runs beside the routes: the serving path (with the models in this process
        when serve_from=router: no extra hop), shadow work and the replica's ticks."""
        settings = self.settings
        runner = None
        if settings.serve_from == "router":
            loaded, residency = open_pool(self.pool_file, settings.max_resident_models)
            runner = ModelRunner(loaded.candidates, settings.model_timeout_s,
                                 settings.model_threads, residency=residency)  # fmt: skip
        self.runtime = ReplicaRuntime(self.state, settings.selection_refresh_s)
        self.server = Server(self.names, runner, candidates, self.runtime.counters,
                             settings.model_timeout_s)  # fmt: skip
        self.runtime.also_every(self.server.probe, PROBE_S)
        if runner is not None and runner.residency is not None:
            self.runtime.also_every(self._report_residency, PROBE_S)
        self._residency_metrics: ResidencyMetrics | None = None
        self.canary_stats = CanaryStats()
        self.runtime.also_every(self._canary_tick, settings.selection_refresh_s)
        self.tracking: TrackingTicks | None = None
        if settings.tracking:
            self.tracking = self._tracking_ticks(settings)
            self.runtime.also_every(self.tracking.tick, TRACKING_S)
        self.runtime.also_every(self.sync_pool, settings.selection_refresh_s)
        self.shadow = ShadowEvaluator(
            candidates, self.state, self.runtime.run_store, self.runtime.counters,
            settings.shadow_max_in_flight, settings.shadow_batch_size,
            settings.shadow_batch_wait_s, self._shadow_timeout_s(), len(self.pool.class_names),
            lambda: self.names, lambda: self.runtime.selection, lambda: self.priors,
        )  # fmt: skip

    def _tracking_ticks(self, settings: Settings) -> TrackingTicks:
        """Every round an MLflow run, from the store's journal (`service.replica.tracking`)."""
        config = TrackingConfig(settings.mlflow_experiment, settings.store_namespace,
                                settings.mlflow_champion_alias)  # fmt: skip
        writer = JournalWriter(
            self.state,
            config,
            lambda: {c.name: c.mlflow for c in self.pool.candidates},
            lambda: self.runtime.knobs.model_dump(),
        )
        return TrackingTicks(writer, self.runtime.run_store, lambda: self.knobs.query_ttl_s,
                             self.runtime.counters)  # fmt: skip

    async def _report_residency(self) -> None:
        """This replica's on-demand model loads, into the shared counters (the same on
        every replica's /metrics), and what it holds, to Ray's metrics (per replica)."""
        residency = self.server.runner.residency if self.server.runner is not None else None
        if residency is None:
            return
        if self._residency_metrics is None:
            self._residency_metrics = ResidencyMetrics(residency)
        loads, seconds = self._residency_metrics.record()
        if loads > 0:
            self.runtime.counters.inc("model_loads", value=loads)
            self.runtime.counters.inc("model_load_seconds", value=seconds)

    def _shadow_timeout_s(self) -> float:
        """A shadow batch calls every model once, each within model_timeout_s; past this
        the batch is cancelled and shed."""
        return self.settings.model_timeout_s * (len(self.names) + 1)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray Serve's user_config: the picker's knobs change without a restart."""
        knobs = RuntimeKnobs.model_validate(user_config)
        if knobs.seed != self.runtime.knobs.seed or knobs.seed is None:
            self.rng = np.random.default_rng(knobs.seed)
        self.runtime.configure(knobs)

    async def _canary_tick(self) -> None:
        """Move the canary on, or roll it back, on what this replica's requests showed."""
        canary = self.selection.meta.canary
        if canary is None:
            return
        key, knobs = canary_key(canary), self.knobs
        verdict = self.canary_stats.verdict(key, knobs)
        if verdict is None:
            return
        await self.runtime.run_store(self.state.canary_move, verdict[0], key,
                                     len(knobs.canary_steps), time.time(), verdict[1])  # fmt: skip
        await self.runtime.refresh()
