"""One contract, every store: the embedded SQLite file and a real Redis server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from picker import loss_increments
from service.store import QueuedItem, StateStore, StoreError
from service.store.redis_store import RedisStore
from service.store.sqlite import SQLiteStore
from tests.redis_server import RedisServer

MODELS = ["a", "b", "c"]
TTL = 3600.0


@pytest.fixture(params=["embedded", "redis"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator:  # type: ignore[type-arg]
    namespace = uuid.uuid4().hex
    opened: list[StateStore] = []

    def make() -> StateStore:
        if request.param == "embedded":
            store: StateStore = SQLiteStore(tmp_path / "state.sqlite3")
        else:
            store = RedisStore.from_url(redis_server.url, namespace)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store) -> StateStore:  # type: ignore[no-untyped-def]
    store: StateStore = make_store()
    store.initialise(MODELS, served=0, budget=None)
    return store


def queued(item_id: str, round_number: int = 0, now: float = 1000.0) -> QueuedItem:
    return QueuedItem(item_id, round_number, 0.5, [0, 1, 1], [1.0, 2.0], now)


def test_initial_selection(store: StateStore) -> None:
    selection = store.selection()
    assert selection.picker.losses == (0.0, 0.0, 0.0)
    assert (selection.served, selection.version, selection.model_names) == (0, 0, MODELS)
    assert selection.picker.budget is None and selection.swaps == []


def test_initialise_is_idempotent_and_refuses_another_pool(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    store.initialise(MODELS, served=1, budget=5)
    store.advance(3)
    store.initialise(MODELS, served=2, budget=9)
    assert store.selection().picker.step == 3 and store.selection().served == 1
    with pytest.raises(StoreError, match="holds state for the pool"):
        store.initialise(["x", "y"], served=0, budget=None)


def test_advance_returns_state_before(store: StateStore) -> None:
    assert store.advance(4).step == 0
    assert store.advance(2).step == 4
    assert store.selection().picker.step == 6


def test_enqueue_respects_budget_and_round(store: StateStore) -> None:
    assert store.enqueue(0, [queued("i1"), queued("i2"), queued("i3")], budget=2) == 2
    assert store.enqueue(0, [queued("i4")], budget=2) == 0
    assert store.enqueue(7, [queued("i5", 7)], budget=None) == 0
    assert store.selection().picker.queries == 2
    assert store.item("i3") is None and store.item("i1") is not None


def test_lease_hands_each_item_to_one_labeler_until_it_expires(store: StateStore) -> None:
    store.enqueue(0, [queued(f"i{n}") for n in range(5)], budget=None)
    first = store.lease(3, now=1001.0, lease_s=60.0, ttl_s=TTL)
    second = store.lease(10, now=1002.0, lease_s=60.0, ttl_s=TTL)
    assert [i.item_id for i in first] == ["i0", "i1", "i2"]
    assert [i.item_id for i in second] == ["i3", "i4"]
    assert first[0].predictions == [0, 1, 1] and first[0].instance == [1.0, 2.0]
    assert store.lease(10, now=1003.0, lease_s=60.0, ttl_s=TTL) == []
    again = store.lease(10, now=1061.5, lease_s=60.0, ttl_s=TTL)
    assert sorted(i.item_id for i in again) == ["i0", "i1", "i2"]
    assert store.queue_depth(now=1061.5, ttl_s=TTL) == 5


def test_commit_outcomes(store: StateStore) -> None:
    store.enqueue(0, [queued("i1")], budget=None)
    increments = loss_increments([0, 1, 1], 1, 0.5)
    assert store.commit_label("nope", 0, increments, 1001.0, TTL) == "unknown"
    assert store.commit_label("i1", 0, increments, 1001.0, TTL) == "accepted"
    assert store.commit_label("i1", 0, increments, 1001.0, TTL) == "duplicate"
    selection = store.selection()
    assert selection.picker.losses == (2.0, 0.0, 0.0) and selection.picker.labels == 1
    assert store.queue_depth(1001.0, TTL) == 0
    assert store.lease(5, 1001.0, 60.0, TTL) == []


def test_expired_items_are_unknown(store: StateStore) -> None:
    store.enqueue(0, [queued("old", now=0.0)], budget=None)
    assert store.lease(5, now=TTL + 1.0, lease_s=60.0, ttl_s=TTL) == []
    assert store.commit_label("old", 0, [1.0, 0.0, 0.0], TTL + 1.0, TTL) == "unknown"
    assert store.selection().picker.losses == (0.0, 0.0, 0.0)


def test_new_round_resets_and_drops_the_queue(store: StateStore) -> None:
    store.enqueue(0, [queued("i1"), queued("i2")], budget=None)
    store.commit_label("i1", 0, [1.0, 0.0, 0.0], 1001.0, TTL)
    store.advance(10)
    assert store.start_round(budget=4) == 1
    picker = store.selection().picker
    assert (picker.losses, picker.step, picker.labels, picker.queries) == ((0.0,) * 3, 0, 0, 0)
    assert picker.round == 1 and picker.budget == 4
    assert store.commit_label("i2", 0, [1.0, 0.0, 0.0], 1001.0, TTL) == "unknown"
    assert store.lease(5, 1001.0, 60.0, TTL) == []


def test_swap_is_compare_and_set(store: StateStore) -> None:
    assert store.swap(0, 2, {"from_model": "a", "to_model": "c"})
    assert not store.swap(0, 1, {"from_model": "a", "to_model": "b"})
    selection = store.selection()
    assert (selection.served, selection.version) == (2, 1)
    assert selection.swaps == [{"from_model": "a", "to_model": "c"}]


def test_counters_add_up(store: StateStore) -> None:
    store.add_counters({"x": 1.0, "y": 2.5})
    store.add_counters({"x": 2.0})
    assert store.counters() == {"x": 3.0, "y": 2.5}


def test_concurrent_writers_lose_nothing_and_count_nothing_twice(make_store) -> None:  # type: ignore[no-untyped-def]
    """Four writers, each with its own connection, post every label (so each twice)."""
    setup = make_store()
    setup.initialise(MODELS, served=0, budget=None)
    rng = np.random.default_rng(8)
    items = [
        QueuedItem(
            f"i{n}", 0, float(rng.uniform(0.1, 1)), rng.integers(0, 3, 3).tolist(), [0.0], 1000.0
        )
        for n in range(60)
    ]
    setup.enqueue(0, items, budget=None)
    labels = rng.integers(0, 3, len(items))
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(order: list[int]) -> None:
        store = make_store()
        for n in order:
            item = items[n]
            result = store.commit_label(
                item.item_id,
                0,
                loss_increments(item.predictions, int(labels[n]), item.q),
                1001.0,
                TTL,
            )
            with lock:
                outcomes.append(result)

    orders = [
        list(range(60)),
        list(range(59, -1, -1)),
        list(range(0, 60, 2)) + list(range(1, 60, 2)),
        list(range(60)),
    ]
    threads = [threading.Thread(target=writer, args=(o,)) for o in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("accepted") == 60 and outcomes.count("duplicate") == 180
    expected = sum(
        loss_increments(i.predictions, int(y), i.q) for i, y in zip(items, labels, strict=True)
    )
    selection = setup.selection()
    np.testing.assert_allclose(selection.picker.losses, expected, rtol=1e-12)
    assert selection.picker.labels == 60


def test_concurrent_advances_count_every_item(make_store) -> None:  # type: ignore[no-untyped-def]
    setup = make_store()
    setup.initialise(MODELS, served=0, budget=None)

    def writer() -> None:
        store = make_store()
        for _ in range(50):
            store.advance(2)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert setup.selection().picker.step == 400


def test_state_survives_reopening(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    store.initialise(MODELS, served=0, budget=None)
    store.enqueue(0, [queued("i1"), queued("i2")], budget=None)
    store.commit_label("i1", 0, [2.0, 0.0, 0.0], 1001.0, TTL)
    store.close()
    reopened = make_store()
    assert reopened.selection().picker.losses == (2.0, 0.0, 0.0)
    assert [i.item_id for i in reopened.lease(5, 1001.0, 60.0, TTL)] == ["i2"]


def test_redis_restart_keeps_acknowledged_state(tmp_path: Path) -> None:
    """Kill -9 the server right after acknowledged writes; restart it on the same files."""
    server = RedisServer(tmp_path / "redis-restart")
    server.start()
    try:
        store = RedisStore.from_url(server.url, "restart")
        store.initialise(MODELS, served=0, budget=None)
        store.enqueue(0, [queued("i1"), queued("i2")], budget=None)
        assert store.commit_label("i1", 0, [2.0, 0.0, 1.0], 1001.0, TTL) == "accepted"
        assert store.swap(0, 2, {"to_model": "c"})
        server.stop(kill=True)
        with pytest.raises(StoreError):
            store.selection()
        server.start()
        selection = store.selection()  # the same client reconnects by itself
        assert selection.picker.losses == (2.0, 0.0, 1.0) and selection.served == 2
        assert [i.item_id for i in store.lease(5, 1001.0, 60.0, TTL)] == ["i2"]
        assert store.commit_label("i1", 0, [2.0, 0.0, 1.0], 1001.0, TTL) == "duplicate"
    finally:
        server.stop()


def test_redis_unreachable_is_a_store_error() -> None:
    store = RedisStore(redis.Redis(port=1, socket_connect_timeout=0.2))
    with pytest.raises(StoreError, match="redis"):
        store.selection()


def test_selection_returns_the_most_recent_swaps(store: StateStore) -> None:
    from service.store.base import RECENT_SWAPS

    for version in range(RECENT_SWAPS + 5):
        assert store.swap(version, version % 3, {"n": version})
    swaps = store.selection().swaps
    assert len(swaps) == RECENT_SWAPS
    assert swaps[0] == {"n": 5} and swaps[-1] == {"n": RECENT_SWAPS + 4}
    assert store.selection().version == RECENT_SWAPS + 5


def test_old_item_records_are_purged(store: StateStore) -> None:
    from service.store.base import ITEM_RETENTION_S

    store.enqueue(0, [queued("old", now=0.0)], budget=None)
    store.commit_label("old", 0, [1.0, 0.0, 0.0], 1.0, TTL)
    store.lease(5, now=ITEM_RETENTION_S + 10.0, lease_s=60.0, ttl_s=TTL)
    if isinstance(store, SQLiteStore):  # Redis expires the key itself (EXPIRE)
        assert store.item("old") is None
    assert store.selection().picker.labels == 1
