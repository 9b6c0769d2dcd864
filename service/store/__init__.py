"""State stores: the interface, the embedded SQLite default, Redis, and the factory."""

from service.store.base import CommitOutcome, QueuedItem, StateStore, StoredSelection, StoreError
from service.store.factory import open_store

__all__ = [
    "CommitOutcome",
    "QueuedItem",
    "StateStore",
    "StoreError",
    "StoredSelection",
    "open_store",
]
