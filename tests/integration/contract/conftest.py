"""Every contract test runs on the three backends: memory, SQLite (a file) and a real
redis-server started for the session. `connect()` opens another connection to the same
state (for the memory backend, the same object: it is one process's state)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from service.state.store.base import Backend, Retention
from service.state.store.memory import MemoryBackend
from service.state.store.redis_store import RedisBackend
from service.state.store.sqlite import SQLiteBackend
from tests.redis_server import RedisServer

KINDS = ["memory", "embedded", "redis"]
Connect = Callable[..., Backend]
T = TypeVar("T")


def concurrently(call: Callable[[int], T], n: int) -> list[T]:
    """call(0) ... call(n - 1), each in its own thread, all at once; their answers."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def connector(kind: str, folder: Path, redis_url: str) -> Connect:
    namespace, opened = uuid.uuid4().hex, []
    shared: dict[str, MemoryBackend] = {}

    def connect(retention: Retention | None = None) -> Backend:
        backend: Backend
        if kind == "memory":
            backend = shared.setdefault("memory", MemoryBackend(retention))
        elif kind == "embedded":
            backend = SQLiteBackend(folder / "state.sqlite3", retention)
        else:
            backend = RedisBackend.from_url(redis_url, namespace, retention)
        opened.append(backend)
        return backend

    connect.opened = opened  # type: ignore[attr-defined]
    return connect


@pytest.fixture(params=KINDS)
def connect(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[Connect]:
    made = connector(request.param, tmp_path, redis_server.url)
    made.kind = request.param  # type: ignore[attr-defined]
    yield made
    for backend in made.opened:  # type: ignore[attr-defined]
        backend.close()


@pytest.fixture
def backend(connect: Connect) -> Backend:
    return connect()
