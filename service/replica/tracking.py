"""Every round an MLflow run, written from the store's journal (`rules.journal`).

A router replica records a point in the round's journal after every label batch (and its
tracking tick records one a crash may have left out); the journal is the outbox. One
replica at a time holds the writer's lease (`tracking:{experiment}:lease`, renewed on
every tick) and copies what MLflow does not have yet, in its own thread, so MLflow slow or
down never delays a predict or a label: the journal waits in the store and the run catches up.

Per round `n`, one run named `round-{n}` in the experiment (tags `pickserve.round` and
`pickserve.namespace`; a run of that round already there is the one written to, so a writer
that died after creating it never makes a second):
- parameters: the selector, γ, the budget, the candidates and, for registry candidates, the
  registered model version each resolved to;
- metrics, one point per journal point, at step = the round's label count and the time the
  point was recorded: `posterior.{candidate}`, `labels`, `queries`, `queue_depth`;
- `swaps.json`: the round's swaps and canary events (from, to, the label count that moved
  it), rewritten whole when one is added, with the tag `pickserve.swaps` (their number);
- `started_by.json` and the tag `pickserve.started_by` when drift (or a selector change)
  started the round, and on the round it closed, `ended_by.json`;
- when the round closes: the tag `pickserve.best` and the status FINISHED.

Exactly once: a per-round cursor in the store (`tracking:{experiment}:round:{n}`: the
run, the last step and the number of swaps written) advances, compare-and-set, after each
write. A writer that takes the lease over first reads the run's history in MLflow and
starts after its last step, so a write that landed before its writer died is not written
again. With
`champion_alias`, the alias of the served candidate's registered model is moved to its
version after every swap.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from service.models import registry
from service.models.pool_file import one_line
from service.models.registry import RegistryError, RegistryRef
from service.replica.metrics import LocalCounters
from service.state.live import LiveState
from service.state.rules import META, SWAPS, Tally, tally_key
from service.state.store.base import Doc, Put, StoreError, Txn

logger = logging.getLogger("pickserve")

TRACKING_S = 2.0  # how often a replica's tracking loop runs
LEASE_S = 60.0  # longer than MLflow's slowest call here (a 20 s timeout, one retry)
METRICS_PER_CALL = 900  # MLflow takes at most 1,000 metrics in one log_batch
POINTS_READ = 1_000_000
ROUND_TAG, NAMESPACE_TAG, BEST_TAG = "pickserve.round", "pickserve.namespace", "pickserve.best"


@dataclass(frozen=True)
class TrackingConfig:
    """Where the runs go; the writer's documents in the store are per experiment, so a new
    experiment gets the whole journey kept in the store."""

    experiment: str
    namespace: str
    champion_alias: str | None = None

    @property
    def lease_key(self) -> str:
        return f"tracking:{self.experiment}:lease"

    @property
    def start_key(self) -> str:  # the oldest round whose run is not finished
        return f"tracking:{self.experiment}:start"

    def cursor_key(self, round_number: int) -> str:
        return f"tracking:{self.experiment}:round:{round_number}"


@dataclass
class Cursor:
    """What of a round MLflow holds: its run, the last step written, the swaps written."""

    run_id: str | None = None
    params: bool = False
    step: int = -1
    swaps: int = 0
    finished: bool = False
    version: int = 0  # the cursor document's (0: not written yet)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "params": self.params, "step": self.step,
                "swaps": self.swaps, "finished": self.finished}  # fmt: skip

    @classmethod
    def of(cls, doc: Doc | None) -> Cursor:
        if doc is None:
            return cls()
        value = doc.value
        return cls(value.get("run_id"), bool(value.get("params")), int(value["step"]),
                   int(value["swaps"]), bool(value["finished"]), doc.version)  # fmt: skip


class CursorMovedError(RuntimeError):
    """Another writer moved the cursor: this one stops and reads again on its next tick."""


@dataclass
class JournalWriter:
    """Copies the store's journal to MLflow (`sync`, blocking: run it in a thread)."""

    live: LiveState
    config: TrackingConfig
    entries: Callable[[], Mapping[str, str | None]]  # candidate -> its `mlflow:` URI or None
    knobs: Callable[[], Mapping[str, Any]]
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)
    client: Any = None
    _experiment_id: str | None = None
    _fresh: bool = True  # the lease was (re)taken: read MLflow's own history first
    _refs: dict[str, RegistryRef] = field(default_factory=dict)
    _alias_set: tuple[str, str] | None = None
    points_written: int = 0  # by this writer, since it started

    # ---- the lease -------------------------------------------------------------------------

    def take_lease(self, now: float) -> bool:
        backend = self.live.backend
        doc = backend.read([self.config.lease_key]).get(self.config.lease_key)
        ours = doc is not None and doc.value.get("holder") == self.holder
        if doc is not None and not ours and float(doc.value.get("until", 0)) > now:
            self._fresh = True
            return False
        version = 0 if doc is None else doc.version
        lease = {"holder": self.holder, "until": now + LEASE_S}
        txn = Txn(f"lease:{uuid.uuid4().hex}", expect={self.config.lease_key: version},
                  put={self.config.lease_key: Put(lease)})  # fmt: skip
        if backend.commit(txn).status != "applied":
            self._fresh = True
            return False
        if not ours:
            self._fresh = True
        return True

    # ---- one pass ----------------------------------------------------------------------------

    def sync(self, now: float) -> None:
        """Write what MLflow misses of every round not finished yet, oldest first."""
        if not self.take_lease(now):
            return
        if self.client is None:
            self.client = registry.client()
        current = int(self._doc(META).value["round"])  # type: ignore[union-attr]
        start_doc = self._doc(self.config.start_key)
        first = current if start_doc is None else int(start_doc.value["round"])
        for number in range(first, current + 1):
            finished = self._sync_round(number, now)
            if finished and number == first and number < current:
                self._put(self.config.start_key, start_doc, {"round": number + 1})
                start_doc, first = self._doc(self.config.start_key), number + 1
        if start_doc is None:
            self._put(self.config.start_key, None, {"round": first})
        self._follow_champion()
        self._fresh = False

    def _sync_round(self, number: int, now: float) -> bool:
        """Bring round `number`'s run up to date; True once it is finished in MLflow."""
        tally_doc = self._doc(tally_key(number))
        cursor_doc = self._doc(self.config.cursor_key(number))
        cursor = Cursor.of(cursor_doc)
        if cursor.finished or tally_doc is None:
            return True
        tally = Tally.from_dict(tally_doc.value)
        if cursor.run_id is None:
            cursor.run_id = self._open_run(number, tally)
            cursor = self._save(number, cursor)
        run_id = cursor.run_id
        assert run_id is not None
        if not cursor.params:
            self._log_params(run_id, number, tally)
            cursor.params = True
            cursor = self._save(number, cursor)
        if self._fresh:
            cursor.step = max(cursor.step, self._last_step_in_mlflow(run_id))
        points = [p for p in self.live.journal(number, POINTS_READ) if p["step"] > cursor.step]
        for chunk in _chunks(points):
            self.client.log_batch(run_id, metrics=_metrics(chunk))
            self.points_written += len(chunk)
            cursor.step = int(chunk[-1]["step"])
            cursor = self._save(number, cursor)
        swaps = [s for s in self.live.backend.log(SWAPS, self.live.retention.log_cap)
                 if s.get("round") == number]  # fmt: skip
        if len(swaps) != cursor.swaps:
            self.client.log_dict(run_id, swaps, "swaps.json")
            self.client.set_tag(run_id, "pickserve.swaps", str(len(swaps)))
            cursor.swaps = len(swaps)
            cursor = self._save(number, cursor)
        if not tally.closed:
            return False
        self._finish(number, tally, run_id)
        cursor.finished = True
        self._save(number, cursor)
        return True

    # ---- MLflow ------------------------------------------------------------------------------

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.config.experiment)
            if found is None:
                try:
                    self._experiment_id = self.client.create_experiment(self.config.experiment)
                except Exception:  # another writer created it meanwhile
                    found = self.client.get_experiment_by_name(self.config.experiment)
                    if found is None:
                        raise
                    self._experiment_id = found.experiment_id
            else:
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _open_run(self, number: int, tally: Tally) -> str:
        """The round's run: the one MLflow has already, or a new one."""
        experiment = self._experiment()
        query = (f"tags.`{ROUND_TAG}` = '{number}' and "
                 f"tags.`{NAMESPACE_TAG}` = '{self.config.namespace}'")  # fmt: skip
        found = self.client.search_runs([experiment], filter_string=query, max_results=1)
        if found:
            return str(found[0].info.run_id)
        tags = {ROUND_TAG: str(number), NAMESPACE_TAG: self.config.namespace}
        run = self.client.create_run(experiment, start_time=_ms(tally.started_at), tags=tags,
                                     run_name=f"round-{number}")  # fmt: skip
        return str(run.info.run_id)

    def _log_params(self, run_id: str, number: int, tally: Tally) -> None:
        from mlflow.entities import Param, RunTag

        knobs = self.knobs()
        names = list(tally.models or self.entries())
        entries = self.entries()
        params = {"selector": tally.selector, "gamma": knobs.get("gamma"),
                  "budget": tally.picker.budget, "candidates": ",".join(names)[:6000],
                  "round": number}  # fmt: skip
        for name in names:
            uri = entries.get(name)
            if uri is not None:
                params[f"candidate.{name}"] = self._ref(uri).describe()
        tags = []
        if tally.started_by:
            reason = str(tally.started_by.get("reason", "operator"))
            tags.append(RunTag("pickserve.started_by", reason))
            self.client.log_dict(run_id, dict(tally.started_by), "started_by.json")
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                              tags=tags)  # fmt: skip

    def _last_step_in_mlflow(self, run_id: str) -> int:
        history = self.client.get_metric_history(run_id, "labels")
        return max((int(m.step) for m in history), default=-1)

    def _finish(self, number: int, tally: Tally, run_id: str) -> None:
        names = list(tally.models or self.entries())
        self.client.set_tag(run_id, BEST_TAG, names[tally.best()])
        following = self._doc(tally_key(number + 1))
        started_by = None if following is None else following.value.get("started_by")
        if started_by:
            self.client.log_dict(run_id, dict(started_by), "ended_by.json")
            self.client.set_tag(run_id, "pickserve.ended_by", str(started_by.get("reason")))
        self.client.set_terminated(run_id, "FINISHED", end_time=_ms(tally.ended_at or 0.0))

    def _ref(self, uri: str) -> RegistryRef:
        if uri not in self._refs:
            self._refs[uri] = registry.resolve(uri, self.client)
        return self._refs[uri]

    def _follow_champion(self) -> None:
        """The champion alias on the served candidate's registered version."""
        alias = self.config.champion_alias
        if alias is None:
            return
        meta = self._doc(META)
        assert meta is not None
        served = list(meta.value["models"])[int(meta.value["served"])]
        uri = self.entries().get(served)
        if uri is None:
            return
        try:
            ref = self._ref(uri)
        except RegistryError as error:
            logger.warning("champion alias: %s", error)
            return
        if self._alias_set != (ref.model, ref.version):
            self.client.set_registered_model_alias(ref.model, alias, ref.version)
            self._alias_set = (ref.model, ref.version)

    # ---- the store ---------------------------------------------------------------------------

    def _doc(self, key: str) -> Doc | None:
        return self.live.backend.read([key]).get(key)

    def _put(self, key: str, doc: Doc | None, value: dict[str, Any]) -> None:
        txn = Txn(f"tracking:{uuid.uuid4().hex}", expect={key: 0 if doc is None else doc.version},
                  put={key: Put(value)})  # fmt: skip
        if self.live.backend.commit(txn).status != "applied":
            raise CursorMovedError(key)

    def _save(self, number: int, cursor: Cursor) -> Cursor:
        key = self.config.cursor_key(number)
        txn = Txn(f"tracking:{uuid.uuid4().hex}", expect={key: cursor.version},
                  put={key: Put(cursor.to_dict())})  # fmt: skip
        if self.live.backend.commit(txn).status != "applied":
            self._fresh = True
            raise CursorMovedError(key)
        return Cursor(cursor.run_id, cursor.params, cursor.step, cursor.swaps, cursor.finished,
                      cursor.version + 1)  # fmt: skip


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _chunks(points: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Points grouped so that one log_batch call stays under MLflow's metric limit."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for point in points:
        width = len(point["posterior"]) + 3
        if chunks[-1] and size + width > METRICS_PER_CALL:
            chunks.append([])
            size = 0
        chunks[-1].append(point)
        size += width
    return [c for c in chunks if c]


def _metrics(points: list[dict[str, Any]]) -> list[Any]:
    from mlflow.entities import Metric

    metrics: list[Any] = []
    for point in points:
        at, step = _ms(float(point["at"])), int(point["step"])
        values = {"labels": point["labels"], "queries": point["queries"],
                  "queue_depth": point["queue_depth"],
                  **{f"posterior.{n}": w for n, w in point["posterior"].items()}}  # fmt: skip
        metrics.extend(Metric(k, float(v), at, step) for k, v in values.items())
    return metrics


class TrackingTicks:
    """The replica's tracking loop: record the journal's point (a point a crash left out),
    then let the writer copy the journal to MLflow in a thread of its own."""

    def __init__(self, writer: JournalWriter, run_store: Callable[..., Any],
                 ttl_s: Callable[[], float], counters: LocalCounters) -> None:  # fmt: skip
        self.writer, self.run_store, self.ttl_s = writer, run_store, ttl_s
        self.counters, self._counted = counters, 0
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="pickserve-mlflow")
        self.failing: str | None = None  # why the last pass failed (None: it did not)

    async def record(self) -> None:
        """The current round's point in its journal (after a label batch)."""
        await self.run_store(self.writer.live.record_point, time.time(), self.ttl_s())

    async def tick(self) -> None:
        await self.record()
        try:
            await self._write()
        finally:  # points that reached MLflow count, whatever the pass ended with
            written = self.writer.points_written
            if written > self._counted:
                self.counters.inc("mlflow_points", value=written - self._counted)
                self._counted = written

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.writer.sync, time.time())
        except CursorMovedError:
            return  # another writer moved on: read again next tick
        except StoreError:
            raise
        except Exception as error:  # MLflow down or refusing: the journal waits in the store
            self.counters.inc("errors", "mlflow")
            reason = one_line(error)
            if reason != self.failing:
                logger.warning("MLflow tracking waits (the journal is kept): %s", reason)
            self.failing = reason
            return
        if self.failing is not None:
            logger.info("MLflow tracking caught up")
        self.failing = None
