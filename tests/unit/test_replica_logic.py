"""Labeling, shadow and swap logic above the store, on the in-memory backend: no Ray, no
processes. Faults are injected by a wrapper that fails chosen commits, either before they
apply (the store was down) or after (the answer was lost: an ambiguous outcome)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.config.knobs import RuntimeKnobs
from service.http.labels import apply_labels
from service.models.candidates import NO_CLASS
from service.replica.loops import ReplicaRuntime
from service.replica.shadow import ShadowEvaluator
from service.state.live import LabelResult, LiveState, new_op
from service.state.rules import Batch
from service.state.store.base import Committed, StoreError, Txn
from service.state.store.memory import MemoryBackend

TTL = 3600.0
NOW = 1_000.0


class FaultyBackend(MemoryBackend):
    """Fails the next commits whose op starts with a prefix: `lost` ones are applied first."""

    def __init__(self, clock: Callable[[], float] = lambda: NOW) -> None:
        super().__init__(clock=clock)
        self.faults: list[tuple[str, bool]] = []

    def fail(self, prefix: str, lost_answer: bool) -> None:
        self.faults.append((prefix, lost_answer))

    def commit(self, txn: Txn) -> Committed:
        for fault in self.faults:
            prefix, lost_answer = fault
            if txn.op.startswith(prefix):
                self.faults.remove(fault)
                if lost_answer:
                    super().commit(txn)
                raise StoreError("injected", ambiguous=lost_answer)
        return super().commit(txn)


def loaded_state(
    n_items: int = 6, clock: Callable[[], float] = lambda: NOW
) -> tuple[LiveState, FaultyBackend, list[str]]:
    backend = FaultyBackend(clock)
    live = LiveState(backend)
    live.initialise(["a", "b", "c"], served=0, budget=None, now=NOW)
    ids = [f"i{n}" for n in range(n_items)]
    if ids:
        batch = Batch(ids, np.array([[0, 1, 1]] * n_items), np.zeros((n_items, 1)))
        live.observe(new_op("t"), batch, 1e6, np.random.default_rng(0), NOW)
    return live, backend, ids


def test_a_request_repeated_after_a_lost_answer_is_told_the_truth() -> None:
    live, backend, ids = loaded_state()
    labels = [(i, 1) for i in ids[:3]]
    backend.fail("label:", lost_answer=False)  # fails the first label outright
    done: list[LabelResult] = []
    with pytest.raises(StoreError):
        apply_labels(live, labels, "key-1", NOW, TTL, done)
    assert done == []
    backend.fail("label:key-1:i1", lost_answer=True)  # i1 applied, its answer lost
    done = []
    with pytest.raises(StoreError):
        apply_labels(live, labels, "key-1", NOW, TTL, done)
    assert [r.outcome for r in done] == ["accepted"]
    done = []  # the client repeats the whole request with the same key
    apply_labels(live, labels, "key-1", NOW, TTL, done)
    assert [r.outcome for r in done] == ["accepted"] * 3
    assert live.selection().picker.labels == 3
    np.testing.assert_allclose(live.selection().picker.losses, (3.0, 0.0, 0.0))
    other: list[LabelResult] = []  # another request (another key) is a duplicate
    apply_labels(live, labels[:1], "key-2", NOW, TTL, other)
    assert other[0].outcome == "duplicate"
    # the label whose answer was lost is counted once, like the others
    assert live.counters()["labels|accepted"] == 3.0


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_failed_swap_step_is_made_by_the_refresh() -> None:
    live, backend, ids = loaded_state()
    for item_id in ids:  # b and c are right, a (served) is wrong
        live.label(new_op("label"), item_id, 1, NOW, TTL)
    backend.fail("swap:", lost_answer=False)

    async def scenario() -> tuple[int, int]:
        runtime = ReplicaRuntime(live, refresh_s=0.2)
        with pytest.raises(StoreError):
            await runtime.reconcile(trigger=ids[-1])  # the swap step of the feedback fails
        await runtime.refresh()  # the timer's next tick
        assert runtime.selection is not None
        return runtime.selection.served, runtime.selection.best

    served, best = run(scenario())
    assert served == best == 1
    assert live.selection().version == 1 and live.counters()["swaps"] == 1.0


def test_counter_flushes_count_once_through_lost_answers_and_outages() -> None:
    live, backend, _ = loaded_state()

    async def scenario() -> None:
        runtime = ReplicaRuntime(live, refresh_s=0.2)
        runtime.counters.inc("requests", "a", value=2)
        backend.fail("counters:", lost_answer=True)
        with pytest.raises(StoreError):
            await runtime.flush()
        runtime.counters.inc("requests", "a", value=5)  # counted while the batch is pending
        backend.fail("counters:", lost_answer=False)
        with pytest.raises(StoreError):
            await runtime.flush()
        await runtime.flush()  # the pending batch: its repeat is a no-op
        await runtime.flush()  # then the counts gathered meanwhile

    run(scenario())
    counted = live.counters()
    assert (counted["requests|a"], counted["errors|store"]) == (7.0, 2.0)  # 2: the failures


class FakeCandidates:
    """Stands in for the Candidates handle: `shadow.remote` returns fixed predictions."""

    def __init__(self, predictions: np.ndarray) -> None:
        async def remote(request: tuple[np.ndarray, object]) -> np.ndarray:
            return predictions[: len(request[0])]

        self.shadow = type("Method", (), {"remote": staticmethod(remote)})()


def test_shadow_counts_non_finite_outputs_as_faults_and_the_model_wrong() -> None:
    live, _, _ = loaded_state(0, clock=time.time)
    predictions = np.array([[0, NO_CLASS, 1]] * 4)

    async def scenario() -> ReplicaRuntime:
        runtime = ReplicaRuntime(live, refresh_s=0.2)
        shadow = ShadowEvaluator(FakeCandidates(predictions), live, runtime.run_store,
                                 runtime.counters, max_in_flight=2)  # fmt: skip
        knobs = RuntimeKnobs(shadow_rate=1.0, gamma=1e6)
        shadow.offer(np.zeros((4, 1)), ["s0", "s1", "s2", "s3"], 1.0, knobs,
                     np.random.default_rng(1))  # fmt: skip
        while shadow.in_flight:
            await asyncio.sleep(0.01)
        return runtime

    runtime = run(scenario())
    counts = runtime.counters.drain()
    assert counts["errors|nonfinite"] == 4.0 and counts["shadow_items|done"] == 4.0
    assert live.selection().picker.step == 4
    now = time.time()  # shadow work stamps items with the wall clock
    queued = live.lease(10, now, 60.0, TTL)
    assert queued and queued[0].predictions == (0, NO_CLASS, 1)
    live.label(new_op("label"), queued[0].item_id, 0, now, TTL)
    losses = live.selection().picker.losses
    assert losses[0] == 0.0 and losses[1] > 0.0  # the faulty model is counted wrong


def test_shadow_sheds_beyond_its_in_flight_bound() -> None:
    live, _, _ = loaded_state(0)

    async def scenario() -> dict[str, float]:
        runtime = ReplicaRuntime(live, refresh_s=0.2)
        shadow = ShadowEvaluator(FakeCandidates(np.zeros((2, 3), dtype=np.int64)), live,
                                 runtime.run_store, runtime.counters, max_in_flight=1)  # fmt: skip
        knobs, rng = RuntimeKnobs(shadow_rate=1.0), np.random.default_rng(0)
        shadow.offer(np.zeros((2, 1)), ["a0", "a1"], 1.0, knobs, rng)
        shadow.offer(np.zeros((2, 1)), ["b0", "b1"], 1.0, knobs, rng)  # the first still runs
        while shadow.in_flight:
            await asyncio.sleep(0.01)
        return runtime.counters.drain()

    counts = run(scenario())
    assert counts["shadow_items|shed"] == 2.0 and counts["shadow_items|done"] == 2.0
