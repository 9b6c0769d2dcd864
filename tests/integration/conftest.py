"""Real Ray Serve (started once per session), real HTTP, real Redis."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray import serve

from service.app import build, demo_folder
from service.config.knobs import RuntimeKnobs
from service.config.settings import Settings
from service.models.demo_data import DemoData, ensure_demo
from tests.redis_server import RedisServer, free_port

APP = "pickserve"


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="session")
def demo(state_dir: Path) -> DemoData:
    return ensure_demo(demo_folder(Settings(state_dir=state_dir)))


@pytest.fixture(scope="session")
def serve_port() -> Iterator[int]:
    # Ray workers inherit this, so pools can name test-only factories (tests.fixtures...).
    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    port = free_port()
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2,
             _metrics_export_port=RAY_METRICS_PORT)  # fmt: skip
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


# Ray's own metrics (those made with ray.serve.metrics, with Ray's `ray_` prefix): on a
# port chosen once per test process, so a test can read them.
RAY_METRICS_PORT = free_port()


def ray_metrics() -> str:
    return httpx.get(f"http://127.0.0.1:{RAY_METRICS_PORT}/metrics", timeout=10).text


Deploy = Callable[..., httpx.Client]


def demo_models_in(demo: DemoData, folder: Path) -> Path:
    """The demo pool's model files in `folder/models` (hard links, or copies across file
    systems): a pool's model files must be below its own folder."""
    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    for source in (demo.pool_file.parent / "models").iterdir():
        target = models / source.name
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    return models


def own_copy_of_demo_pool(demo: DemoData, folder: Path) -> Path:
    """The demo pool file and its models in a folder of the test's own: a test that adds
    or removes candidates at run time changes this copy, not the shared pool."""
    demo_models_in(demo, folder)
    pool = folder / "pool.yaml"
    pool.write_text(demo.pool_file.read_text())
    return pool


class Deployer:
    """Deploys the app with a fresh state namespace and hands out HTTP clients."""

    def __init__(self, port: int, state_dir: Path, redis_url: str) -> None:
        self.port, self.state_dir, self.redis_url = port, state_dir, redis_url
        self.clients: list[httpx.Client] = []

    def __call__(
        self,
        store: str = "embedded",
        namespace: str | None = None,
        settings: dict[str, Any] | None = None,
        **knobs: Any,
    ) -> httpx.Client:
        """Deploy with these knobs (user_config); `settings` are further start-up settings.
        Shadow pacing is off unless a test sets `queue_target`: tests count shadow work. Drift
        monitoring is off unless a test sets `drift_action`: the tests' load repeats a few rows,
        which is, rightly, a shifted stream, and a new round would wipe the labels they count."""
        replicas = knobs.pop("router_replicas", 1)
        full = Settings(
            state_dir=self.state_dir, store=store, redis_url=knobs.pop("redis_url", self.redis_url),
            pool=knobs.pop("pool", None),
            store_namespace=namespace or uuid.uuid4().hex, router_replicas=replicas,
            max_batch_size=64, knobs=RuntimeKnobs(
                **{"seed": 7, "queue_target": None, "drift_action": "off", **knobs}
            ),
            # no MLflow unless the test says: MLflow's client sets MLFLOW_TRACKING_URI in the
            # process once a test used it, and a deployment would then write runs to a server
            # that module stopped (failing passes, counted: /metrics never settled)
            **{"mlflow_tracking_uri": None, **(settings or {})},
        )  # fmt: skip
        self.namespace = full.store_namespace
        serve.run(build(full), name=APP, route_prefix="/")
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        serve.delete(APP)


@pytest.fixture
def deploy(
    serve_port: int, state_dir: Path, demo: DemoData, redis_server: RedisServer
) -> Iterator[Deploy]:
    deployer = Deployer(serve_port, state_dir, redis_server.url)
    yield deployer
    deployer.close()


@pytest.fixture(scope="module")
def shared_client(
    serve_port: int, state_dir: Path, demo: DemoData, redis_server: RedisServer
) -> Iterator[httpx.Client]:
    """One deployment for a whole module (shadow every item, gamma 50: queries galore)."""
    deployer = Deployer(serve_port, state_dir, redis_server.url)
    yield deployer(shadow_rate=1.0, gamma=50.0)
    deployer.close()


def settled_metrics(client: httpx.Client, timeout_s: float = 60.0) -> str:
    """/metrics once two reads 1.5 s apart (three counter flushes) agree: the work the
    traffic left behind (shadow batches in flight) is counted."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        text = client.get("/metrics").text
        if text == last:
            return text
        assert time.monotonic() < deadline, "/metrics did not settle"
        last = text
        time.sleep(1.5)
