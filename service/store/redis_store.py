"""The Redis store: shared by every replica on every node, survives app restarts.

Each operation that reads and then writes is one Lua script, so it runs atomically on the
server; plain reads use MULTI/EXEC. Keys share the hash tag `{namespace}` so one pickserve
state lives in one Redis Cluster slot. Run Redis with `appendonly yes` (and
`appendfsync always` where losing the last second of labels on power loss is not fine).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis

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

_ENQUEUE = """
local meta, available, prefix = KEYS[1], KEYS[2], ARGV[1]
if tonumber(redis.call('HGET', meta, 'round')) ~= tonumber(ARGV[2]) then return 0 end
local budget, now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local queries = tonumber(redis.call('HGET', meta, 'queries'))
local accepted = 0
for i = 6, #ARGV, 2 do
  if budget >= 0 and queries >= budget then break end
  local key = prefix .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'payload', ARGV[i + 1], 'round', ARGV[2], 'created', now,
               'status', 'pending', 'available', now)
    redis.call('EXPIRE', key, math.ceil(ttl))
    redis.call('ZADD', available, now, ARGV[i])
    queries = queries + 1
    accepted = accepted + 1
  end
end
redis.call('HSET', meta, 'queries', queries)
return accepted
"""

_LEASE = """
local available, prefix = KEYS[1], ARGV[1]
local now, lease_s, ttl, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local leased, count = {}, 0
while count < limit do
  local ids = redis.call('ZRANGEBYSCORE', available, '-inf', now, 'LIMIT', 0, limit)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local key = prefix .. id
    local created = tonumber(redis.call('HGET', key, 'created'))
    redis.call('ZREM', available, id)
    if created == nil or created < now - ttl then
      if created ~= nil then redis.call('HSET', key, 'status', 'expired') end
    elseif count < limit then
      count = count + 1
      redis.call('ZADD', available, now + lease_s, id)
      redis.call('HSET', key, 'available', now + lease_s)
      table.insert(leased, id)
      table.insert(leased, redis.call('HGET', key, 'payload'))
    else
      redis.call('ZADD', available, created, id)
    end
  end
end
return leased
"""

_COMMIT = """
local meta, losses, key, available = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local status = redis.call('HGET', key, 'status')
if not status or status == 'expired' then return 'unknown' end
if status == 'labeled' then return 'duplicate' end
local round = tonumber(ARGV[1])
if tonumber(redis.call('HGET', key, 'round')) ~= round
   or tonumber(redis.call('HGET', meta, 'round')) ~= round
   or tonumber(redis.call('HGET', key, 'created')) < tonumber(ARGV[2]) - tonumber(ARGV[3]) then
  return 'unknown'
end
for i = 5, #ARGV do
  if tonumber(ARGV[i]) ~= 0 then redis.call('HINCRBYFLOAT', losses, i - 5, ARGV[i]) end
