"""Pick the store implementation from settings."""

from __future__ import annotations

from service.settings import Settings
from service.store.base import StateStore


def open_store(settings: Settings) -> StateStore:
    if settings.store == "redis":
        from service.store.redis_store import RedisStore

        return RedisStore.from_url(settings.redis_url, settings.store_namespace)
    from service.store.sqlite import SQLiteStore

    return SQLiteStore(settings.store_path())
