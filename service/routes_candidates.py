"""Candidates at run time: `POST /v1/candidates` adds one (as a pool file names it),
`DELETE /v1/candidates/{name}` removes one, with no restart and the round kept
(`service.pool_rules`); the pool file is updated so that a restart serves the same pool.
Every replica follows the store's pool (`sync_pool`)."""

import asyncio
import time
from typing import Any

from fastapi import HTTPException, Path

from service import roster, schemas
from service.api import ADMIN, RouterBase, api, idempotency_header, logger, unavailable
from service.auth import Caller
from service.live import new_op
from service.pool import Candidate, CandidateSpec, PoolLoadError, PoolSpec
from service.roster import RosterError
from service.store import StoreError

CANDIDATE_NAME = Path(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the candidate")


class CandidateRoutes(RouterBase):
    _pool_lock: asyncio.Lock

    def _adopt(self, pool: PoolSpec, candidates: list[Candidate]) -> None:
        """Serve this pool from now on (its candidates in the store's order)."""
        self.pool, self.names = pool, [c.name for c in pool.candidates]
        self.server.names = self.names
        self.server.health.rename(self.names)
        if self.server.runner is not None:
            self.server.runner.use(candidates)

    @api.post("/v1/candidates", response_model=schemas.CandidateChange)
    async def add_candidate(
        self,
        spec: CandidateSpec,
        idempotency_key: str | None = idempotency_header(),
        caller: Caller = ADMIN,
    ) -> schemas.CandidateChange:
        """Add a candidate, given as in the pool file (paths relative to the pool file),
        to the current round: it is loaded and probed here, its loss is computed from the
        round's labeled items, and it may be served as soon as the posterior says so."""
        async with self._pool_lock:
            try:
                pool, candidate = await asyncio.to_thread(roster.add, self.pool_file, spec)
            except PoolLoadError as error:
                raise HTTPException(422, str(error)) from None
            except RosterError as error:
                raise HTTPException(409, str(error)) from None
            op = f"add:{idempotency_key}" if idempotency_key else new_op("add")
            try:
                added = await self.runtime.run_store(
                    self.state.add_candidate, op, spec.name,
                    lambda x: roster.classes_of(candidate, x), time.time(),
                )  # fmt: skip
            except StoreError as error:
                await asyncio.to_thread(roster.remove, self.pool_file, spec.name)
                raise unavailable(error, "the pool") from None
            loaded = [*(self.server.runner.candidates if self.server.runner else []), candidate]
            self._adopt(pool, loaded)
            await self.runtime.refresh()
        return schemas.CandidateChange(
            candidates=self.names, served_model=self.names[self.selection.served],
            loss=added["loss"], labels=added["labels"],
        )  # fmt: skip

    @api.delete("/v1/candidates/{name}", response_model=schemas.CandidateChange)
    async def remove_candidate(
        self, name: str = CANDIDATE_NAME, caller: Caller = ADMIN
    ) -> schemas.CandidateChange:
        """Remove a candidate: only its own entry goes; if it was served, the posterior's
        best of the others is served. It is never served again."""
        async with self._pool_lock:
            if name not in self.names:
                raise HTTPException(404, f"unknown candidate {name!r}; candidates: "
                                    f"{', '.join(self.names)}")  # fmt: skip
            try:
                pool = await asyncio.to_thread(roster.remove, self.pool_file, name)
            except RosterError as error:
                raise HTTPException(409, str(error)) from None
            try:
                await self.runtime.run_store(
                    self.state.remove_candidate, new_op("remove"), name, time.time()
                )
            except StoreError as error:
                raise unavailable(error, "the pool") from None
            kept = [c for c in (self.server.runner.candidates if self.server.runner else [])
                    if c.name != name]  # fmt: skip
            self._adopt(pool, kept)
            await self.runtime.refresh()
        return schemas.CandidateChange(
            candidates=self.names, served_model=self.names[self.selection.served]
        )

    async def sync_pool(self) -> None:
        """Follow the store's pool: a candidate another replica added is loaded from the
        pool file, one it removed is dropped."""
        selection = self.runtime.selection
        if selection is None or list(selection.meta.models) == self.names:
            return
        async with self._pool_lock:
            wanted = list(selection.meta.models)
            loaded: Any = self.server.runner.candidates if self.server.runner else []
            try:
                pool, candidates = await asyncio.to_thread(
                    roster.sync, self.pool_file, loaded, wanted
                )
            except (PoolLoadError, RosterError) as error:
                logger.error("cannot follow the store's pool %s: %s", wanted, error)
                return
            self._adopt(pool, candidates if self.server.runner else [])
            logger.info("pool changed at run time: now %s", self.names)
