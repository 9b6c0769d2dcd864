"""The Ray Serve application, built from typed arguments.

`build_app` is the builder Ray Serve's config files name (`import_path:
service.app:build_app`); its `args` are the fields of `Settings`. The picker's knobs go to
the router as `user_config`, so `serve deploy` with new knobs restarts nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application

from service.candidates import Candidates
from service.demo_pool import ensure_demo
from service.pool import read_pool_spec
from service.router import Router
from service.settings import Settings
from service.store import open_backend


def resolve_pool_file(settings: Settings) -> Path:
    """The pool YAML to serve: the user's, or the demo pool (built on first use)."""
    if settings.pool is not None:
        read_pool_spec(settings.pool)  # fail early, with the file named
        return settings.pool.resolve()
    return ensure_demo(demo_folder(settings)).pool_file.resolve()


def demo_folder(settings: Settings) -> Path:
    return (settings.state_dir / "demo-pool").resolve()


def check_store(settings: Settings) -> None:
    """Open the configured store once before deploying, so that an unreachable or unsafe
    store (a Redis without append-only, say) stops start-up with its reason."""
    open_backend(settings).close()


def build(settings: Settings) -> Application:
    settings = settings.model_copy(update={"state_dir": settings.state_dir.resolve()})
    check_store(settings)
    pool_file = str(resolve_pool_file(settings))
    candidates = Candidates.bind(pool_file)  # type: ignore[attr-defined]
    router = Router.options(  # type: ignore[attr-defined]
        num_replicas=settings.router_replicas,
        user_config=settings.knobs.model_dump(),
    )
    # The knobs travel only as user_config: changing them must not change the init args,
    # or Ray Serve would restart the replicas instead of calling reconfigure().
    settings_json = settings.model_dump_json(exclude={"knobs"})
    application: Application = router.bind(candidates, settings_json, pool_file)
    return application


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve application builder: `args` override the environment's settings."""
    return build(Settings(**args))
