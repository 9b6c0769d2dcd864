"""Faults under the contract: a stalled server with writes in flight, kill -9, and a Redis
that could lose acknowledged writes. Nothing acknowledged is lost, nothing counted twice.

The stall is SIGSTOP for Redis and another process holding SQLite's write lock for the
embedded store; the memory backend lives inside the caller's process, so it has no server
to stall or kill."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from picker import loss_increments
from service.config.settings import Settings
from service.state.live import LiveState, new_op
from service.state.rules import Batch
from service.state.store.base import Backend, StoreError, Txn
from service.state.store.factory import open_backend
from service.state.store.redis_store import RedisBackend
from service.state.store.sqlite import SQLiteBackend
from tests.redis_server import RedisServer

MODELS = ["a", "b", "c"]
TTL = 3600.0


def until_definite(call: Callable[[], object], deadline_s: float = 30.0) -> object:
    """What a careful client does: repeat the same keyed write until it gets an answer."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except StoreError:
            assert time.monotonic() < deadline, "the store never came back"
            time.sleep(0.1)


class Stall:
    """Stalls the store for `seconds` from a background thread."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder = kind, folder
        if kind == "redis":
            self.server = RedisServer(folder / "redis")
            self.server.start()

    def connect(self) -> Backend:
        if self.kind == "redis":
            return RedisBackend.from_url(self.server.url, "stall", timeout_s=0.5)
        return SQLiteBackend(self.folder / "stall.sqlite3", busy_timeout_s=0.5)

    def stall(self, seconds: float) -> threading.Thread:
        def run() -> None:
            if self.kind == "redis":
                self.server.pause()
                time.sleep(seconds)
                self.server.resume()
                return
            holder = sqlite3.connect(self.folder / "stall.sqlite3", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # a writer that stalls holding the lock
            time.sleep(seconds)
            holder.execute("ROLLBACK")
            holder.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def close(self) -> None:
        if self.kind == "redis":
            self.server.stop()


@pytest.mark.parametrize("kind", ["embedded", "redis"])
def test_a_stalled_store_with_writes_in_flight_counts_everything_once(
    kind: str, tmp_path: Path
) -> None:
    stall = Stall(kind, tmp_path)
    try:
        setup = LiveState(stall.connect())
        setup.initialise(MODELS, served=0, budget=None, now=time.time())
        rng = np.random.default_rng(5)
        ids = [f"i{n}" for n in range(40)]
        preds = rng.integers(0, 3, (40, 3))
        setup.observe(new_op("t"), Batch(ids, preds, np.zeros((40, 1))), 1e6, rng, time.time())
        items = {i: setup.item(i) for i in ids}
        ids = [i for i in ids if items[i] is not None]  # models that agree are never queued
        labels = {i: int(rng.integers(0, 3)) for i in ids}
        outcomes: list[str] = []

        def labeler(share: list[str]) -> None:
            live = LiveState(stall.connect())
            for item_id in share:
                op = f"label:client-key:{item_id}"
                result = until_definite(
                    lambda: live.label(op, item_id, labels[item_id], time.time(), TTL)  # noqa: B023
                )
                outcomes.append(result.outcome)  # type: ignore[attr-defined]
                time.sleep(0.03)

        def observer() -> None:
            live = LiveState(stall.connect())
            for n in range(30):
                batch = Batch([f"o{n}-{k}" for k in range(3)], np.zeros((3, 3), dtype=np.int64),
                              np.zeros((3, 1)))  # fmt: skip
                op, coins = new_op("t"), np.random.default_rng(n)
                until_definite(lambda: live.observe(op, batch, 1.0, coins, time.time()))  # noqa: B023
                time.sleep(0.03)

        def flusher() -> None:
            live = LiveState(stall.connect())
            for _ in range(30):
                op = new_op("counters")
                until_definite(lambda: live.add_counters(op, {"requests": 1.0}))  # noqa: B023
                time.sleep(0.03)

        threads = [threading.Thread(target=labeler, args=(ids[::2],)),
                   threading.Thread(target=labeler, args=(ids[1::2],)),
                   threading.Thread(target=observer), threading.Thread(target=flusher)]  # fmt: skip
        for thread in threads:
            thread.start()
        time.sleep(0.2)
        stall.stall(2.5).join()
        for thread in threads:
            thread.join()
        picker = setup.selection().picker
        assert Counter(outcomes) == {"accepted": len(ids)}  # no false duplicate
        expected = sum(loss_increments(items[i].predictions, labels[i], items[i].q) for i in ids)  # type: ignore[union-attr]
        np.testing.assert_allclose(picker.losses, expected, rtol=1e-12)
        assert (picker.step, picker.labels) == (40 + 90, len(ids))
        # metric counters, including those moved inside the state's own transactions
        assert setup.counters() == {
            "requests": 30.0,
            "labels|accepted": float(len(ids)),
            "queries": float(len(ids)),
        }
    finally:
        stall.close()


def test_redis_kill_9_and_restart_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        live = LiveState(RedisBackend.from_url(server.url, "kill"))
        live.initialise(MODELS, served=0, budget=None, now=time.time())
        live.observe(new_op("t"), Batch(["i1", "i2"], np.array([[0, 1, 1]] * 2), np.zeros((2, 1))),
                     1e6, np.random.default_rng(0), time.time())  # fmt: skip
        assert live.label("l1", "i1", 1, time.time(), TTL).outcome == "accepted"
        assert live.reconcile(0.0, None, time.time())
        before = live.selection()
        server.stop(kill=True)
        with pytest.raises(StoreError):
            live.selection()
        server.start()
        after = live.selection()  # the same client reconnects by itself
        assert (after.picker, after.served, after.swaps) == (
            before.picker,
            before.served,
            before.swaps,
        )
        assert [i.item_id for i in live.lease(5, time.time(), 60.0, TTL)] == ["i2"]
        assert live.label("l1", "i1", 1, time.time(), TTL).outcome == "accepted"  # the truth
        assert live.label("l2", "i1", 1, time.time(), TTL).outcome == "duplicate"
    finally:
        server.stop()


WRITER = """
import sys, time
import numpy as np
from pathlib import Path
from service.state.live import LiveState
from service.state.rules import Batch
from service.state.store.sqlite import SQLiteBackend
live = LiveState(SQLiteBackend(Path(sys.argv[1])))
n = 0
while True:
    live.observe(f"t{n}", Batch([f"w{n}"], np.array([[0, 1, 1]]), np.zeros((1, 1))), 1e6,
                 np.random.default_rng(n), time.time())
    print(f"ack {n}", flush=True)
    n += 1
