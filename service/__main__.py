"""`python -m service`: run pickserve in the foreground on a local Ray instance.

`python -m service check-pool pool.yaml` checks a pool file without starting anything."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from service.config.settings import Settings


def main() -> int:
    if sys.argv[1:2] == ["check-pool"]:
        from service.models.check_pool import main as check_pool

        return check_pool(sys.argv[2:])
    try:
        settings = _settings(sys.argv[1:])
    except ValidationError as error:
        from service.app import settings_problem

        print(f"error: {settings_problem(error)}", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    pool_file = _preflight(settings)
    if pool_file is None:
        return 2
    _serve(settings, pool_file)
    return 0


def _settings(argv: list[str]) -> Settings:
    """The settings: the environment, with what the command line names on top."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Run pickserve on a local Ray instance (`python -m service check-pool "
        "pool.yaml` checks a pool file instead).",
    )
    parser.add_argument("--port", type=int, help="HTTP port (default 8000, or PICKSERVE_PORT)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--pool", type=Path, help="pool YAML (default: the demo pool)")
    args = parser.parse_args(argv)
    return Settings(**{k: v for k, v in vars(args).items() if v is not None})


def _preflight(settings: Settings) -> Path | None:
    """Before Ray starts: a bad store, pool or token file fails in seconds, in one line
    (printed; None is returned)."""
    from service.app import access_tokens, check_store, resolve_pool_file
    from service.http.auth import TokenError
    from service.models.pool_file import PoolLoadError
    from service.state.store.base import StoreError

    if settings.pool is None:
        print("pickserve: loading the demo pool (built on first run)")
    try:
        access_tokens(settings)
        check_store(settings)
        return resolve_pool_file(settings)
    except (PoolLoadError, StoreError, TokenError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def _serve(settings: Settings, pool_file: Path) -> None:
    """Start Ray Serve with the application and wait for Ctrl-C or SIGTERM."""
    import ray
    from ray import serve

    from service.app import build

    print("pickserve: starting Ray Serve")
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build(settings, checked_pool=pool_file), name="pickserve", route_prefix="/")
    base = f"http://{settings.host}:{settings.port}"
    print(f"pickserve is up on {base} (store: {settings.store})")
    print(f"  API docs:   {base}/docs")
    print(f"  metrics:    {base}/metrics")
    print(f"  selection:  {base}/v1/selection")
    print("  drive the demo stream from another shell: make demo   (Ctrl-C here stops)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
