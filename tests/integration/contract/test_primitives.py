"""The storage contract, primitive by primitive, on every backend."""

from __future__ import annotations

import time

import pytest

from service.state.store.base import Backend, Put, Retention, Txn
from tests.integration.contract.conftest import Connect, concurrently


def test_documents_are_versioned_and_compare_and_set(backend: Backend) -> None:
    assert backend.commit(Txn("o1", expect={"a": 0}, put={"a": Put({"x": 1})})).status == "applied"
    assert backend.read(["a", "missing"]) == {"a": backend.read(["a"])["a"]}
    assert backend.read(["a"])["a"].version == 1
    stale = Txn("o2", expect={"a": 0}, put={"a": Put({"x": 2})})
    assert backend.commit(stale).status == "conflict"
    assert backend.read(["a"])["a"].value == {"x": 1}
    assert backend.commit(Txn("o3", expect={"a": 1}, put={"a": Put({"x": 3})})).status == "applied"
    doc = backend.read(["a"])["a"]
    assert (doc.version, doc.value) == (2, {"x": 3})
    assert backend.commit(Txn("o4", expect={"a": 2}, put={"a": Put(None)})).status == "applied"
    assert backend.read(["a"]) == {}


def test_a_repeated_op_is_a_no_op_that_returns_the_first_result(backend: Backend) -> None:
    first = backend.commit(Txn("same", add={"c": {"n": 1.0}}, result={"answer": 7}))
    again = backend.commit(Txn("same", add={"c": {"n": 1.0}}, result={"answer": 8}))
    assert (first.status, first.result) == ("applied", {"answer": 7})
    assert (again.status, again.result) == ("replayed", {"answer": 7})
    assert backend.counters("c") == {"n": 1.0}


def test_a_conflict_records_nothing_so_the_op_can_be_retried(backend: Backend) -> None:
    backend.commit(Txn("make", put={"a": Put({})}))
    assert backend.commit(Txn("retry", expect={"a": 9}, add={"c": {"n": 1.0}})).status == "conflict"
    assert backend.commit(Txn("retry", expect={"a": 1}, add={"c": {"n": 1.0}})).status == "applied"
    assert backend.counters("c") == {"n": 1.0}


def test_counters_add_up(backend: Backend) -> None:
    backend.commit(Txn("a", add={"c": {"x": 1.0, "y": 2.5}}))
    backend.commit(Txn("b", add={"c": {"x": 2.0}}))
    assert backend.counters("c") == {"x": 3.0, "y": 2.5}
    assert backend.counters("none") == {}


def test_queue_take_is_a_visibility_timeout(backend: Backend) -> None:
    backend.commit(Txn("p", push={"q": {"i1": 10.0, "i2": 11.0, "i3": 12.0, "i4": 5.0}}))
    # i4 is below the window (too old), so it is never taken
    assert backend.take("q", 9.0, 20.0, 2, 100.0) == ["i1", "i2"]
    assert backend.take("q", 9.0, 20.0, 5, 100.0) == ["i3"]
    assert backend.take("q", 9.0, 20.0, 5, 100.0) == []
    assert backend.take("q", 9.0, 100.0, 5, 200.0) == ["i1", "i2", "i3"]
    assert backend.count("q", 9.0) == 3 and backend.count("q", 0.0) == 4
    backend.commit(Txn("r", pull={"q": ["i2", "never-there"]}))
    assert backend.count("q", 0.0) == 3
    assert backend.trim("q", below=150.0, limit=1) == 1  # i4 (5.0) goes first
    assert backend.trim("q", below=150.0, limit=10) == 0  # the rest are at 200
    backend.commit(Txn("d", drop=["q"]))
    assert backend.count("q", 0.0) == 0 and backend.take("q", 0, 1e9, 5, 0) == []


