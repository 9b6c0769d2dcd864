"""What an adversarial review broke, on every backend: leases that hold, Idempotency-Keys
bound to one request, round history named by each round's own candidates, and a pool
file that follows the store (after a crash between the two writes too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from service.http.views import round_view, selection_view
from service.models import roster
from service.models.roster import RosterError
from service.state.follow import follow_store
from service.state.live import LiveState, new_op
from service.state.rules import KeyReusedError
from tests.integration.contract.conftest import Connect
from tests.integration.contract.test_live_state import MODELS, NOW, TTL, queue_all, state

LEASE = 60.0


def test_a_label_from_someone_who_does_not_hold_the_lease_is_not_applied(
    connect: Connect,
) -> None:
    """alice leases; bob's label is 'leased' and changes nothing; alice's then counts."""
    live = state(connect)
    queue_all(live, ["a"])
    assert len(live.lease(1, NOW, LEASE, TTL, by="alice")) == 1
    before = live.selection().picker
    bob = live.label(new_op("label"), "a", 1, NOW + 1, TTL, by="bob")
    assert bob.outcome == "leased"
    after = live.selection().picker
    assert (after.labels, after.losses) == (before.labels, before.losses)
    assert live.label(new_op("label"), "a", 1, NOW + 2, TTL, by="alice").outcome == "accepted"
    assert live.selection().picker.labels == 1


def test_after_a_lease_ends_the_new_holder_labels_and_the_old_one_is_told(
    connect: Connect,
) -> None:
    live = state(connect)
    queue_all(live, ["a"])
    live.lease(1, NOW, LEASE, TTL, by="alice")
    assert [i.item_id for i in live.lease(1, NOW + LEASE + 1, LEASE, TTL, by="bob")] == ["a"]
    late = live.label(new_op("label"), "a", 0, NOW + LEASE + 2, TTL, by="alice")
    assert late.outcome == "leased"
    assert live.label(new_op("label"), "a", 2, NOW + LEASE + 3, TTL, by="bob").outcome == "accepted"
    # once no lease holds an item, anyone's label counts (the first)
    queue_all(live, ["b"])
    live.lease(1, NOW, LEASE, TTL, by="alice")
    assert live.label(new_op("label"), "b", 1, NOW + LEASE + 5, TTL, by="bob").outcome == "accepted"


def test_only_the_holder_renews(connect: Connect) -> None:
    live = state(connect)
    queue_all(live, ["a", "b"])
    live.lease(2, NOW, LEASE, TTL, by="alice")
    assert live.renew(new_op("renew"), ["a", "b"], NOW + 1, LEASE, TTL, by="bob") == []
    assert live.renew(new_op("renew"), ["a"], NOW + 1, LEASE, TTL, by="alice") == ["a"]
    # b's lease ran out and nobody else took it: whoever renews it now holds it
    assert live.renew(new_op("renew"), ["b"], NOW + LEASE + 1, LEASE, TTL, by="bob") == ["b"]
    assert live.label(new_op("label"), "b", 1, NOW + LEASE + 2, TTL, by="alice").outcome == "leased"


def test_an_idempotency_key_is_bound_to_its_first_request(connect: Connect) -> None:
    live = state(connect)
    assert live.bind_key("feedback", "K", "digest-1", NOW) is None
    assert live.bind_key("feedback", "K", "digest-1", NOW) is None  # the same request again
    with pytest.raises(KeyReusedError, match="another request"):
        live.bind_key("feedback", "K", "digest-2", NOW)
    assert live.bind_key("rounds", "K", "digest-2", NOW) is None  # keys are per route


def test_an_added_candidate_keeps_its_answer_with_its_key(connect: Connect) -> None:
    live = state(connect)
    live.bind_key("candidates", "K", "d", NOW)
    entry = {"name": "d", "sklearn": "d.joblib"}
    answer = live.add_candidate("add:K", entry, lambda x: np.zeros(len(x)), NOW, key="K")
    assert answer["candidates"] == [*MODELS, "d"] and answer["served_model"] == "a"
    assert live.bind_key("candidates", "K", "d", NOW) == answer
    with pytest.raises(KeyReusedError):
        live.bind_key("candidates", "K", "another body", NOW)
    assert list(live.selection().meta.models) == [*MODELS, "d"]


def test_round_history_keeps_each_rounds_own_names(connect: Connect) -> None:
    """Round 0 had a, b, c; b is removed and d added in round 1: round 0's record still
    names a, b, c (its best is b), round 1's a, c, d."""
    live = state(connect)
    queue_all(live, ["i"])
    live.lease(1, NOW, LEASE, TTL)
    live.label(new_op("label"), "i", 1, NOW, TTL)  # predictions [0, 1, 1]: b and c right
    live.start_round(new_op("round"), None, NOW)
    live.remove_candidate(new_op("remove"), "b", NOW)
    live.add_candidate(new_op("add"), {"name": "d", "sklearn": "d.joblib"},
                       lambda x: np.zeros(len(x)), NOW)  # fmt: skip
    current, old = (round_view(r, ["a", "c", "d"]) for r in live.rounds(2))
    assert list(old.posterior) == ["a", "b", "c"] and old.best_model == "b"
    assert list(current.posterior) == ["a", "c", "d"]
    view = selection_view(live.selection(), full=True)
    assert list(view.posterior or {}) == list(view.losses or {}) == ["a", "c", "d"]


