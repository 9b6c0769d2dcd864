"""The large-pool mode's active set (`active_models`): which candidates a shadow batch
runs, and the query decisions over them, as pure functions of the stored selection.

The active set is decided from what every replica reads alike (the round's losses, its
number, the pool's names), so all replicas run the same set and a restarted replica
finds it again: nothing about it needs storing. Its rule and the query probability are
the picker's (`picker.large_pool`): the `size` lowest losses, ties in an order fixed per
round; q over the active set, floored at eta_t on every item, so that every candidate's
loss stays unbiased. The served model, and the model the round's drift monitor watches,
are always in the set (the served model stays warm, and the monitor's column is
always evaluated)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from picker import draw_queries, learning_rates, posterior
from picker.large_pool import active_query_probability, active_set
from service.state.rules.documents import Selection
from service.state.rules.elimination import in_round_columns


def round_order(
    models: Sequence[str], round_number: int, priors: Mapping[str, float] | None = None
) -> npt.NDArray[np.float64]:
    """Each candidate's tie order in [0, 1) for this round, the same on every replica:
    candidates with a `prior` (the pool file's) first, the highest first; then the rest,
    in an order drawn per round from their names. Before the round's first label every
    loss is 0, so this order is the round's first active set (the recall)."""
    priors = priors or {}
    digests = [hashlib.blake2b(f"{round_number}:{name}".encode(), digest_size=8).digest()
               for name in models]  # fmt: skip
    keys = [(name not in priors, -priors.get(name, 0.0), int.from_bytes(digest, "big"))
            for name, digest in zip(models, digests, strict=True)]  # fmt: skip
    rank = sorted(range(len(models)), key=lambda i: keys[i])
    order = np.empty(len(models))
    order[rank] = np.arange(len(models)) / len(models)
    return order


def active_columns(
    selection: Selection, size: int | None, priors: Mapping[str, float] | None = None
) -> tuple[int, ...] | None:
    """The candidates a shadow batch runs now, in pool order; None for every candidate
    (no `size`, or a pool of at most `size`, with no candidate eliminated; or a
    pool-based round, which ranks its pool by every candidate's predictions). Candidates
    the elimination test took out of the round are never in it. `priors`: the pool
    file's, by candidate name."""
    models = selection.meta.models
    if selection.pooled:
        return None
    out = selection.tally.out()
    left = len(models) - int(out.sum())
    if size is None or left <= size:
        return None if not out.any() else in_round_columns(selection.tally)
    losses = selection.tally.ranked_losses()
    order = round_order(models, selection.picker.round, priors)
    chosen = set(active_set(losses[None, :], size, order[None, :])[0].tolist())
    needed = {selection.served}
    if selection.tally.monitor is not None:
        needed.add(selection.tally.monitor.model)
    needed = {i for i in needed if not out[i]}
    missing = sorted(needed - chosen)
    # make room for them by the members with the highest losses (last in the tie order)
    spare = sorted(chosen - needed, key=lambda i: (losses[i], order[i]), reverse=True)
    chosen.difference_update(spare[: len(missing)])
    chosen.update(missing)
    return tuple(sorted(chosen))


def label_check_columns(selection: Selection, columns: Sequence[int]) -> tuple[int, ...]:
    """The candidates the items a batch queues run through before a labeler sees them:
    those still in the round outside the active `columns`."""
    active = set(columns)
    return tuple(i for i in in_round_columns(selection.tally) if i not in active)


def decide_active(
    selection: Selection,
    predictions: npt.NDArray[np.int64],
    columns: Sequence[int],
    gamma: float,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """q and the coin for each row of a batch whose `predictions` are the active
    `columns`' only: the rows are the steps after the selection's, as in
    `picker.decide_queries`, and the posterior is the whole pool's, restricted to the
    active set (`picker.large_pool.active_query_probability` renormalises it)."""
    picker, models = selection.picker, len(selection.meta.models)
    steps = picker.step + 1 + np.arange(len(predictions))
    eta = learning_rates(steps, models)
    losses = np.broadcast_to(selection.tally.ranked_losses(), (len(predictions), models))
    weights = posterior(losses, eta)[:, list(columns)]
    q = active_query_probability(predictions, weights, gamma, eta)
    return q, draw_queries(q, rng)