def test_claim_rescores_only_the_named_members_within_the_window(backend: Backend) -> None:
    backend.commit(Txn("p", push={"q": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 50.0}}))
    # in the order asked, unknown and out-of-window members skipped, a repeat once
    assert backend.claim("q", ["c", "x", "d", "a", "c"], 0.0, 10.0, 100.0) == ["c", "a"]
    assert backend.claim("q", ["a", "b", "c"], 0.0, 10.0, 100.0) == ["b"]  # a, c now held
    assert backend.count("q", 100.0, 100.0) == 3 and backend.members("q", 1) == ["d"]
    assert (
        backend.claim("q", [], 0.0, 10.0, 1.0) == [] and backend.claim("none", ["a"], 0, 1, 2) == []
    )


def test_concurrent_claims_hand_each_member_to_one_caller(backend: Backend) -> None:
    backend.commit(Txn("p", push={"q": {f"i{n}": 1.0 for n in range(40)}}))
    wanted = [f"i{n}" for n in range(40)]

    def claimer(_: int) -> list[str]:
        return [m for start in range(0, 40, 5)
                for m in backend.claim("q", wanted[start : start + 5], 0.0, 10.0, 99.0)]  # fmt: skip

    everything = [m for claimed in concurrently(claimer, 4) for m in claimed]
    assert sorted(everything) == sorted(wanted)  # every member once, none twice


def test_count_takes_a_score_window_and_members_read_without_changing(backend: Backend) -> None:
    backend.commit(Txn("p", push={"q": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 3.0, "e": 9.0}}))
    assert backend.count("q", 2.0, 3.0) == 3  # both ends included
    assert backend.count("q", 0.0, 0.5) == 0 and backend.count("q", 4.0, 1.0) == 0
    assert backend.count("q", 3.0) == 3  # no upper end: everything from 3.0 up
    assert backend.members("q", 3) == ["a", "b", "c"]
    assert backend.members("q", 100) == ["a", "b", "c", "d", "e"]
    assert backend.members("q", 0) == [] and backend.members("none", 5) == []
    assert backend.take("q", 0.0, 10.0, 1, 50.0) == ["a"]  # members changed nothing
    assert backend.members("q", 1) == ["b"]


def test_trim_is_bounded_per_call(backend: Backend) -> None:
    backend.commit(Txn("p", push={"q": {f"i{n}": float(n) for n in range(25)}}))
    assert [backend.trim("q", below=20.0, limit=8) for _ in range(4)] == [8, 8, 4, 0]
    assert backend.count("q", 0.0) == 5


def test_log_keeps_the_newest_records(connect: Connect) -> None:
    backend = connect(Retention(log_cap=3))
    for n in range(5):
        backend.commit(Txn(f"l{n}", append={"log": [{"n": n}]}))
    assert backend.log("log", 10) == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert backend.log("log", 2) == [{"n": 3}, {"n": 4}]
    assert backend.log("log", 0) == []


def test_documents_and_op_records_expire(connect: Connect) -> None:
    backend = connect(Retention(op_s=1.0))
    now = time.time()
    backend.commit(Txn("once", put={"short": Put({"v": 1}, now + 1.0), "long": Put({"v": 2})}))
    assert set(backend.read(["short", "long"])) == {"short", "long"}
    time.sleep(1.3)
    backend.purge(100)
    assert set(backend.read(["short", "long"])) == {"long"}
    # an expired document reads as absent, so expecting version 0 creates it afresh
    assert (
        backend.commit(Txn("again", expect={"short": 0}, put={"short": Put({"v": 3})})).status
        == "applied"
    )
    assert backend.read(["short"])["short"].version == 1
    # the op record is gone too, so the same op applies again
    assert backend.commit(Txn("once", add={"c": {"n": 1.0}})).status == "applied"


@pytest.mark.parametrize(
    "key", ["a:b", "{other}", "x}{y", "é-ü", "k" * 200, "with space", "item:1:2"]
)
def test_any_key_string_round_trips(backend: Backend, key: str) -> None:
    backend.commit(Txn("k", put={key: Put({"key": key})}, push={"q": {key: 1.0}}))
    assert backend.read([key])[key].value == {"key": key}
    assert backend.take("q", 0.0, 2.0, 5, 3.0) == [key]
