"""The pool file as candidates join and leave at run time.

`POST /v1/candidates` and `DELETE /v1/candidates/{name}` change the pool file first (so a
restart serves the same pool the store holds), then the store. A replica that sees the
store's pool differ from its own re-reads the pool file and loads or drops candidates
(`sync`): every replica must see the same file (one machine, or a shared volume).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.pool import (
    Candidate,
    CandidateSpec,
    FloatMatrix,
    PoolSpec,
    load_candidate,
    read_pool_spec,
    use_search_path,
    write_pool_file,
)

_file_lock = threading.Lock()  # one change of the pool file at a time in this process


class RosterError(ValueError):
    """The change does not fit the pool (a name taken or unknown, too few candidates)."""


def _replace_file(pool_file: Path, spec: PoolSpec) -> None:
    """Write the pool file whole or not at all (a crash leaves the old or the new one)."""
    handle, temporary = tempfile.mkstemp(prefix=".pool-", dir=pool_file.parent)
    os.close(handle)
    try:
        write_pool_file(Path(temporary), spec)
        os.replace(temporary, pool_file)
    finally:
        Path(temporary).unlink(missing_ok=True)


def add(pool_file: Path, spec: CandidateSpec) -> tuple[PoolSpec, Candidate]:
    """Load and probe the new candidate (PoolLoadError: one line naming it), then add it
    to the pool file."""
    with _file_lock:
        pool = read_pool_spec(pool_file)
        if spec.name in [c.name for c in pool.candidates]:
            raise RosterError(f"candidate {spec.name!r} is already in the pool")
        use_search_path(pool_file, pool)
        candidate = load_candidate(spec, pool_file, pool)
        grown = pool.model_copy(update={"candidates": [*pool.candidates, spec]})
        _replace_file(pool_file, grown)
    return grown, candidate


def remove(pool_file: Path, name: str) -> PoolSpec:
    """Take the candidate out of the pool file (a pool keeps at least two)."""
    with _file_lock:
        pool = read_pool_spec(pool_file)
        names = [c.name for c in pool.candidates]
        if name not in names:
            raise RosterError(f"unknown candidate {name!r}; candidates: {', '.join(names)}")
        if len(names) <= 2:
            raise RosterError("a pool keeps at least two candidates: add one before removing")
        kept = [c for c in pool.candidates if c.name != name]
        initial = None if pool.initial == name else pool.initial
        smaller = pool.model_copy(update={"candidates": kept, "initial": initial})
        _replace_file(pool_file, smaller)
    return smaller


def classes_of(candidate: Candidate, features: FloatMatrix) -> npt.NDArray[np.int64]:
    """The candidate's class per row; -1 where its output is not finite (no label equals
    it, so such a row counts as a mistake, as in shadow evaluation)."""
    if len(features) == 0:
        return np.zeros(0, dtype=np.int64)
    probabilities = candidate.class_probabilities(features)
    finite = np.isfinite(probabilities).all(axis=1)
    return np.where(finite, probabilities.argmax(axis=1), -1).astype(np.int64)


def sync(
    pool_file: Path, loaded: Sequence[Candidate], wanted: Sequence[str]
) -> tuple[PoolSpec, list[Candidate]]:
    """The candidates `wanted` (the store's pool, in its order), reusing those loaded and
    loading the others from the pool file; RosterError if the file does not name them."""
    pool = read_pool_spec(pool_file)
    specs = {c.name: c for c in pool.candidates}
    missing = [n for n in wanted if n not in specs]
    if missing or [c.name for c in pool.candidates] != list(wanted):
        raise RosterError(
            f"the store's pool {list(wanted)} is not the pool file's "
            f"{[c.name for c in pool.candidates]} ({pool_file}): every replica must see the "
            "same pool file (a shared volume on a cluster)"
        )
    by_name = {c.name: c for c in loaded}
    use_search_path(pool_file, pool)
    candidates = [by_name.get(n) or load_candidate(specs[n], pool_file, pool) for n in wanted]
    return pool, candidates
