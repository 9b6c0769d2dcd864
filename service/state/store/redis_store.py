"""The Redis backend: shared by every replica on every node, survives restarts.

Documents are hashes {v: version, d: JSON}; a transaction is one Lua script that checks the
op record and the expected versions, then applies the writes: it interprets a `Txn`, it
decides nothing. Keys share the hash tag `{namespace}`, so one pickserve state lives in one
Redis Cluster slot. Calls have short timeouts and are never retried by the client library:
a write that timed out is reported as ambiguous (`StoreError.ambiguous`), and the caller
repeats it with the same op key, which makes the repeat a no-op.

Redis must keep what it acknowledged: `appendonly yes` and `maxmemory-policy noeviction`
are checked at start-up (`check_durability`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.state.store.base import JSON, Committed, Doc, Retention, StoreError, Txn

_COMMIT = """
local t = cjson.decode(ARGV[1])
local recorded = redis.call('GET', t.op)
if recorded then return {'replayed', recorded} end
for i = 1, #t.expect do
  local key, version = t.expect[i][1], t.expect[i][2]
  if tonumber(redis.call('HGET', key, 'v') or '0') ~= version then return {'conflict', key} end
end
for i = 1, #t.put do
  local key, value, expire_ms = t.put[i][1], t.put[i][2], t.put[i][3]
  if value == '' then
    redis.call('DEL', key)
  else
    redis.call('HINCRBY', key, 'v', 1)
    redis.call('HSET', key, 'd', value)
    if expire_ms > 0 then redis.call('PEXPIREAT', key, expire_ms)
    else redis.call('PERSIST', key) end
  end
end
for i = 1, #t.add do redis.call('HINCRBYFLOAT', t.add[i][1], t.add[i][2], t.add[i][3]) end
for i = 1, #t.push do redis.call('ZADD', t.push[i][1], t.push[i][3], t.push[i][2]) end
for i = 1, #t.pull do redis.call('ZREM', t.pull[i][1], t.pull[i][2]) end
for i = 1, #t.drop do redis.call('UNLINK', t.drop[i]) end
for i = 1, #t.append do
  redis.call('RPUSH', t.append[i][1], t.append[i][2])
  redis.call('LTRIM', t.append[i][1], -t.append[i][3], -1)
