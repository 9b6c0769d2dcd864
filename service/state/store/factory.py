"""Pick the backend from settings; refuse one that cannot keep what it acknowledges."""

from __future__ import annotations

from service.config.settings import Settings
from service.state.store.base import Backend, Retention, StoreError


def retention(settings: Settings) -> Retention:
    return Retention(
        log_cap=settings.swap_log_cap, item_s=settings.item_retention_s,
        audit_cap=settings.label_audit_cap, rounds_kept=settings.rounds_kept,
    )  # fmt: skip


def open_backend(settings: Settings) -> Backend:
    if settings.store == "redis":
        from service.state.store.redis_store import RedisBackend, check_durability

        backend = RedisBackend.from_url(
            settings.redis_url, settings.store_namespace, retention(settings),
            timeout_s=settings.store_timeout_s,
        )  # fmt: skip
        if not settings.redis_allow_unsafe:
            try:
                check_durability(backend.client, settings.redis_url)
            except StoreError:
                backend.close()
                raise
        return backend
    if settings.store == "memory":
        from service.state.store.memory import MemoryBackend

        if settings.router_replicas != 1:
            raise StoreError(
                "store=memory keeps the state inside one router replica: it needs "
                f"router_replicas=1, not {settings.router_replicas} (use embedded or redis)"
            )
        return MemoryBackend(retention(settings))
    from service.state.store.sqlite import SQLiteBackend

    return SQLiteBackend(
        settings.store_path(), retention(settings), busy_timeout_s=settings.store_timeout_s
    )
