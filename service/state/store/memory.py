"""The in-memory backend: the storage contract in plain Python, for unit tests of the logic
above it (no processes) and for one-replica throwaway runs. It keeps nothing on restart and
is not shared between processes."""

from __future__ import annotations

import bisect
import copy
import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from service.state.store.base import (
    JSON,
    Committed,
    Doc,
    Retention,
    Txn,
    conflicting_key,
)


class _Queue:
    """Members ordered by (score, member), with a score per member."""

    def __init__(self) -> None:
        self.order: list[tuple[float, str]] = []
        self.score: dict[str, float] = {}

    def put(self, member: str, score: float) -> None:
        self.remove(member)
        bisect.insort(self.order, (score, member))
        self.score[member] = score

    def remove(self, member: str) -> None:
        score = self.score.pop(member, None)
        if score is not None:
            self.order.pop(bisect.bisect_left(self.order, (score, member)))


class MemoryBackend:
    def __init__(
        self, retention: Retention | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.retention = retention or Retention()
        self._clock = clock
        self._lock = threading.Lock()
        self._docs: dict[str, tuple[int, dict[str, JSON], float | None]] = {}
        self._ops: dict[str, tuple[JSON, float]] = {}
        self._expiries: list[tuple[float, str]] = []  # heap of (expire_at, doc key or op)
        self._hashes: dict[str, dict[str, float]] = {}
        self._queues: dict[str, _Queue] = {}
        self._logs: dict[str, deque[JSON]] = {}
        self.closed = False

    def _live(self, key: str) -> tuple[int, dict[str, JSON], float | None] | None:
        entry = self._docs.get(key)
        if entry is None or (entry[2] is not None and entry[2] <= self._clock()):
            return None
        return entry

    def read(self, keys: Sequence[str]) -> dict[str, Doc]:
        with self._lock:
            found = {key: self._live(key) for key in keys}
            return {k: Doc(e[0], copy.deepcopy(e[1])) for k, e in found.items() if e is not None}

    def commit(self, txn: Txn) -> Committed:
        with self._lock:
            now = self._clock()
            recorded = self._ops.get(txn.op)
            if recorded is not None and recorded[1] > now:
                return Committed("replayed", copy.deepcopy(recorded[0]))
            versions = {}
            for key in txn.expect:
                entry = self._live(key)
                versions[key] = 0 if entry is None else entry[0]
            if conflicting_key(txn, versions) is not None:
                return Committed("conflict")
            self._apply(txn)
            expire_at = now + self.retention.op_s
            self._ops[txn.op] = (copy.deepcopy(txn.result), expire_at)
            heapq.heappush(self._expiries, (expire_at, "op:" + txn.op))
            return Committed("applied", copy.deepcopy(txn.result))

    def _apply(self, txn: Txn) -> None:
        for key, put in txn.put.items():
            entry = self._live(key)
            if put.value is None:
                self._docs.pop(key, None)
                continue
            version = 1 if entry is None else entry[0] + 1
            self._docs[key] = (version, copy.deepcopy(put.value), put.expire_at)
            if put.expire_at is not None:
                heapq.heappush(self._expiries, (put.expire_at, "doc:" + key))
        for key, deltas in txn.add.items():
            counters = self._hashes.setdefault(key, {})
            for name, delta in deltas.items():
                counters[name] = counters.get(name, 0.0) + delta
        for queue, members in txn.push.items():
            for member, score in members.items():
                self._queues.setdefault(queue, _Queue()).put(member, score)
        for queue, removed in txn.pull.items():
            for member in removed:
                self._queues.setdefault(queue, _Queue()).remove(member)
        for name in txn.drop:
            self._queues.pop(name, None)
            self._logs.pop(name, None)
        for key, records in txn.append.items():
            log = self._logs.setdefault(key, deque(maxlen=self.retention.cap(key)))
            log.extend(copy.deepcopy(list(records)))

    def take(
        self, queue: str, lowest: float, highest: float, limit: int, new_score: float
    ) -> list[str]:
        with self._lock:
            entries = self._queues.get(queue)
            if entries is None:
                return []
            start = bisect.bisect_left(entries.order, (lowest, ""))
            taken = []
            for score, member in entries.order[start : start + limit]:
                if score > highest:
                    break
                taken.append(member)
            for member in taken:
                entries.put(member, new_score)
            return taken

    def claim(
        self, queue: str, members: Sequence[str], lowest: float, highest: float, new_score: float
    ) -> list[str]:
        with self._lock:
            entries = self._queues.get(queue)
            if entries is None:
                return []
            claimed = []
            for member in dict.fromkeys(members):
                score = entries.score.get(member)
                if score is not None and lowest <= score <= highest:
                    entries.put(member, new_score)
                    claimed.append(member)
            return claimed

    def count(self, queue: str, lowest: float, highest: float = math.inf) -> int:
        with self._lock:
            entries = self._queues.get(queue)
            if entries is None or highest < lowest:
                return 0
            end = bisect.bisect_right(entries.order, (highest, "\U0010ffff"))
            return end - bisect.bisect_left(entries.order, (lowest, ""))

    def members(self, queue: str, limit: int) -> list[str]:
        with self._lock:
            entries = self._queues.get(queue)
            return [] if entries is None else [m for _, m in entries.order[:limit]]

    def trim(self, queue: str, below: float, limit: int) -> int:
        with self._lock:
            entries = self._queues.get(queue)
            if entries is None:
                return 0
            end = min(limit, bisect.bisect_left(entries.order, (below, "")))
            for _, member in entries.order[:end]:
                del entries.score[member]
            del entries.order[:end]
            return end

    def counters(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._hashes.get(key, {}))

    def log(self, key: str, last: int) -> list[JSON]:
        with self._lock:
            records = list(self._logs.get(key, ()))
            return copy.deepcopy(records[-last:] if last > 0 else [])

    def purge(self, limit: int) -> int:
        with self._lock:
            now, purged = self._clock(), 0
            while self._expiries and self._expiries[0][0] <= now and purged < limit:
                expire_at, tagged = heapq.heappop(self._expiries)
                kind, key = tagged.split(":", 1)
                table: dict[str, tuple[JSON, ...]] = self._ops if kind == "op" else self._docs  # type: ignore[assignment]
                entry = table.get(key)
                if entry is not None and entry[-1] == expire_at:  # not rewritten since
                    del table[key]
                    purged += 1
            return purged

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
