"""Lease renewal on every backend: a labeler keeps the items it still works on; items
that no longer wait for a label are not renewed."""

from __future__ import annotations

from service.state.live import new_op
from tests.integration.contract.conftest import Connect
from tests.integration.contract.test_live_state import NOW, TTL, queue_all, state


def test_renewed_items_stay_with_their_labeler(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, ["a", "b", "c"])
    assert {i.item_id for i in live.lease(3, NOW, 10.0, TTL)} == {"a", "b", "c"}
    # at NOW + 8 the labeler renews a and b for another 10 s; c's lease lapses at NOW + 10
    assert live.renew(new_op("renew"), ["a", "b"], NOW + 8, 10.0, TTL) == ["a", "b"]
    assert [i.item_id for i in live.lease(5, NOW + 11, 10.0, TTL)] == ["c"]
    assert {i.item_id for i in live.lease(5, NOW + 19, 10.0, TTL)} == {"a", "b"}


def test_labeled_expired_and_old_round_items_are_not_renewed(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, ["a", "b", "c"])
    live.lease(3, NOW, 10.0, TTL)
    assert live.label(new_op("label"), "a", 1, NOW + 1, TTL).outcome == "accepted"
    assert live.renew(new_op("renew"), ["a", "b", "never"], NOW + 2, 10.0, TTL) == ["b"]
    assert live.renew(new_op("renew"), ["b"], NOW + TTL + 1, 10.0, TTL) == []  # expired
    live.start_round(new_op("round"), None, NOW + 3)
    assert live.renew(new_op("renew"), ["c"], NOW + 4, 10.0, TTL) == []  # ended round
    assert live.lease(5, NOW + 30, 10.0, TTL) == []  # nothing leaked into the new round


def test_a_repeated_renewal_is_answered_the_same(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, ["a"])
    op = new_op("renew")
    assert live.renew(op, ["a"], NOW, 10.0, TTL) == ["a"]
    assert live.renew(op, ["a"], NOW, 10.0, TTL) == ["a"]