end
redis.call('SET', t.op, t.result, 'PX', t.op_ms)
return {'applied', t.result}
"""

_TAKE = """
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
for i = 1, #members do redis.call('ZADD', KEYS[1], ARGV[4], members[i]) end
return members
"""

_CLAIM = """
local claimed = {}
for i = 4, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) >= tonumber(ARGV[1]) and tonumber(score) <= tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[i])
    claimed[#claimed + 1] = ARGV[i]
  end
end
return claimed
"""

_TRIM = """
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
if #members > 0 then redis.call('ZREM', KEYS[1], unpack(members)) end
return #members
"""


def check_durability(client: redis.Redis, url: str) -> None:
    """Refuse a Redis that may lose acknowledged writes: without the append-only file a crash
    loses them; under an eviction policy other than noeviction, memory pressure deletes them."""
    try:
        persistence = client.info("persistence")
        memory = client.info("memory")
    except redis.RedisError as error:
        raise StoreError(f"redis at {_safe(url)}: {type(error).__name__}: {error}") from error
    problems = []
    if int(persistence.get("aof_enabled", 0)) != 1:
        problems.append("appendonly is off (set `appendonly yes`)")
    if memory.get("maxmemory_policy", "noeviction") != "noeviction":
        policy = memory.get("maxmemory_policy")
        problems.append(f"maxmemory-policy is {policy} (set `maxmemory-policy noeviction`)")
    if problems:
        raise StoreError(
            f"redis at {_safe(url)} may lose acknowledged labels: {'; '.join(problems)}. "
            "For a throwaway setup, set PICKSERVE_REDIS_ALLOW_UNSAFE=true."
        )


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


class RedisBackend:
    def __init__(
        self,
        client: redis.Redis,
        namespace: str = "pickserve",
        retention: Retention | None = None,
    ) -> None:
        self._client, self.retention = client, retention or Retention()
        self._prefix = "{" + namespace + "}:"
        self._commit = client.register_script(_COMMIT)
        self._take = client.register_script(_TAKE)
        self._claim = client.register_script(_CLAIM)
        self._trim = client.register_script(_TRIM)

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: str = "pickserve",
        retention: Retention | None = None,
        timeout_s: float = 1.0,
    ) -> RedisBackend:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, decode_responses=True,
        )  # fmt: skip
        return cls(client, namespace, retention)

    @property
    def client(self) -> redis.Redis:
        return self._client

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _call(self, function: Any, *args: Any, write: bool = False, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (redis.TimeoutError, redis.ConnectionError) as error:
            # The command may have reached the server before the connection failed.
            raise StoreError(f"redis: {type(error).__name__}: {error}", ambiguous=write) from error
        except redis.RedisError as error:
            raise StoreError(f"redis: {type(error).__name__}: {error}") from error

    def read(self, keys: Sequence[str]) -> dict[str, Doc]:
        if not keys:
            return {}
        pipe = self._client.pipeline(transaction=True)
        for key in keys:
            pipe.hmget(self._key(key), "v", "d")
        rows = self._call(pipe.execute)
        return {
            key: Doc(int(version), json.loads(data))
            for key, (version, data) in zip(keys, rows, strict=True)
            if version is not None and data is not None
        }

    def commit(self, txn: Txn) -> Committed:
        k = self._key
        body: dict[str, Any] = {
            "op": k("op:" + txn.op),
            "expect": [[k(key), v] for key, v in txn.expect.items()] or {},
            "put": [
                [k(key), "" if p.value is None else json.dumps(p.value),
                 0 if p.expire_at is None else int(p.expire_at * 1000)]
                for key, p in txn.put.items()
            ] or {},
            "add": [[k(key), f, repr(float(d))] for key, ds in txn.add.items()
                    for f, d in ds.items()] or {},
            "push": [[k(q), m, repr(float(s))] for q, ms in txn.push.items()
                     for m, s in ms.items()] or {},
            "pull": [[k(q), m] for q, ms in txn.pull.items() for m in ms] or {},
            "drop": [k(q) for q in txn.drop] or {},
            "append": [[k(key), json.dumps(r), self.retention.cap(key)]
                       for key, rs in txn.append.items() for r in rs] or {},
            "op_ms": int(self.retention.op_s * 1000),
            "result": json.dumps(txn.result),
        }  # fmt: skip
        keys = sorted({body["op"], *(k(x) for x in txn.doc_keys()), *(k(x) for x in txn.add),
                       *(k(x) for x in txn.push), *(k(x) for x in txn.pull),
                       *(k(x) for x in txn.drop), *(k(x) for x in txn.append)})  # fmt: skip
        status, payload = self._call(self._commit, keys=keys, args=[json.dumps(body)], write=True)
        if status == "conflict":
            return Committed("conflict")
        return Committed(status, json.loads(payload))

    def take(
        self, queue: str, lowest: float, highest: float, limit: int, new_score: float
    ) -> list[str]:
        args = [repr(float(lowest)), repr(float(highest)), limit, repr(float(new_score))]
        members = self._call(self._take, keys=[self._key(queue)], args=args, write=True)
        return list(members)

    def claim(
        self, queue: str, members: Sequence[str], lowest: float, highest: float, new_score: float
    ) -> list[str]:
        unique = list(dict.fromkeys(members))
        if not unique:
            return []
        args = [repr(float(lowest)), repr(float(highest)), repr(float(new_score)), *unique]
        return list(self._call(self._claim, keys=[self._key(queue)], args=args, write=True))

    def count(self, queue: str, lowest: float, highest: float = math.inf) -> int:
        top = "+inf" if math.isinf(highest) else repr(float(highest))
        return int(self._call(self._client.zcount, self._key(queue), repr(float(lowest)), top))

    def members(self, queue: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        return list(self._call(self._client.zrange, self._key(queue), 0, limit - 1))

    def trim(self, queue: str, below: float, limit: int) -> int:
        args = [repr(float(below)), limit]
        return int(self._call(self._trim, keys=[self._key(queue)], args=args, write=True))

    def counters(self, key: str) -> dict[str, float]:
        stored = self._call(self._client.hgetall, self._key(key))
        return {name: float(value) for name, value in stored.items()}

    def log(self, key: str, last: int) -> list[JSON]:
        if last <= 0:
            return []
        records = self._call(self._client.lrange, self._key(key), -last, -1)
        return [json.loads(r) for r in records]

    def purge(self, limit: int) -> int:
        return 0  # documents and op records carry Redis expiries

    def ping(self) -> None:
        self._call(self._client.ping)

    def close(self) -> None:
        self._client.close()
