"""Offline replay of the pool-based selectors.

Protocol: a realisation draws `stream_size` items without replacement; unlike the online
methods, a pool selector sees all of them at once (the stream of each realisation is the
pool, as in the label queue) and asks for labels one at a time, re-ranking the pool after
each. After `b` labels, for every budget b, it returns a model; a selector that finds
nothing left worth a label stops early and keeps its answer. Identification and the
accuracy gap are measured against the best accuracy on the realisation's items, as in
`picker.replay`. One pass of a realisation serves every budget, since a label's choice
never depends on the budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from picker.data import Pool
from picker.pooled import PoolSelector
from picker.replay import ProgressCallback, ReplayResult, draw_streams, identification
from picker.selectors import make_selector


def pool_replay(
    pool: Pool,
    method: str,
    budgets: Sequence[int],
    stream_size: int,
    runs: int,
    rng: np.random.Generator,
    param: float | None = None,
    on_step: ProgressCallback | None = None,
) -> list[ReplayResult]:
    """One ReplayResult per budget (ascending), each over the same `runs` realisations."""
    if not budgets or min(budgets) < 1:
        raise ValueError("budgets must be labels >= 1")
    ordered = sorted({int(b) for b in budgets})
    streams = draw_streams(pool.n_items, stream_size, runs, rng)
    errors = pool.errors()
    returned = np.zeros((runs, len(ordered)), dtype=np.int64)
    used = np.zeros((runs, len(ordered)), dtype=np.int64)
    stream_errors = np.zeros((runs, pool.n_models), dtype=np.int64)
    setting = None
    for run, items in enumerate(streams):
        selector = make_selector(method, pool.predictions[items], pool.n_classes, param)
        setting = selector.param
        stream_errors[run] = errors[items].sum(axis=0)
        returned[run], used[run] = _label_run(selector, pool.oracle[items], ordered, rng, on_step)
    results = []
    for column, budget in enumerate(ordered):
        identified, gap = identification(returned[:, column], stream_errors, stream_size)
        results.append(
            ReplayResult(
                method=method,
                param=setting,
                labels=float(used[:, column].mean()),
                identified=identified,
                gap=gap,
                runs=runs,
                evaluations=float(stream_size * pool.n_models),  # the whole pool, once
                budget=budget,
            )
        )
    return results


def _label_run(
    selector: PoolSelector,
    truth: np.ndarray,
    budgets: Sequence[int],
    rng: np.random.Generator,
    on_step: ProgressCallback | None,
) -> tuple[list[int], list[int]]:
    """One realisation: labels one at a time, as the selector asks, up to each budget in
    turn (ascending); the model it returns and the labels it used, per budget."""
    returned, used = [], []
    labels = 0
    for budget in budgets:
        while labels < budget:
            item = selector.choose(rng)
            if item is None:
                break
            selector.add_label(item, int(truth[item]))
            labels += 1
            if on_step is not None:
                on_step(1)
        returned.append(selector.best(rng))
        used.append(labels)
    return returned, used
