"""Start-up's catch-up: the pool file follows the store (`service.models.roster.follow`)
when a candidate change stopped between its store write and its file write."""

from __future__ import annotations

import contextlib
from pathlib import Path

from service.models.roster import RosterError, follow
from service.state.rules import META, Meta
from service.state.store.base import Backend


def follow_store(backend: Backend, pool_file: Path) -> None:
    """At start-up: if the store holds a pool the file is behind (a candidate change whose
    process stopped between its store write and its file write), the file catches up. A
    file that differs otherwise is left as it is (the store's pool check says why)."""
    doc = backend.read([META]).get(META)
    if doc is None:
        return
    meta = Meta.from_dict(doc.value)
    with contextlib.suppress(RosterError):
        follow(pool_file, meta.models, meta.added, meta.removed)
