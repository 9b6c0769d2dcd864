"""A pool-based round's belief, derived in each replica from the round's item documents.

The store keeps what the belief is a function of, and nothing derived: the round's pool
(`pool:{round}`: every item that joined it, with its candidates' predictions in its item
document), its labeled items (`labeled:{round}`, each label and its weight in its item
document) and the round's counts in its tally (items admitted, labels applied). A replica
reads only what is new since it last looked (the counts say when something is), builds
`picker.pool_based.PoolBased` over the whole pool and caches it per (round, candidates,
items, labels); a quarantine (or its lift) that made the round's labels again starts it
afresh. Every replica that has read the same items derives the same belief and
the same posterior (P(best) is drawn with a seed made of those counts), so a replica
killed or restarted loses nothing: the next one reads the items again.

Items on which every candidate agrees never join the pool: they say nothing about which
candidate is ahead. Items that expire before a label stay in the pool (the pool is a sample
of the stream's disagreement items whatever the labelers did) but are not handed out.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from picker.pool_based import PoolBased
from service.state.rules import Selection, item_key, labeled_key, pool_key
from service.state.store.base import Backend

MEMBERS_LIMIT = 10_000_000


@dataclass(frozen=True)
class Belief:
    """The belief of one round over the pool items `ids`, with `labels` of them labeled."""

    ids: tuple[str, ...]
    selector: PoolBased | None  # None while the pool is empty
    posterior: tuple[float, ...]
    labels: int

    def ranking(self, rng: np.random.Generator) -> list[str]:
        """The unlabeled items, the most useful label first (`PoolBased.ranking`)."""
        if self.selector is None:
            return []
        return [self.ids[int(i)] for i in self.selector.ranking(rng)]


def posterior_of(
    selector: PoolBased | None, n_models: int, seed: Sequence[int]
) -> tuple[float, ...]:
    """P(each candidate is the best) (`PoolBased.posterior`), drawn with `seed` (the
    round's counts) so that every replica derives the same; every candidate alike while
    the pool is empty."""
    if selector is None:
        return tuple([1.0 / n_models] * n_models)
    weights = selector.posterior(np.random.default_rng(list(seed)))
    return tuple(float(w) for w in weights)


class BeliefCache:
    """One replica's copy of the current pool-based round's items and belief."""

    def __init__(self, backend: Backend, n_classes: int | None = None) -> None:
        self.backend, self.n_classes = backend, n_classes
        self._lock = threading.Lock()
        self._key: tuple[int, tuple[str, ...], int] | None = None
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._predictions: list[tuple[int, ...]] = []
        self._labels: dict[int, int] = {}
        self._weights: dict[int, float] = {}  # labels that weigh less than 1 (weigh_labels)
        self._missing: set[str] = set()  # pool members whose record expired
        self._belief: Belief | None = None

    def belief(self, current: Selection) -> Belief:
        """The belief for this view of the round (it must be a pool-based one)."""
        picker = current.picker
        key = (picker.round, current.meta.models, current.tally.relabeled)
        with self._lock:
            if key != self._key:
                self._reset(key)
            known = len(self._ids) + len(self._missing)
            if known < picker.queries:
                self._read_members(pool_key(picker.round))
            if len(self._labels) < picker.labels:
                self._read_labels(labeled_key(picker.round))
            belief = self._belief
            if (
                belief is None
                or len(belief.ids) != len(self._ids)
                or (belief.labels != len(self._labels))
            ):
                belief = self._belief = self._build(picker.round, len(current.meta.models))
            return belief

    def _reset(self, key: tuple[int, tuple[str, ...], int]) -> None:
        self._key, self._ids, self._index = key, [], {}
        self._predictions, self._labels, self._missing = [], {}, set()
        self._weights = {}
        self._belief = None

    def _read_members(self, pool: str) -> None:
        fresh = [m for m in self.backend.members(pool, MEMBERS_LIMIT)
                 if m not in self._index and m not in self._missing]  # fmt: skip
        self._add_items(fresh)

    def _add_items(self, ids: list[str]) -> None:
        docs = self.backend.read([item_key(i) for i in ids])
        for item_id in ids:
            doc = docs.get(item_key(item_id))
            if doc is None:
                self._missing.add(item_id)
                continue
            self._index[item_id] = len(self._ids)
            self._ids.append(item_id)
            self._predictions.append(tuple(int(p) for p in doc.value["predictions"]))
            self._note_label(item_id, doc.value)

    def _read_labels(self, labeled: str) -> None:
        members = self.backend.members(labeled, MEMBERS_LIMIT)
        unseen = [m for m in members if m not in self._index and m not in self._missing]
        self._add_items(unseen)  # labeled after the pool was read: they join it now
        pending = [m for m in members if m in self._index and self._index[m] not in self._labels]
        docs = self.backend.read([item_key(i) for i in pending])
        for item_id in pending:
            doc = docs.get(item_key(item_id))
            if doc is not None:
                self._note_label(item_id, doc.value)

    def _note_label(self, item_id: str, record: dict[str, Any]) -> None:
        if record["status"] == "labeled":
            self._labels[self._index[item_id]] = int(record["label"])
            weight = float(record.get("weight", 1.0))
            if weight != 1.0:
                self._weights[self._index[item_id]] = weight

    def _build(self, round_number: int, n_models: int) -> Belief:
        if not self._ids:
            return Belief((), None, posterior_of(None, n_models, ()), 0)
        predictions: npt.NDArray[np.int64] = np.asarray(self._predictions, dtype=np.int64)
        top = max(int(predictions.max()), max(self._labels.values(), default=0))
        n_classes = max(self.n_classes or 0, top + 1, 2)
        # a label's weight w = (C a - 1)/(C - 1) is its labeler's accuracy a to the belief
        accuracy = {i: (w * (n_classes - 1) + 1.0) / n_classes for i, w in self._weights.items()}
        selector = PoolBased(predictions, n_classes, labels=dict(self._labels),
                             label_accuracy=accuracy)  # fmt: skip
        seed = (round_number, len(self._ids), len(self._labels))
        return Belief(tuple(self._ids), selector, posterior_of(selector, n_models, seed),
                      len(self._labels))  # fmt: skip
