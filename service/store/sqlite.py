"""The embedded store: one SQLite file on local disk (Python's standard library).

No server to install. Every replica of the app on this machine opens the same file; each
operation is one `BEGIN IMMEDIATE` transaction, so writers from any process are serialised
and a committed label survives a crash (WAL, synchronous=FULL). Use Redis when replicas run
on more than one node.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from picker import PickerState
from service.store.base import (
    ITEM_RETENTION_S,
    RECENT_SWAPS,
    CommitOutcome,
    QueuedItem,
    StoredSelection,
    StoreError,
    check_pool,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS losses (model INTEGER PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, payload TEXT NOT NULL,
    created REAL NOT NULL, available REAL NOT NULL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_queue ON items (status, available);
CREATE TABLE IF NOT EXISTS swaps (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""
META_INTS = ("step", "queries", "labels", "round", "served", "version")


class SQLiteStore:
    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot open the embedded store {path}: {error}") from error
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                raise StoreError(f"embedded store {self.path}: {error}") from error

    @staticmethod
    def _meta(db: sqlite3.Connection) -> dict[str, str]:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())

    @staticmethod
    def _set_meta(db: sqlite3.Connection, **values: object) -> None:
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(key, json.dumps(value)) for key, value in values.items()],
        )

    @staticmethod
    def _picker_state(db: sqlite3.Connection, meta: Mapping[str, str]) -> PickerState:
        losses = [v for (v,) in db.execute("SELECT value FROM losses ORDER BY model")]
        return PickerState(
            losses=tuple(losses),
            step=int(meta["step"]),
            queries=int(meta["queries"]),
            labels=int(meta["labels"]),
            round=int(meta["round"]),
            budget=json.loads(meta["budget"]),
        )

    def initialise(self, model_names: Sequence[str], served: int, budget: int | None) -> None:
        with self._transaction() as db:
            meta = self._meta(db)
            if "models" in meta:
                check_pool(json.loads(meta["models"]), model_names, f"embedded store {self.path}")
                return
            counts = dict.fromkeys(("step", "queries", "labels", "round", "version"), 0)
            self._set_meta(db, models=list(model_names), budget=budget, served=served, **counts)
            db.executemany(
                "INSERT INTO losses (model, value) VALUES (?, 0.0)",
                [(i,) for i in range(len(model_names))],
            )

    def selection(self) -> StoredSelection:
        with self._transaction() as db:
            meta = self._meta(db)
            if "models" not in meta:
                raise StoreError(f"embedded store {self.path} is not initialised")
            recent = db.execute(
                "SELECT record FROM swaps ORDER BY seq DESC LIMIT ?", (RECENT_SWAPS,)
            ).fetchall()
            swaps = [json.loads(r) for (r,) in reversed(recent)]
            return StoredSelection(
                picker=self._picker_state(db, meta),
                served=int(meta["served"]),
                version=int(meta["version"]),
                model_names=json.loads(meta["models"]),
                swaps=swaps,
            )

    def advance(self, n_items: int) -> PickerState:
        with self._transaction() as db:
            meta = self._meta(db)
            before = self._picker_state(db, meta)
            self._set_meta(db, step=before.step + n_items)
            return before

    def enqueue(self, round_number: int, items: Sequence[QueuedItem], budget: int | None) -> int:
        with self._transaction() as db:
            meta = self._meta(db)
            if int(meta["round"]) != round_number:
                return 0
            queries = int(meta["queries"])
            room = len(items) if budget is None else max(0, budget - queries)
            accepted = list(items)[:room]
            db.executemany(
                "INSERT OR IGNORE INTO items (id, round, payload, created, available, status) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                [(i.item_id, i.round, json.dumps(i.payload()), i.created_at, i.created_at)
                 for i in accepted],
            )  # fmt: skip
            self._set_meta(db, queries=queries + len(accepted))
            return len(accepted)

    def lease(self, limit: int, now: float, lease_s: float, ttl_s: float) -> list[QueuedItem]:
        with self._transaction() as db:
            db.execute(
                "UPDATE items SET status = 'expired' WHERE status = 'pending' AND created < ?",
                (now - ttl_s,),
            )
            db.execute("DELETE FROM items WHERE created < ?", (now - ITEM_RETENTION_S,))
            rows = db.execute(
                "SELECT id, payload FROM items WHERE status = 'pending' AND available <= ? "
                "ORDER BY available, created LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE items SET available = ? WHERE id = ?", [(now + lease_s, r[0]) for r in rows]
            )
        return [_item(item_id, payload, "pending", now + lease_s) for item_id, payload in rows]

    def item(self, item_id: str) -> QueuedItem | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT payload, status, available FROM items WHERE id = ?", (item_id,)
            ).fetchone()
        return None if row is None else _item(item_id, row[0], row[1], row[2])

    def commit_label(
        self, item_id: str, round_number: int, increments: Sequence[float], now: float, ttl_s: float
    ) -> CommitOutcome:
        with self._transaction() as db:
            row = db.execute(
                "SELECT round, created, status FROM items WHERE id = ?", (item_id,)
            ).fetchone()
            if row is None or row[2] == "expired":
                return "unknown"
            if row[2] == "labeled":
                return "duplicate"
            meta = self._meta(db)
            if row[0] != round_number or int(meta["round"]) != round_number or row[1] < now - ttl_s:
                return "unknown"
            db.executemany(
                "UPDATE losses SET value = value + ? WHERE model = ?",
                [(inc, i) for i, inc in enumerate(increments) if inc != 0.0],
            )
            self._set_meta(db, labels=int(meta["labels"]) + 1)
            db.execute("UPDATE items SET status = 'labeled' WHERE id = ?", (item_id,))
            return "accepted"

    def swap(self, expected_version: int, to_model: int, record: Mapping[str, Any]) -> bool:
        with self._transaction() as db:
            if int(self._meta(db)["version"]) != expected_version:
                return False
            self._set_meta(db, served=to_model, version=expected_version + 1)
            db.execute("INSERT INTO swaps (record) VALUES (?)", (json.dumps(dict(record)),))
            return True

    def start_round(self, budget: int | None) -> int:
        with self._transaction() as db:
            new_round = int(self._meta(db)["round"]) + 1
            self._set_meta(db, round=new_round, budget=budget, step=0, queries=0, labels=0)
            db.execute("UPDATE losses SET value = 0.0")
            db.execute("UPDATE items SET status = 'expired' WHERE status = 'pending'")
            return new_round

    def set_budget(self, budget: int | None) -> None:
        with self._transaction() as db:
            self._set_meta(db, budget=budget)

    def queue_depth(self, now: float, ttl_s: float) -> int:
        with self._transaction() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM items WHERE status = 'pending' AND created >= ?",
                (now - ttl_s,),
            ).fetchone()
        return int(count)

    def add_counters(self, deltas: Mapping[str, float]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                list(deltas.items()),
            )

    def counters(self) -> dict[str, float]:
        with self._transaction() as db:
            return {name: float(v) for name, v in db.execute("SELECT name, value FROM counters")}

    def ping(self) -> None:
        with self._transaction() as db:
            db.execute("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _item(item_id: str, payload: str, status: str, lease_expires_at: float) -> QueuedItem:
    data = json.loads(payload)
    return QueuedItem(item_id=item_id, status=status, lease_expires_at=lease_expires_at, **data)
