"""`python -m service`: run pickserve in the foreground on a local Ray instance."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from service.settings import Settings


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--port", type=int, help="HTTP port (default 8000, or PICKSERVE_PORT)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--pool", type=Path, help="pool YAML (default: the demo pool)")
    args = parser.parse_args()
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray
    from ray import serve

    from service.app import build, check_store
    from service.pool import PoolLoadError
    from service.store import StoreError

    try:
        check_store(settings)  # before Ray starts: a bad store fails in a second
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print("pickserve: starting Ray and loading the pool (the demo pool is built on first run)")
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    try:
        serve.run(build(settings), name="pickserve", route_prefix="/")
    except (PoolLoadError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
