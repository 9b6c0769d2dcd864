"""What the state routes answer, built from the stored documents alone: every per-model
figure is named by the round's own candidate list (`Tally.model_names`), so history stays
right across candidates added and removed. `full` is what an admin sees; a labeler gets
no posterior, losses, step or best model (q could be worked out from them)."""

from __future__ import annotations

from collections.abc import Sequence

from service.http import schemas
from service.state.rules import RoundRecord, Selection


def selection_view(
    selection: Selection, full: bool, active: Sequence[int] | None = None
) -> schemas.Selection:
    picker, names = selection.picker, selection.tally.model_names(selection.model_names)
    served = selection.model_names[selection.served]
    shown = [selection.model_names[i] for i in active] if full and active is not None else None
    return schemas.Selection(
        round=picker.round, step=picker.step if full else None, queries=picker.queries,
        labels=picker.labels, label_budget=picker.budget,
        selector=selection.tally.selector,  # type: ignore[arg-type]
        posterior=dict(zip(names, selection.weights().tolist(), strict=True)) if full else None,
        losses=dict(zip(names, picker.losses, strict=True)) if full else None,
        best_model=names[selection.best] if full else None,
        served_model=served, selection_version=selection.version,
        swaps=[schemas.SwapRecord.model_validate(s) for s in selection.swaps],
        active_models=shown,
        eliminated_models=[e["model"] for e in selection.tally.eliminated] if full else None,
    )  # fmt: skip


def round_view(record: RoundRecord, current: Sequence[str]) -> schemas.RoundRecord:
    """One round of the history; `current` names the pool now (for rounds stored before
    rounds kept their own names)."""
    tally, picker = record.tally, record.tally.picker
    names = tally.model_names(current)
    return schemas.RoundRecord(
        round=record.number, started_at=tally.started_at, ended_at=tally.ended_at,
        label_budget=picker.budget, step=picker.step,
        selector=tally.selector,  # type: ignore[arg-type]
        queries=picker.queries, labels=picker.labels,
        posterior=dict(zip(names, tally.weights().tolist(), strict=True)),
        best_model=names[record.best],
        swaps=[schemas.SwapRecord.model_validate(s) for s in record.swaps],
        started_by=None if tally.started_by is None else dict(tally.started_by),
        eliminated=[schemas.EliminationRecord.model_validate(e) for e in tally.eliminated],
    )  # fmt: skip
