"""State stores: the storage contract, its three backends (memory, SQLite, Redis), the
factory. The rules that use them live in `service.rules` and `service.live`."""

from service.store.base import Backend, Committed, Doc, Put, Retention, StoreError, Txn
from service.store.factory import open_backend

__all__ = ["Backend", "Committed", "Doc", "Put", "Retention", "StoreError", "Txn", "open_backend"]
