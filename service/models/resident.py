"""Models placed, not copied: at most `limit` candidates' models in a replica's memory at
once (`max_resident_models`), the others loaded when a call needs them and the least
recently used one evicted to make room. The served model is pinned, so it stays warm
where it serves. Every load is counted and timed.

Why not Ray Serve's model multiplexing (`@serve.multiplexed`)? It routes one model per
request to the replica that holds it; a shadow batch needs the active set's K models on
the same rows in one call, and a label check the rest of the round, so multiplexing would
turn one call into K requests carrying the same rows. The bound it gives (models per
replica, LRU) is the one kept here, inside the replica that runs the batch.

A call works on a copy of the candidate that holds its model (`resident`), so an
eviction meanwhile drops only the replica's own reference: the running call finishes,
and the memory is freed when it does.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from service.models.loaders import (
    Candidate,
    LoadedPool,
    check_place,
    load_candidate,
    load_pool,
    use_search_path,
)
from service.models.pool_file import PoolSpec, read_pool_spec


def unloaded(name: str, pool: PoolSpec) -> Candidate:
    """A candidate whose model is not in memory (yet): loaded on first use."""
    spec = next(c for c in pool.candidates if c.name == name)
    return Candidate(spec.name, None, len(pool.class_names), spec.kind)


def file_loader(pool_file: Path) -> Callable[[str], Candidate]:
    """Loads candidate `name` as the pool file names it now (it may change at run time).
    The file is read again only when it changed: parsing a pool of 1,000 candidates takes
    longer than loading one of them."""
    read: dict[tuple[int, int], PoolSpec] = {}
    lock = threading.Lock()

    def current() -> PoolSpec:
        stat = pool_file.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        with lock:
            if key not in read:
                read.clear()
                read[key] = read_pool_spec(pool_file)
            return read[key]

    def load(name: str) -> Candidate:
        pool = current()
        use_search_path(pool_file, pool)
        spec = next((c for c in pool.candidates if c.name == name), None)
        if spec is None:
            raise LookupError(f"candidate {name!r} is no longer in {pool_file}")
        check_place(spec, pool_file, pool)
        return load_candidate(spec, pool_file, pool)

    return load


class Residency:
    """Which candidates' models are in memory: at most `limit`, least recently used out
    first, the pinned one never."""

    def __init__(
        self, limit: int, load: Callable[[str], Candidate],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:  # fmt: skip
        if limit < 1:
            raise ValueError(f"max_resident_models must be at least 1, got {limit}")
        self.limit, self.load, self.clock = limit, load, clock
        self.lock = threading.Lock()
        self.order: OrderedDict[str, Candidate] = OrderedDict()  # resident, oldest use first
        self.loading: dict[str, threading.Lock] = {}
        self.pinned: str | None = None
        self.loads, self.load_seconds = 0, 0.0

    @property
    def resident_count(self) -> int:
        with self.lock:
            return len(self.order)

    def adopt(self, candidates: Sequence[Candidate]) -> None:
        """Count the candidates already loaded as resident (in this order of use), and
        evict beyond the bound."""
        with self.lock:
            for candidate in candidates:
                if candidate.model is not None:
                    self.order[candidate.name] = candidate
                    self.order.move_to_end(candidate.name)
            self._evict()

    def pin(self, name: str) -> None:
        """The served model: never evicted while it is served."""
        self.pinned = name

    def resident(self, candidate: Candidate) -> Candidate:
        """`candidate` with its model in memory (loaded now if it was not), as a copy the
        caller may run however long an eviction takes."""
        with self.lock:
            held = self.order.get(candidate.name)
            if held is not None and held.model is not None:
                self.order.move_to_end(candidate.name)
                return replace(held)
            gate = self.loading.setdefault(candidate.name, threading.Lock())
        with gate:  # one load of a model at a time; the others wait for it
            with self.lock:
                held = self.order.get(candidate.name)
                if held is not None and held.model is not None:
                    return replace(held)
            started = self.clock()
            fresh = self.load(candidate.name)
            spent = self.clock() - started
            with self.lock:
                candidate.model, candidate.columns = fresh.model, fresh.columns
                self.order[candidate.name] = candidate
                self.loads, self.load_seconds = self.loads + 1, self.load_seconds + spent
                self._evict()
                return replace(candidate)

    def forget(self, names: Sequence[str]) -> None:
        """Candidates that left the pool."""
        with self.lock:
            for name in names:
                evicted = self.order.pop(name, None)
                if evicted is not None:
                    evicted.model = None

    def _evict(self) -> None:
        newest = next(reversed(self.order), None)
        while len(self.order) > self.limit:
            victim = next((n for n in self.order if n not in (self.pinned, newest)), None)
            if victim is None:
                return
            self.order.pop(victim).model = None


def open_pool(path: Path, limit: int | None) -> tuple[LoadedPool, Residency | None]:
    """The pool, every model loaded (no `limit`: today's way), or with at most `limit`
    resident: every candidate's place checked now, its model loaded on first use; the
    initial (served) model is loaded at once and pinned."""
    if limit is None:
        return load_pool(path), None
    pool = read_pool_spec(path)
    use_search_path(path, pool)
    for spec in pool.candidates:
        check_place(spec, path, pool)
    loaded = LoadedPool(pool, [unloaded(c.name, pool) for c in pool.candidates])
    residency = Residency(limit, file_loader(path))
    served = loaded.candidates[loaded.initial_index]
    residency.pin(served.name)
    residency.resident(served)
    return loaded, residency


class ResidencyMetrics:
    """What a replica holds, exported with Ray Serve's metrics (on Ray's metrics port,
    with Ray's `ray_` prefix, tagged with the replica: the figure differs per replica,
    while pickserve's /metrics reads the same whichever replica answers): models
    resident now, loads and the seconds they took."""

    def __init__(self, residency: Residency) -> None:
        from ray.serve import metrics

        self.residency = residency
        self.resident = metrics.Gauge(
            "pickserve_resident_models", "Candidates' models in this replica's memory now"
        )
        self.loads = metrics.Counter(
            "pickserve_model_loads", "Models loaded on demand (not resident when a call came)"
        )
        self.load_seconds = metrics.Counter(
            "pickserve_model_load_seconds", "Seconds spent loading models on demand"
        )
        self._seen = (0, 0.0)

    def record(self) -> tuple[int, float]:
        """Export what the replica holds now; returns the loads, and their seconds, since
        the last call."""
        loads, seconds = self.residency.loads, self.residency.load_seconds
        new = (loads - self._seen[0], seconds - self._seen[1])
        self.resident.set(self.residency.resident_count)
        if new[0] > 0:
            self.loads.inc(new[0])
            self.load_seconds.inc(new[1])
        self._seen = (loads, seconds)
        return new
