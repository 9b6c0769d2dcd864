"""Candidates at run time: `POST /v1/candidates` adds one (as a pool file names it),
`DELETE /v1/candidates/{name}` removes one, with no restart and the round kept
(`service.state.rules.candidates`).

A new candidate is first loaded and probed in a process of its own (`service.models.isolated`:
a crash, hang or exit there is a 422 and nothing else happens), then here; the store takes
the change in one transaction, and the pool file follows the store (`service.models.roster`), so
a restart serves the pool the store holds. Every replica follows the store's pool
(`sync_pool`)."""

import asyncio
import os
import time
from typing import Any

from fastapi import HTTPException, Path

from service.http import schemas
from service.http.api import ADMIN, RouterBase, api, idempotency_header, logger, unavailable
from service.http.auth import Caller
from service.models import roster
from service.models.isolated import load_isolated
from service.models.loaders import (
    Candidate,
    check_place,
    check_registry,
    load_candidate,
    use_search_path,
)
from service.models.pool_file import (
    CANDIDATE_NAME_PATTERN,
    CandidateSpec,
    PoolLoadError,
    PoolSpec,
    read_pool_spec,
)
from service.models.roster import RosterError
from service.state.live import new_op
from service.state.rules import CANDIDATE_KEYS
from service.state.store.base import StoreError

CANDIDATE_NAME = Path(
    ..., pattern=CANDIDATE_NAME_PATTERN, max_length=64, description="the candidate"
)


class CandidateRoutes(RouterBase):
    _pool_lock: asyncio.Lock

    def _loaded(self) -> list[Candidate]:
        return self.server.runner.candidates if self.server.runner is not None else []

    def _adopt(self, pool: PoolSpec, candidates: list[Candidate]) -> None:
        """Serve `pool` (the pool file's, its candidates in the store's order) from now on."""
        self.pool = pool
        self.names = [c.name for c in self.pool.candidates]
        self.server.names = self.names
        self.server.health.rename(self.names)
        if self.server.runner is not None:
            self.server.runner.use(candidates)

    def _follow_store(self, extra: list[Candidate]) -> None:
        """The pool file made to name the store's candidates, and this replica serving
        them (reusing those loaded, and `extra`, a candidate just loaded here)."""
        meta = self.selection.meta
        pool = roster.follow(self.pool_file, meta.models, meta.added, meta.removed)
        loaded = roster.load(self.pool_file, pool, [*self._loaded(), *extra], meta.models)
        self._adopt(pool, loaded if self.server.runner is not None else [])

    def _check_writable(self) -> None:
        """The pool file must be able to follow the store: refused before the store changes
        (a read-only volume, say), never after."""
        if not os.access(self.pool_file.parent, os.W_OK) or not os.access(self.pool_file, os.W_OK):
            raise HTTPException(409, f"the pool file {self.pool_file} cannot be written here "
                                "(a read-only volume?): candidates change at run time only "
                                "where the pool file can follow")  # fmt: skip

    def _load_here(self, spec: CandidateSpec) -> Candidate:
        """After the isolated load passed: the candidate loaded in this replica."""
        pool = read_pool_spec(self.pool_file)
        use_search_path(self.pool_file, pool)
        return load_candidate(spec, self.pool_file, pool)

    @api.post("/v1/candidates", response_model=schemas.CandidateChange)
    async def add_candidate(
        self,
        spec: CandidateSpec,
        idempotency_key: str | None = idempotency_header(),
        caller: Caller = ADMIN,
    ) -> Any:
        """Add a candidate, given as in the pool file (paths below the pool file's folder,
        modules from it or python_path), to the current round: it is loaded and probed in a
        process of its own, then here; its loss is computed from the round's labeled items,
        and it may be served as soon as the posterior says so. A repeat with the same
        Idempotency-Key gets the first answer; the key with another body, a 422."""
        async with self._pool_lock:
            earlier = await self.bind_key(CANDIDATE_KEYS, idempotency_key, caller, spec)
            if earlier is not None:
                return earlier
            if spec.name in self.selection.meta.models:
                raise HTTPException(409, f"candidate {spec.name!r} is already in the pool")
            self._check_writable()
            settings = self.settings
            try:
                await asyncio.to_thread(check_place, spec, self.pool_file, self.pool)
                await asyncio.to_thread(check_registry, spec, self.pool_file, self.pool)
                await asyncio.to_thread(load_isolated, spec, self.pool_file,
                                        settings.candidate_load_timeout_s,
                                        settings.candidate_load_memory_mb)  # fmt: skip
                candidate = await asyncio.to_thread(self._load_here, spec)
            except PoolLoadError as error:
                raise HTTPException(422, str(error)) from None
            op = f"add:{idempotency_key}" if idempotency_key else new_op("add")
            entry = spec.model_dump(exclude_none=True)
            try:
                answer = await self.runtime.run_store(
                    self.state.add_candidate, op, entry,
                    lambda x: roster.classes_of(candidate, x), time.time(), idempotency_key,
                )  # fmt: skip
                await self.runtime.refresh()
            except RosterError as error:
                raise HTTPException(409, str(error)) from None
            except StoreError as error:
                raise unavailable(error, "the pool") from None
            await self._follow_or_log([candidate])
        return answer

    @api.delete("/v1/candidates/{name}", response_model=schemas.CandidateChange)
    async def remove_candidate(
        self, name: str = CANDIDATE_NAME, caller: Caller = ADMIN
    ) -> schemas.CandidateChange:
        """Remove a candidate: only its own entry goes; if it was served, the posterior's
        best of the others is served. It is never served again."""
        async with self._pool_lock:
            models = self.selection.meta.models
            if name not in models:
                raise HTTPException(404, f"unknown candidate {name!r}; candidates: "
                                    f"{', '.join(models)}")  # fmt: skip
            self._check_writable()
            try:
                await self.runtime.run_store(
                    self.state.remove_candidate, new_op("remove"), name, time.time()
                )
                await self.runtime.refresh()
            except RosterError as error:
                raise HTTPException(409, str(error)) from None
            except StoreError as error:
                raise unavailable(error, "the pool") from None
            await self._follow_or_log([])
        selection = self.selection
        served = selection.model_names[selection.served]
        return schemas.CandidateChange(candidates=list(selection.meta.models), served_model=served)

    async def _follow_or_log(self, extra: list[Candidate]) -> None:
        """The store took the change: the file and this replica follow it (if they cannot
        now, the pool check of every replica retries)."""
        try:
            await asyncio.to_thread(self._follow_store, extra)
        except (OSError, PoolLoadError, RosterError) as error:
            logger.error("the pool file cannot follow the store's pool yet: %s", error)

    async def sync_pool(self) -> None:
        """Follow the store's pool: a candidate another replica added is loaded from the
        pool file (which is brought up to date first), one it removed is dropped."""
        selection = self.runtime.selection
        if selection is None or list(selection.meta.models) == self.names:
            return
        async with self._pool_lock:
            wanted = list(self.selection.meta.models)
            if wanted == self.names:
                return
            try:
                await asyncio.to_thread(self._follow_store, [])
            except (OSError, PoolLoadError, RosterError) as error:
                logger.error("cannot follow the store's pool %s: %s", wanted, error)
                return
            logger.info("pool changed at run time: now %s", self.names)
