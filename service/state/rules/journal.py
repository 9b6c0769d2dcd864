"""The round's journal: an outbox of the selection's history, kept in the store.

One point per label batch: the round's label count (the point's `step`), its queries, the
queue's depth, the posterior over the candidates (the `POSTERIOR_KEPT` with the most weight,
in a larger pool) and the model served, appended to
`journal:{round}` after the labels landed. The append is compare-and-set on the round's
tally and its op is named by the round and the step, so two replicas that record the same
moment write one point, and the steps of a journal only grow. Whatever reads the journal
(`service.tracking`, which writes it to MLflow) reads the store's truth, however long it was
away; the journal lives and is forgotten with its round."""

from __future__ import annotations

from typing import Any

from service.state.rules.documents import Selection, tally_key
from service.state.store.base import JOURNAL_PREFIX, Txn

POSTERIOR_KEPT = 50  # a point of a larger pool keeps the candidates with the most weight


def journal_key(round_number: int) -> str:
    return f"{JOURNAL_PREFIX}{round_number}"


def journal_point(current: Selection, queue_depth: int, now: float) -> dict[str, Any]:
    """The round as it stands: what one point of the journal holds."""
    names = current.model_names
    weights = current.weights()
    kept = sorted(range(len(names)), key=lambda m: -weights[m])[:POSTERIOR_KEPT]
    return {
        "step": current.picker.labels, "at": now, "round": current.picker.round,
        "labels": current.picker.labels, "queries": current.picker.queries,
        "queue_depth": queue_depth, "served": names[current.served],
        "best": names[current.best],
        "posterior": {names[m]: float(weights[m]) for m in sorted(kept)},
    }  # fmt: skip


def record_point(
    current: Selection, last_step: int | None, queue_depth: int, now: float
) -> Txn | None:
    """Append the round's point unless the journal has one at this label count already
    (or the round is closed: its last point was written when its last label landed)."""
    step = current.picker.labels
    if current.tally.closed or (last_step is not None and step <= last_step):
        return None
    round_number = current.picker.round
    point = journal_point(current, queue_depth, now)
    return Txn(f"journal:{round_number}:{step}",
               expect={tally_key(round_number): current.tally_version},
               append={journal_key(round_number): [point]}, result=point)  # fmt: skip
