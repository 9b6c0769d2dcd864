"""Lease cost against a backlog of expired items, on every store.

For each store (memory, the embedded SQLite file, a redis-server started here with
append-only on) and each backlog (1,000 and 200,000 expired items queued in the round),
queue 2,000 live items, then time 50 calls of `LiveState.lease(10, ...)` (the code the
`/v1/queries` endpoint runs) and 20 calls of `LiveState.maintain` (the bounded upkeep
that trims expired entries, 500 at most per call). Prints medians and the ratio of the
200k backlog to the 1k backlog, measured in the same run.

    python benchmarks/lease_backlog.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.state.live import LiveState, new_op
from service.state.rules import Batch
from service.state.store.base import Backend
from service.state.store.memory import MemoryBackend
from service.state.store.redis_store import RedisBackend
from service.state.store.sqlite import SQLiteBackend
from tests.redis_server import RedisServer

TTL_S = 3600.0
CHUNK = 5000


def queue(live: LiveState, n: int, created: float, prefix: str) -> None:
    """Queue n items created at `created` (gamma 1e6 and disagreeing models: all queued)."""
    for start in range(0, n, CHUNK):
        ids = [f"{prefix}{i}" for i in range(start, min(start + CHUNK, n))]
        batch = Batch(ids, np.tile([0, 1, 1], (len(ids), 1)), np.zeros((len(ids), 8)))
        live.observe(new_op("bench"), batch, 1e6, np.random.default_rng(start), created)


def timed_ms(call: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(backend: Backend, expired: int) -> tuple[float, float]:
    live = LiveState(backend)
    now = time.time()
    live.initialise(["a", "b", "c"], served=0, budget=None, now=now)
    queue(live, expired, now - 2 * TTL_S, "old")
    queue(live, 2000, now, "live")
    clock = iter(np.arange(50) * 0.001 + now + 1)
    lease = timed_ms(lambda: live.lease(10, float(next(clock)), 60.0, TTL_S), 50)
    upkeep = timed_ms(lambda: live.maintain(now + 1, TTL_S), 20)
    return lease, upkeep


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="pickserve-bench-"))
    server = RedisServer(folder / "redis")
    server.start()
    makers: dict[str, Callable[[], Backend]] = {
        "memory": MemoryBackend,
        "embedded (SQLite)": lambda: SQLiteBackend(folder / f"{uuid.uuid4().hex}.sqlite3"),
        "redis": lambda: RedisBackend.from_url(server.url, uuid.uuid4().hex, timeout_s=30),
    }
    print("| store | lease, 1k expired | lease, 200k expired | ratio | upkeep call, 1k | "
          "upkeep call, 200k |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    try:
        for name, make in makers.items():
            small_lease, small_upkeep = measure(make(), 1_000)
            large_lease, large_upkeep = measure(make(), 200_000)
            print(f"| {name} | {small_lease:.2f} ms | {large_lease:.2f} ms | "
                  f"{large_lease / small_lease:.2f} | {small_upkeep:.2f} ms | "
                  f"{large_upkeep:.2f} ms |", flush=True)  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
