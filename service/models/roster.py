"""The pool file follows the store.

`POST /v1/candidates` and `DELETE /v1/candidates/{name}` change the store first (one
transaction: `service.state.rules.candidates`), then make the pool file name the store's
candidates (`follow`), so that no sequence of requests can leave the two disagreeing: at
worst the file is behind the store, and whoever reads it next (a replica's pool check,
start-up: `service.state.follow`) brings it up to date. The store keeps what that needs:
the pool file entries of candidates added at run time and the names of those removed. A
file that names a candidate the store never had is not overwritten: that is an
operator's edit, and start-up says so.

Every replica must see the same file (one machine, or a shared volume).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.models.loaders import (
    Candidate,
    check_place,
    load_candidate,
    predicted_classes,
    use_search_path,
)
from service.models.pool_file import (
    CandidateSpec,
    FloatMatrix,
    PoolSpec,
    read_pool_spec,
    write_pool_file,
)
from service.models.resident import unloaded

_file_lock = threading.Lock()  # one change of the pool file at a time in this process


class RosterError(ValueError):
    """The change does not fit the pool (a name taken or unknown, too few candidates), or
    the pool file does not name the store's candidates."""


def _replace_file(pool_file: Path, spec: PoolSpec) -> None:
    """Write the pool file whole or not at all (a crash leaves the old or the new one)."""
    handle, temporary = tempfile.mkstemp(prefix=".pool-", dir=pool_file.parent)
    os.close(handle)
    try:
        write_pool_file(Path(temporary), spec)
        os.replace(temporary, pool_file)
    finally:
        Path(temporary).unlink(missing_ok=True)


def followed(
    pool: PoolSpec,
    models: Sequence[str],
    added: Mapping[str, Mapping[str, Any]],
    removed: Sequence[str],
) -> PoolSpec:
    """The pool file's contents naming the store's candidates `models`, in their order:
    each entry from the file where it has one, else the store's (`added`). RosterError if
    the file holds a candidate the store does not know as removed, or the store a
    candidate neither the file nor `added` describes."""
    in_file = {c.name: c for c in pool.candidates}
    unknown = [n for n in in_file if n not in models and n not in removed]
    missing = [n for n in models if n not in in_file and n not in added]
    if unknown or missing:
        raise RosterError(
            f"the store's pool {list(models)} is not the pool file's {list(in_file)}, and "
            "not by candidates changed at run time"
        )
    entries = [in_file.get(n) or CandidateSpec.model_validate(added[n]) for n in models]
    initial = pool.initial if pool.initial in models else None
    update: dict[str, Any] = {"candidates": entries, "initial": initial}
    if pool.mlflow_pool is not None:  # its candidates removed: it must not make them again
        gone = [c.name for c in pool.candidates if c._from_registry_pool and c.name not in models]
        exclude = [*pool.mlflow_pool.exclude, *gone]
        update["mlflow_pool"] = pool.mlflow_pool.model_copy(update={"exclude": exclude})
    return pool.model_copy(update=update)


def follow(
    pool_file: Path,
    models: Sequence[str],
    added: Mapping[str, Mapping[str, Any]],
    removed: Sequence[str],
) -> PoolSpec:
    """Make the pool file name the store's candidates (`followed`), writing it only when
    it differs; returns its contents."""
    with _file_lock:
        pool = read_pool_spec(pool_file)
        if [c.name for c in pool.candidates] == list(models):
            return pool
        wanted = followed(pool, models, added, removed)
        _replace_file(pool_file, wanted)
    return wanted


def classes_of(candidate: Candidate, features: FloatMatrix) -> npt.NDArray[np.int64]:
    """The candidate's class per row; -1 where its output is not finite (no label equals
    it, so such a row counts as a mistake, as in shadow evaluation)."""
    if len(features) == 0:
        return np.zeros(0, dtype=np.int64)
    return predicted_classes(candidate.class_probabilities(features))


def load(
    pool_file: Path, pool: PoolSpec, loaded: Sequence[Candidate], wanted: Sequence[str],
    lazy: bool = False,
) -> list[Candidate]:  # fmt: skip
    """The candidates `wanted` (the store's pool, in its order), reusing those loaded and
    loading the others as the pool file `pool` names them; RosterError if it does not.
    `lazy` (a bound on resident models): the others' places are checked, and their
    models loaded when a call needs them."""
    specs = {c.name: c for c in pool.candidates}
    if [c.name for c in pool.candidates] != list(wanted):
        raise RosterError(
            f"the store's pool {list(wanted)} is not the pool file's {list(specs)} "
            f"({pool_file}): every replica must see the same pool file (a shared volume on "
            "a cluster)"
        )
    by_name = {c.name: c for c in loaded}
    use_search_path(pool_file, pool)
    if lazy:
        for name in wanted:
            if name not in by_name:
                check_place(specs[name], pool_file, pool)
        return [by_name.get(n) or unloaded(n, pool) for n in wanted]
    return [by_name.get(n) or load_candidate(specs[n], pool_file, pool) for n in wanted]
