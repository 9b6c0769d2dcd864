"""Every contract test runs on the three backends: memory, SQLite (a file) and a real
redis-server started for the session. `connect()` opens another connection to the same
state (for the memory backend, the same object: it is one process's state)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.store import Backend, Retention
from service.store.memory import MemoryBackend
from service.store.redis_store import RedisBackend
from service.store.sqlite import SQLiteBackend
from tests.redis_server import RedisServer

KINDS = ["memory", "embedded", "redis"]
Connect = Callable[..., Backend]


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