"""


def test_sqlite_writer_killed_9_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite3"
    LiveState(SQLiteBackend(path)).initialise(MODELS, served=0, budget=None, now=time.time())
    root = str(Path(__file__).resolve().parents[3])
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                              text=True, cwd=root)  # fmt: skip
    assert writer.stdout is not None
    acked = 0
    for line in writer.stdout:
        acked = int(line.split()[1]) + 1
        if acked >= 50:
            break
    writer.kill()
    writer.wait()
    picker = LiveState(SQLiteBackend(path)).selection().picker
    assert picker.step >= acked and picker.queries == picker.step
    assert picker.step <= acked + 1  # at most the one write in flight when it died


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"appendonly": "no"}, "appendonly is off"),
     ({"maxmemory-policy": "allkeys-lru"}, "maxmemory-policy is allkeys-lru")],
)  # fmt: skip
def test_an_unsafe_redis_is_refused_unless_allowed(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    server = RedisServer(tmp_path / uuid.uuid4().hex, settings)
    server.start()
    try:
        with pytest.raises(StoreError, match=message) as refused:
            open_backend(Settings(store="redis", redis_url=server.url))
        assert "PICKSERVE_REDIS_ALLOW_UNSAFE" in str(refused.value)
        open_backend(Settings(store="redis", redis_url=server.url, redis_allow_unsafe=True)).close()
    finally:
        server.stop()


def test_a_failed_sqlite_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    """A deferred constraint makes COMMIT itself fail (SQLite then keeps the transaction
    open): the backend rolls back, reports a StoreError, and stays usable."""
    backend = SQLiteBackend(tmp_path / "commit.sqlite3")
    db = backend._db
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute(
        "CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(StoreError, match="FOREIGN KEY"), backend._transaction(write=True) as tx:
        tx.execute("INSERT INTO child VALUES (1)")
    assert not db.in_transaction
    assert backend.commit(Txn("after", add={"c": {"n": 1.0}})).status == "applied"
    assert backend.counters("c") == {"n": 1.0}
