"""The Ray Serve application, built from typed arguments.

`build_app` is the builder Ray Serve's config files name (`import_path:
service.app:build_app`); its `args` are the fields of `Settings`. The picker's knobs go to
the router as `user_config`, so `serve deploy` with new knobs restarts nothing.

The builder loads and probes every candidate before anything is deployed, so a broken pool
stops deployment with one line naming the candidate, its file and the reason: `serve run
service.app:build_app pool=...` prints it and exits with code 2 (as `make run` does); under
`serve deploy` (the builder runs inside the cluster) it is the application's status message.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError
from ray.serve import Application

from service.config.settings import Settings
from service.http.auth import TokenError, TokenSpec, check_access, read_tokens, token_table
from service.http.router import Router
from service.models import registry
from service.models.candidates import Candidates
from service.models.demo_data import ensure_demo
from service.models.loaders import load_pool
from service.models.pool_file import PoolLoadError
from service.state.follow import follow_store
from service.state.store.base import StoreError
from service.state.store.factory import open_backend


def resolve_pool_file(settings: Settings) -> Path:
    """The pool YAML to serve (the user's, or the demo pool, built on first use), after
    it caught up with the store's pool (`roster.follow_store`) and every candidate was
    loaded and probed once here: a pool that cannot serve fails before anything is
    deployed, with a one-line PoolLoadError, instead of inside a replica."""
    if settings.pool is None:
        pool_file = ensure_demo(demo_folder(settings)).pool_file.resolve()
    else:
        pool_file = settings.pool.resolve()
    backend = open_backend(settings)
    try:
        follow_store(backend, pool_file)
    finally:
        backend.close()
    loaded = load_pool(pool_file)
    active = settings.knobs.active_models
    if isinstance(active, int) and active > len(loaded.candidates):
        raise PoolLoadError(
            f"active_models {active} exceeds the pool's {len(loaded.candidates)} candidates "
            f"in {pool_file} (use a smaller number, or auto or all)"
        )
    return pool_file


def demo_folder(settings: Settings) -> Path:
    return (settings.state_dir / "demo-pool").resolve()


def access_tokens(settings: Settings) -> list[TokenSpec]:
    """The tokens, read once; refused when there are none (an empty list included) on an
    address other than loopback. Every way the service starts comes through here."""
    tokens = read_tokens(settings.tokens_file, settings.tokens)
    check_access(settings.host, tokens, settings.allow_insecure)
    return tokens


def check_store(settings: Settings) -> None:
    """Open the configured store once before deploying, so that an unreachable or unsafe
    store (a Redis without append-only, say) stops start-up with its reason."""
    open_backend(settings).close()


def candidates_scaling(settings: Settings) -> dict[str, Any]:
    """The Candidates deployment's replicas: fixed, or autoscaled on ongoing requests."""
    if settings.shadow_max_replicas is None:
        return {"num_replicas": settings.shadow_replicas}
    return {"autoscaling_config": {
        "min_replicas": settings.shadow_replicas, "initial_replicas": settings.shadow_replicas,
        "max_replicas": settings.shadow_max_replicas, "target_ongoing_requests": 2,
    }}  # fmt: skip


def check_cluster(settings: Settings) -> None:
    """The embedded store is a file on one machine: on a Ray cluster of several nodes,
    replicas on other nodes would each write a store of their own."""
    if settings.store != "embedded" or not ray.is_initialized():
        return
    listed: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    nodes = [n for n in listed if n.get("Alive")]
    if len(nodes) > 1:
        raise StoreError(
            f"the embedded store is a file on one machine, but this Ray cluster has "
            f"{len(nodes)} nodes where replicas may run: use store=redis "
            "(PICKSERVE_STORE=redis, REDIS_URL) so that every replica shares one state"
        )


def build(settings: Settings, checked_pool: Path | None = None) -> Application:
    """The application; `checked_pool` is a pool file `resolve_pool_file` already checked."""
    settings = settings.model_copy(update={"state_dir": settings.state_dir.resolve()})
    registry.use_tracking_uri(settings.mlflow_tracking_uri)  # `mlflow:` candidates load here
    tokens = token_table(access_tokens(settings))  # first: no open door, whatever else
    check_cluster(settings)
    check_store(settings)
    pool_file = str(checked_pool or resolve_pool_file(settings))
    candidates = Candidates.options(  # type: ignore[attr-defined]
        **candidates_scaling(settings)
    ).bind(
        pool_file,
        settings.model_timeout_s,
        settings.max_resident_models,
        settings.mlflow_tracking_uri,
    )
    router = Router.options(  # type: ignore[attr-defined]
        num_replicas=settings.router_replicas,
        max_replicas_per_node=settings.router_replicas_per_node,
        user_config=settings.knobs.model_dump(),
    )
    # The knobs travel only as user_config: changing them must not change the init args,
    # or Ray Serve would restart the replicas instead of calling reconfigure().
    settings_json = settings.model_dump_json(exclude={"knobs", "tokens"})
    application: Application = router.bind(candidates, settings_json, pool_file, tokens)
    return application


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve application builder: `args` override the environment's settings."""
    try:
        return build(Settings(**args))
    except (PoolLoadError, StoreError, TokenError, ValidationError) as error:
        reason = settings_problem(error) if isinstance(error, ValidationError) else str(error)
        if ray.is_initialized():  # inside the cluster (serve deploy): the app's status
            raise StartupError(reason) from None  # ends with the line, no chained noise
        # `serve run service.app:build_app` calls the builder before Ray starts: answer as
        # `make run` does, one line and exit code 2, rather than with a traceback.
        print(f"error: {reason}", file=sys.stderr)
        raise SystemExit(2) from None


class StartupError(RuntimeError):
    """pickserve cannot start with this pool, store, token file or settings."""


def settings_problem(error: ValidationError) -> str:
    """A settings ValidationError as one line."""
    return "; ".join(
        f"setting {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        if e["loc"]
        else str(e["msg"]).removeprefix("Value error, ")
        for e in error.errors()
    )