def write_pool(folder: Path, names: list[str]) -> Path:
    path = folder / "pool.yaml"
    entries = [{"name": n, "sklearn": f"{n}.joblib"} for n in names]
    path.write_text(yaml.safe_dump({"n_features": 2, "classes": 3, "candidates": entries}))
    return path


def file_names(path: Path) -> list[str]:
    return [c["name"] for c in yaml.safe_load(path.read_text())["candidates"]]


def test_the_pool_file_catches_up_after_a_crash_between_store_and_file(
    connect: Connect, tmp_path: Path
) -> None:
    """The store took an add and a removal; the process stopped before the file was
    written. Start-up (follow_store) brings the file to the store's pool."""
    pool_file = write_pool(tmp_path, MODELS)
    live = state(connect)
    live.add_candidate(new_op("add"), {"name": "d", "sklearn": "d.joblib"},
                       lambda x: np.zeros(len(x)), NOW)  # fmt: skip
    live.remove_candidate(new_op("remove"), "a", NOW)
    follow_store(connect(), pool_file)
    assert file_names(pool_file) == ["b", "c", "d"]
    assert yaml.safe_load(pool_file.read_text())["candidates"][-1]["sklearn"] == "d.joblib"
    LiveState(connect()).initialise(file_names(pool_file), 0, None, NOW)  # the pools agree


def test_an_operators_edit_of_the_pool_file_is_not_overwritten(
    connect: Connect, tmp_path: Path
) -> None:
    pool_file = write_pool(tmp_path, [*MODELS, "hand-added"])
    state(connect)
    follow_store(connect(), pool_file)
    assert file_names(pool_file) == [*MODELS, "hand-added"]
    with pytest.raises(RosterError, match="not by candidates changed at run time"):
        roster.follow(pool_file, MODELS, {}, ())


def test_a_pool_keeps_two_candidates_and_names_are_unique(connect: Connect) -> None:
    live = state(connect)
    with pytest.raises(RosterError, match="already in the pool"):
        live.add_candidate(new_op("add"), {"name": "a", "sklearn": "x"},
                           lambda x: np.zeros(len(x)), NOW)  # fmt: skip
    live.remove_candidate(new_op("remove"), "a", NOW)
    with pytest.raises(RosterError, match="at least two"):
        live.remove_candidate(new_op("remove"), "b", NOW)
