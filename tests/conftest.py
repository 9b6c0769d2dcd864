import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


# The longest modules first (measured with --durations), so that with `pytest -n 2` (make
# test) no worker is left alone at the end with a long one; xdist keeps a module on one
# worker (--dist loadfile), with its module-scoped deployment.
LONGEST_FIRST = (
    "integration/test_fuzz.py", "integration/test_labelstudio.py",
    "integration/test_readme_walkthrough.py", "integration/test_mlflow.py",
    "integration/test_drift.py",
    "integration/test_pool_errors.py", "integration/test_two_nodes.py",
    "integration/test_state_over_http.py", "integration/test_own_pool.py",
    "integration/test_faults.py", "integration/test_large_pool_mode.py",
    "integration/test_loop.py",
    "integration/test_failover_canary.py", "integration/test_adversarial.py",
    "unit/test_pool_frontier.py", "integration/test_serving_path.py",
    "integration/test_candidates_runtime.py", "unit/test_consistency.py",
)  # fmt: skip


def rank(item: pytest.Item) -> int:
    path = item.path.as_posix()
    for index, suffix in enumerate(LONGEST_FIRST):
        if path.endswith(suffix):
            return index
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=rank)  # stable: within a module, and among the rest, the usual order
