"""The embedded backend: one SQLite file on local disk (Python's standard library).

No server to install. Every replica on this machine opens the same file. A transaction is
one `BEGIN IMMEDIATE` ... `COMMIT` (WAL, synchronous=FULL): writers from any process are
serialised and a committed write survives a crash. Reads take no write lock (WAL readers
see the last commit). Every index a primitive needs exists, so each call costs
log(size) + its own size. The file cannot be shared across machines: use Redis there.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from service.state.store.base import (
    JSON,
    Committed,
    Doc,
    Retention,
    StoreError,
    Txn,
    conflicting_key,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    key TEXT PRIMARY KEY, version INTEGER NOT NULL, value TEXT NOT NULL, expire_at REAL);
CREATE INDEX IF NOT EXISTS docs_expiry ON docs (expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS ops (op TEXT PRIMARY KEY, result TEXT NOT NULL, expire_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ops_expiry ON ops (expire_at);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (key, name));
CREATE TABLE IF NOT EXISTS queue (
    name TEXT NOT NULL, member TEXT NOT NULL, score REAL NOT NULL, PRIMARY KEY (name, member));
CREATE INDEX IF NOT EXISTS queue_order ON queue (name, score, member);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_key ON logs (key, seq);
"""


class SQLiteBackend:
    def __init__(
        self,
        path: Path,
        retention: Retention | None = None,
        busy_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.retention, self._clock = path, retention or Retention(), clock
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._lock:
                self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot open the embedded store {path}: {error}") from error

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction; on any failure (COMMIT included) the connection is rolled back,
        so it is never left inside a transaction."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                finally:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
            except sqlite3.Error as error:
                # SQLite either commits or not; a failure here means nothing was written.
                raise StoreError(f"embedded store {self.path}: {error}") from error

    def read(self, keys: Sequence[str]) -> dict[str, Doc]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT key, version, value FROM docs WHERE key IN ({marks}) "
                "AND (expire_at IS NULL OR expire_at > ?)",
                [*keys, self._clock()],
            ).fetchall()
        return {key: Doc(version, json.loads(value)) for key, version, value in rows}

    def commit(self, txn: Txn) -> Committed:
        now = self._clock()
        with self._transaction(write=True) as db:
            row = db.execute(
                "SELECT result FROM ops WHERE op = ? AND expire_at > ?", (txn.op, now)
            ).fetchone()
            if row is not None:
                return Committed("replayed", json.loads(row[0]))
            versions = {}
            for key in txn.expect:
                found = db.execute(
                    "SELECT version FROM docs WHERE key = ? "
                    "AND (expire_at IS NULL OR expire_at > ?)",
                    (key, now),
                ).fetchone()
                versions[key] = 0 if found is None else found[0]
            if conflicting_key(txn, versions) is not None:
                return Committed("conflict")
            self._apply(db, txn, now)
            db.execute(
                "INSERT OR REPLACE INTO ops (op, result, expire_at) VALUES (?, ?, ?)",
                (txn.op, json.dumps(txn.result), now + self.retention.op_s),
            )
        return Committed("applied", txn.result)

    def _apply(self, db: sqlite3.Connection, txn: Txn, now: float) -> None:
        self._apply_docs(db, txn, now)
        self._apply_counters_and_queues(db, txn)
        self._apply_logs(db, txn)

    @staticmethod
    def _apply_docs(db: sqlite3.Connection, txn: Txn, now: float) -> None:
        for key, put in txn.put.items():
            if put.value is None:
                db.execute("DELETE FROM docs WHERE key = ?", (key,))
                continue
            db.execute(
                "INSERT INTO docs (key, version, value, expire_at) VALUES (?, 1, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "expire_at = excluded.expire_at, version = CASE WHEN docs.expire_at IS NOT NULL "
                "AND docs.expire_at <= ? THEN 1 ELSE docs.version + 1 END",
                (key, json.dumps(put.value), put.expire_at, now),
            )

    @staticmethod
    def _apply_counters_and_queues(db: sqlite3.Connection, txn: Txn) -> None:
        db.executemany(
            "INSERT INTO counters (key, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (key, name) DO UPDATE SET value = value + excluded.value",
            [
                (key, name, delta)
                for key, deltas in txn.add.items()
                for name, delta in deltas.items()
            ],
        )
        db.executemany(
            "INSERT OR REPLACE INTO queue (name, member, score) VALUES (?, ?, ?)",
            [
                (queue, m, score)
                for queue, members in txn.push.items()
                for m, score in members.items()
            ],
        )
        db.executemany(
            "DELETE FROM queue WHERE name = ? AND member = ?",
            [(queue, m) for queue, members in txn.pull.items() for m in members],
        )

    def _apply_logs(self, db: sqlite3.Connection, txn: Txn) -> None:
        for name in txn.drop:
            db.execute("DELETE FROM queue WHERE name = ?", (name,))
            db.execute("DELETE FROM logs WHERE key = ?", (name,))
        for key, records in txn.append.items():
            db.executemany(
                "INSERT INTO logs (key, record) VALUES (?, ?)",
                [(key, json.dumps(r)) for r in records],
            )
            db.execute(
                "DELETE FROM logs WHERE key = ? AND seq <= (SELECT seq FROM logs WHERE key = ? "
                "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (key, key, self.retention.cap(key)),
            )

    def take(
        self, queue: str, lowest: float, highest: float, limit: int, new_score: float
    ) -> list[str]:
        with self._transaction(write=True) as db:
            members = [
                m
                for (m,) in db.execute(
                    "SELECT member FROM queue WHERE name = ? AND score >= ? AND score <= ? "
                    "ORDER BY score, member LIMIT ?",
                    (queue, lowest, highest, limit),
                )
            ]
            db.executemany(
                "UPDATE queue SET score = ? WHERE name = ? AND member = ?",
                [(new_score, queue, m) for m in members],
            )
        return members

    def claim(
        self, queue: str, members: Sequence[str], lowest: float, highest: float, new_score: float
    ) -> list[str]:
        claimed = []
        with self._transaction(write=True) as db:
            for member in dict.fromkeys(members):
                changed = db.execute(
                    "UPDATE queue SET score = ? WHERE name = ? AND member = ? "
                    "AND score >= ? AND score <= ?",
                    (new_score, queue, member, lowest, highest),
                ).rowcount
                if changed:
                    claimed.append(member)
        return claimed

    def count(self, queue: str, lowest: float, highest: float = math.inf) -> int:
        with self._transaction(write=False) as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM queue WHERE name = ? AND score >= ? AND score <= ?",
                (queue, lowest, highest),
            ).fetchone()
        return int(n)

    def members(self, queue: str, limit: int) -> list[str]:
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT member FROM queue WHERE name = ? ORDER BY score, member LIMIT ?",
                (queue, limit),
            ).fetchall()
        return [m for (m,) in rows]

    def trim(self, queue: str, below: float, limit: int) -> int:
        with self._transaction(write=True) as db:
            cursor = db.execute(
                "DELETE FROM queue WHERE rowid IN (SELECT rowid FROM queue "
                "WHERE name = ? AND score < ? ORDER BY score LIMIT ?)",
                (queue, below, limit),
            )
            return cursor.rowcount

    def counters(self, key: str) -> dict[str, float]:
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT name, value FROM counters WHERE key = ?", (key,))
            return {name: float(value) for name, value in rows}

    def log(self, key: str, last: int) -> list[JSON]:
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT record FROM logs WHERE key = ? ORDER BY seq DESC LIMIT ?", (key, last)
            ).fetchall()
        return [json.loads(r) for (r,) in reversed(rows)]

    def purge(self, limit: int) -> int:
        now = self._clock()
        with self._transaction(write=True) as db:
            docs = db.execute(
                "DELETE FROM docs WHERE rowid IN (SELECT rowid FROM docs "
                "WHERE expire_at IS NOT NULL AND expire_at <= ? LIMIT ?)",
                (now, limit),
            ).rowcount
            ops = db.execute(
                "DELETE FROM ops WHERE rowid IN "
                "(SELECT rowid FROM ops WHERE expire_at <= ? LIMIT ?)",
                (now, limit),
            ).rowcount
        return int(docs + ops)

    def ping(self) -> None:
        with self._transaction(write=False) as db:
            db.execute("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()