end
redis.call('HINCRBY', meta, 'labels', 1)
redis.call('HSET', key, 'status', 'labeled')
redis.call('ZREM', available, ARGV[4])
return 'accepted'
"""

_SWAP = """
if tonumber(redis.call('HGET', KEYS[1], 'version')) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'served', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('RPUSH', KEYS[2], ARGV[3])
return 1
"""

_START_ROUND = """
local meta, losses, available = KEYS[1], KEYS[2], KEYS[3]
local n = tonumber(redis.call('HGET', meta, 'n_models'))
local new_round = redis.call('HINCRBY', meta, 'round', 1)
redis.call('HSET', meta, 'step', 0, 'queries', 0, 'labels', 0, 'budget', ARGV[1])
for i = 0, n - 1 do redis.call('HSET', losses, i, 0) end
redis.call('DEL', available)
return new_round
"""


class RedisStore:
    def __init__(self, client: redis.Redis, namespace: str = "pickserve") -> None:
        self._client = client
        tag = "{" + namespace + "}"
        self._meta, self._losses = f"{tag}:meta", f"{tag}:losses"
        self._available, self._swaps = f"{tag}:available", f"{tag}:swaps"
        self._counters, self._item_prefix = f"{tag}:counters", f"{tag}:item:"
        self._scripts = {
            name: client.register_script(source)
            for name, source in (("enqueue", _ENQUEUE), ("lease", _LEASE), ("commit", _COMMIT),
                                 ("swap", _SWAP), ("start_round", _START_ROUND))
        }  # fmt: skip

    @classmethod
    def from_url(cls, url: str, namespace: str = "pickserve") -> RedisStore:
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, retry_on_timeout=True,
            health_check_interval=10, decode_responses=True,
        )  # fmt: skip
        return cls(client, namespace)

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        try:
            if operation in self._scripts:
                return self._scripts[operation](*args, **kwargs)
            return getattr(self._client, operation)(*args, **kwargs)
        except redis.RedisError as error:
            raise StoreError(f"redis: {type(error).__name__}: {error}") from error

    def _read(self, *commands: tuple[str, tuple[Any, ...]]) -> list[Any]:
        try:
            pipe = self._client.pipeline(transaction=True)
            for name, args in commands:
                getattr(pipe, name)(*args)
            return list(pipe.execute())
        except redis.RedisError as error:
            raise StoreError(f"redis: {type(error).__name__}: {error}") from error

    @staticmethod
    def _picker_state(meta: Mapping[str, str], losses: Mapping[str, str]) -> PickerState:
        budget = int(meta["budget"])
        return PickerState(
            losses=tuple(float(losses[str(i)]) for i in range(int(meta["n_models"]))),
            step=int(meta["step"]),
            queries=int(meta["queries"]),
            labels=int(meta["labels"]),
            round=int(meta["round"]),
            budget=None if budget < 0 else budget,
        )

    def initialise(self, model_names: Sequence[str], served: int, budget: int | None) -> None:
        fresh: dict[Any, Any] = dict.fromkeys(("step", "queries", "labels", "round", "version"), 0)
        fresh.update(models=json.dumps(list(model_names)), n_models=len(model_names))
        fresh.update(served=served, budget=-1 if budget is None else budget)
        if self._call("hsetnx", self._meta, "models", fresh["models"]):
            try:
                pipe = self._client.pipeline(transaction=True)
                pipe.hset(self._losses, mapping={str(i): 0 for i in range(len(model_names))})
                pipe.hset(self._meta, mapping=fresh)
                pipe.execute()
            except redis.RedisError as error:
                raise StoreError(f"redis: {type(error).__name__}: {error}") from error
            return
        stored = json.loads(self._call("hget", self._meta, "models"))
        check_pool(stored, model_names, f"redis namespace {self._meta}")

    def selection(self) -> StoredSelection:
        meta, losses, swaps = self._read(
            ("hgetall", (self._meta,)), ("hgetall", (self._losses,)),
            ("lrange", (self._swaps, -RECENT_SWAPS, -1)),
        )  # fmt: skip
        if "n_models" not in meta:
            raise StoreError("redis store is not initialised")
        return StoredSelection(
            picker=self._picker_state(meta, losses),
            served=int(meta["served"]),
            version=int(meta["version"]),
            model_names=json.loads(meta["models"]),
            swaps=[json.loads(s) for s in swaps],
        )

    def advance(self, n_items: int) -> PickerState:
        step, meta, losses = self._read(
            ("hincrby", (self._meta, "step", n_items)), ("hgetall", (self._meta,)),
            ("hgetall", (self._losses,)),
        )  # fmt: skip
        before = self._picker_state(meta, losses)
        return PickerState(before.losses, int(step) - n_items, before.queries, before.labels,
                           before.round, before.budget)  # fmt: skip

    def enqueue(self, round_number: int, items: Sequence[QueuedItem], budget: int | None) -> int:
        args: list[Any] = [self._item_prefix, round_number, -1 if budget is None else budget]
        args += [items[0].created_at if items else 0, ITEM_RETENTION_S]
        for item in items:
            args += [item.item_id, json.dumps(item.payload())]
        return int(self._call("enqueue", keys=[self._meta, self._available], args=args))

    def lease(self, limit: int, now: float, lease_s: float, ttl_s: float) -> list[QueuedItem]:
        flat = self._call(
            "lease", keys=[self._available], args=[self._item_prefix, now, lease_s, ttl_s, limit]
        )
        return [
            QueuedItem(item_id=flat[i], lease_expires_at=now + lease_s, **json.loads(flat[i + 1]))
            for i in range(0, len(flat), 2)
        ]

    def item(self, item_id: str) -> QueuedItem | None:
        data = self._call("hgetall", self._item_prefix + item_id)
        if not data:
            return None
        return QueuedItem(
            item_id=item_id,
            status=data["status"],
            lease_expires_at=float(data["available"]),
            **json.loads(data["payload"]),
        )

    def commit_label(
        self, item_id: str, round_number: int, increments: Sequence[float], now: float, ttl_s: float
    ) -> CommitOutcome:
        outcome = self._call(
            "commit",
            keys=[self._meta, self._losses, self._item_prefix + item_id, self._available],
            args=[round_number, now, ttl_s, item_id, *(repr(float(x)) for x in increments)],
        )
        return outcome  # type: ignore[no-any-return]

    def swap(self, expected_version: int, to_model: int, record: Mapping[str, Any]) -> bool:
        swapped = self._call(
            "swap", keys=[self._meta, self._swaps],
            args=[expected_version, to_model, json.dumps(dict(record))],
        )  # fmt: skip
        return bool(swapped)

    def start_round(self, budget: int | None) -> int:
        keys = [self._meta, self._losses, self._available]
        return int(self._call("start_round", keys=keys, args=[-1 if budget is None else budget]))

    def set_budget(self, budget: int | None) -> None:
        self._call("hset", self._meta, "budget", -1 if budget is None else budget)

    def queue_depth(self, now: float, ttl_s: float) -> int:
        # Expired items leave the queue when a lease passes over them.
        return int(self._call("zcard", self._available))

    def add_counters(self, deltas: Mapping[str, float]) -> None:
        try:
            pipe = self._client.pipeline(transaction=True)
            for name, delta in deltas.items():
                pipe.hincrbyfloat(self._counters, name, delta)
            pipe.execute()
        except redis.RedisError as error:
            raise StoreError(f"redis: {type(error).__name__}: {error}") from error

    def counters(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._call("hgetall", self._counters).items()}

    def ping(self) -> None:
        self._call("ping")

    def close(self) -> None:
        self._client.close()
