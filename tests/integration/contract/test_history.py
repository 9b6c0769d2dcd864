"""Round history and the label audit on every backend: what each round was, who gave
each label, kept for a bounded number of rounds, written once even when repeated."""

from __future__ import annotations

import numpy as np

from service.state.live import LiveState, new_op
from tests.integration.contract.conftest import Connect
from tests.integration.contract.test_live_state import NOW, TTL, queue_all, state


def label_all(live: LiveState, ids: list[str], by: str, now: float) -> None:
    for item_id in ids:
        result = live.label(new_op("label"), item_id, 1, now, TTL, by)
        assert result.outcome == "accepted", result


def test_two_rounds_are_listed_with_their_labels_and_who_gave_them(connect: Connect) -> None:
    live = state(connect, budget=7)
    queue_all(live, ["a1", "a2", "a3"])
    label_all(live, ["a1", "a2"], "alice", NOW + 1)
    label_all(live, ["a3"], "bob", NOW + 2)
    live.reconcile(0.0, None, NOW + 3)  # b and c predicted 1: one of them is served now
    assert live.start_round(new_op("round"), 4, NOW + 10) == 1
    queue_all(live, ["b1", "b2"], NOW + 11)
    label_all(live, ["b1"], "carol", NOW + 12)

    current, first = live.rounds(10)
    assert (first.number, current.number) == (0, 1)
    assert first.tally.closed and first.tally.ended_at == NOW + 10
    assert first.tally.started_at == NOW and current.tally.ended_at is None
    assert (first.tally.picker.labels, first.tally.picker.queries) == (3, 3)
    assert first.tally.picker.budget == 7 and current.tally.picker.budget == 4
    np.testing.assert_allclose(first.tally.picker.losses, (3.0, 0.0, 0.0))
    assert first.best == 1 and [s["round"] for s in first.swaps] == [0]
    assert current.swaps == [] and current.tally.picker.labels == 1

    assert [(e["item_id"], e["label"], e["by"], e["at"]) for e in live.audit(0, 100)] == [
        ("a1", 1, "alice", NOW + 1), ("a2", 1, "alice", NOW + 1), ("a3", 1, "bob", NOW + 2)]  # fmt: skip
    assert [(e["item_id"], e["by"]) for e in live.audit(1, 100)] == [("b1", "carol")]
    assert live.audit(2, 100) is None  # no such round
    assert [r.number for r in live.rounds(1)] == [1]


def test_a_repeated_label_is_audited_once(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, ["x"])
    op = new_op("label")
    for _ in range(3):  # the caller repeats after unclear outcomes, with the same op
        assert live.label(op, "x", 1, NOW, TTL, "alice").outcome == "accepted"
    assert live.label(new_op("label"), "x", 1, NOW, TTL, "bob").outcome == "duplicate"
    assert [e["by"] for e in live.audit(0, 100)] == ["alice"]


def test_only_the_newest_rounds_are_kept(connect: Connect) -> None:
    live = state(connect, rounds_kept=2, audit_cap=2)
    queue_all(live, ["r0a", "r0b", "r0c"])
    label_all(live, ["r0a", "r0b", "r0c"], "alice", NOW)
    assert [e["item_id"] for e in live.audit(0, 100)] == ["r0b", "r0c"]  # audit_cap 2
    live.start_round(new_op("round"), None, NOW + 1)
    assert [r.number for r in live.rounds(10)] == [1, 0]
    live.start_round(new_op("round"), None, NOW + 2)  # round 0 falls out of the newest 2
    assert [r.number for r in live.rounds(10)] == [2, 1]
    assert live.audit(0, 100) is None and live.audit(1, 100) == []
    assert live.backend.log("audit:0", 100) == []  # its audit log is gone too
