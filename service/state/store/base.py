"""The storage contract: primitives only, no policy.

A backend stores versioned JSON documents, hashes of float counters, scored queues and
capped logs, and applies a whole transaction (`Txn`) atomically. Every rule of the live
state (budget, leases, expiry, rounds, swaps) lives above this contract, in
`service.state.rules`, applied by `service.state.live.LiveState`. A backend may use Lua or
SQL to make a primitive atomic, never to decide anything.

Three implementations pass the same contract suite, `tests/integration/contract/` (every
test runs on each): `MemoryBackend` (in-process, for unit tests and one-replica throwaway
runs), `SQLiteBackend` (the embedded default) and `RedisBackend`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

JSON = Any
Status = Literal["applied", "replayed", "conflict"]


class StoreError(RuntimeError):
    """The store failed or refused.

    `ambiguous` is True when a write may or may not have been applied (a timeout after the
    command was sent): repeating it with the same op key is safe and tells the truth.
    """

    def __init__(self, message: str, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclass(frozen=True)
class Doc:
    """A stored document and its version (1 on creation, +1 on every write)."""

    version: int
    value: dict[str, JSON]


AUDIT_PREFIX = "audit:"
JOURNAL_PREFIX = "journal:"  # a round's journal (`rules.journal`): kept like its audit
LABELERS_PREFIX = "labelers:"  # the labelers' evidence (`rules.labelers`): kept like an audit


@dataclass(frozen=True)
class Put:
    """Write (or, with value None, delete) a document; it vanishes at `expire_at` (unix s)."""

    value: dict[str, JSON] | None
    expire_at: float | None = None


@dataclass(frozen=True)
class Txn:
    """One atomic step. If `op` was applied before (and its record is still kept), nothing is
    written and the recorded result comes back ("replayed"). Otherwise, if every document in
    `expect` has the given version (0: absent), all writes are applied and `result` is
    recorded under `op` ("applied"); else nothing is written ("conflict"). `drop` removes
    whole queues and logs by name."""

    op: str
    expect: Mapping[str, int] = field(default_factory=dict)
    put: Mapping[str, Put] = field(default_factory=dict)
    add: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    push: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    pull: Mapping[str, Sequence[str]] = field(default_factory=dict)
    drop: Sequence[str] = ()
    append: Mapping[str, Sequence[JSON]] = field(default_factory=dict)
    result: JSON = None

    def doc_keys(self) -> set[str]:
        return set(self.expect) | set(self.put)


@dataclass(frozen=True)
class Committed:
    status: Status
    result: JSON = None


class Backend(Protocol):
    """Storage primitives. Every call is atomic and has a bounded cost (noted per method)."""

    def read(self, keys: Sequence[str]) -> dict[str, Doc]:
        """The documents that exist (and have not expired) among `keys`, in one snapshot."""

    def commit(self, txn: Txn) -> Committed:
        """Apply `txn` atomically (see `Txn`). Cost: the size of the transaction."""

    def take(
        self, queue: str, lowest: float, highest: float, limit: int, new_score: float
    ) -> list[str]:
        """Up to `limit` members with lowest <= score <= highest, lowest score first; each is
        re-scored to `new_score` (a visibility timeout). Cost: log(size) + limit."""

    def claim(
        self, queue: str, members: Sequence[str], lowest: float, highest: float, new_score: float
    ) -> list[str]:
        """Those of `members` whose score is within [lowest, highest], in the order given;
        each is re-scored to `new_score` (a visibility timeout for chosen members).
        Cost: len(members)."""

    def count(self, queue: str, lowest: float, highest: float = math.inf) -> int:
        """Members with lowest <= score <= highest. Cost: log(size) on Redis and SQLite."""

    def members(self, queue: str, limit: int) -> list[str]:
        """Up to `limit` members, lowest score first, changing nothing. Cost: limit."""

    def trim(self, queue: str, below: float, limit: int) -> int:
        """Remove up to `limit` members with score < below; returns how many. Cost: limit."""

    def counters(self, key: str) -> dict[str, float]:
        """A hash of float counters (empty if absent)."""

    def log(self, key: str, last: int) -> list[JSON]:
        """The `last` newest records of a capped log, oldest first."""

    def purge(self, limit: int) -> int:
        """Forget up to `limit` expired documents and op records (Redis expires natively)."""

    def ping(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Retention:
    """How long the state keeps what it keeps; every store honours the same numbers.

    op_s: op records (what makes a repeated write a no-op) outlive any retry by far.
    log_cap: records kept (the newest) per log, swap records for one.
    audit_cap: records kept per label audit log (keys starting `audit:`, one per round), per
        round journal (`journal:`), and of the labelers' evidence (`labelers:`).
    rounds_kept: rounds whose record and label audit are kept (the newest).
    item_s: an item's record lives this long after it was queued, so that a late label is
        answered 'expired' rather than 'never queued'; keep it above the query TTL.
    """

    op_s: float = 3600.0
    log_cap: int = 1000
    item_s: float = 7 * 86_400.0
    audit_cap: int = 100_000
    rounds_kept: int = 100

    def __post_init__(self) -> None:
        if self.op_s <= 0 or min(self.log_cap, self.audit_cap, self.rounds_kept) < 1:
            raise ValueError("retention must be positive")
        if self.item_s <= 0:
            raise ValueError("retention must be positive")

    def cap(self, log: str) -> int:
        """Records kept in a log: `audit_cap` for the label audit logs, else `log_cap`."""
        kept_long = log.startswith((AUDIT_PREFIX, JOURNAL_PREFIX, LABELERS_PREFIX))
        return self.audit_cap if kept_long else self.log_cap


def conflicting_key(txn: Txn, versions: Mapping[str, int]) -> str | None:
    """The first expected document whose stored version differs (shared by the in-process
    backends; the Redis script does the same check on the server)."""
    for key, version in txn.expect.items():
        if versions.get(key, 0) != version:
            return key
    return None
