"""Shadow work above the store, on the in-memory backend: pacing by the label queue,
batching of sampled items, and shedding of batches that time out or fail. No Ray."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from service.config.knobs import RuntimeKnobs
from service.models.candidates import Failed
from service.replica.loops import ReplicaRuntime
from service.replica.shadow import ShadowEvaluator, paced_rate
from service.state.live import LiveState
from service.state.store.memory import MemoryBackend


def test_pacing_falls_to_the_trickle_while_the_queue_is_full_and_rises_when_it_drains() -> None:
    knobs = RuntimeKnobs(shadow_rate=0.3, queue_target=20, shadow_trickle_rate=0.01)
    assert paced_rate(knobs, None) == 0.3  # nothing known yet: the queue may need items
    assert paced_rate(knobs, 19) == 0.3
    assert paced_rate(knobs, 20) == 0.01
    assert paced_rate(knobs, 5000) == 0.01
    assert paced_rate(knobs, 0) == 0.3
    unpaced = RuntimeKnobs(shadow_rate=0.3, queue_target=None)
    assert paced_rate(unpaced, 10**6) == 0.3
    low = RuntimeKnobs(shadow_rate=0.005, queue_target=5, shadow_trickle_rate=0.01)
    assert paced_rate(low, 5) == 0.005  # the trickle never raises the rate


class SlowCandidates:
    """A Candidates handle whose shadow call takes `delay_s`, then answers `answer` (or
    zeros), recording every batch's size."""

    def __init__(self, n_models: int, delay_s: float = 0.0, answer: Any = None) -> None:
        self.sizes: list[int] = []

        async def remote(request: tuple[np.ndarray, object]) -> Any:
            features = request[0]
            self.sizes.append(len(features))
            await asyncio.sleep(delay_s)
            return np.zeros((len(features), n_models), dtype=np.int64) if answer is None else answer

        self.shadow = type("Method", (), {"remote": staticmethod(remote)})()


def evaluator(candidates: Any, **options: Any) -> tuple[ShadowEvaluator, ReplicaRuntime, LiveState]:
    live = LiveState(MemoryBackend())
    live.initialise(["a", "b", "c"], served=0, budget=None, now=0.0)
    runtime = ReplicaRuntime(live, refresh_s=0.2)
    settings = {"max_in_flight": 4, "batch_size": 1, "wait_s": 0.0, "timeout_s": 5.0, **options}
    shadow = ShadowEvaluator(candidates, live, runtime.run_store, runtime.counters, **settings)
    return shadow, runtime, live


async def settle(shadow: ShadowEvaluator) -> None:
    for _ in range(500):
        if not shadow.in_flight and not shadow.buffered:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("shadow work did not finish")


def test_sampled_items_are_gathered_into_batches_of_the_set_size() -> None:
    candidates = SlowCandidates(3)

    async def scenario() -> dict[str, float]:
        shadow, runtime, live = evaluator(candidates, batch_size=10, wait_s=30.0)
        rng, knobs = np.random.default_rng(3), RuntimeKnobs()
        for request in range(7):  # 7 requests of 3 items: one batch of 12, 9 waiting
            ids = [f"r{request}-{i}" for i in range(3)]
            shadow.offer(np.zeros((3, 1)), ids, 1.0, knobs, rng)
        await asyncio.sleep(0.2)
        assert shadow.buffered == 9  # waits for more items (or wait_s)
        shadow.flush(knobs, rng)
        await settle(shadow)
        assert live.selection().picker.step == 21
        return runtime.counters.drain()

    counts = asyncio.run(scenario())
    assert candidates.sizes == [12, 9]  # a batch goes once it holds batch_size or more
    assert counts["shadow_items|done"] == 21.0


def test_a_waiting_batch_goes_after_wait_s() -> None:
    candidates = SlowCandidates(3)

    async def scenario() -> int:
        shadow, _, live = evaluator(candidates, batch_size=100, wait_s=0.05)
        shadow.offer(np.zeros((2, 1)), ["x0", "x1"], 1.0, RuntimeKnobs(), np.random.default_rng(0))
        await asyncio.sleep(0.3)
        await settle(shadow)
        return live.selection().picker.step

    assert asyncio.run(scenario()) == 2
    assert candidates.sizes == [2]


@pytest.mark.parametrize(
    ("candidates", "kind"),
    [
        (SlowCandidates(3, delay_s=10.0), "timeout"),  # past timeout_s: cancelled, shed
        (SlowCandidates(3, answer=Failed("b", "model 'b' timed out", "timeout")), "timeout"),
        (SlowCandidates(3, answer=Failed("b", "model 'b' failed: boom", "error")), "shadow"),
    ],
)
def test_a_batch_that_times_out_or_fails_is_shed_counted_and_observes_nothing(
    candidates: SlowCandidates, kind: str
) -> None:
    async def scenario() -> tuple[dict[str, float], int]:
        shadow, runtime, live = evaluator(candidates, timeout_s=0.2)
        shadow.offer(np.zeros((4, 1)), ["f0", "f1", "f2", "f3"], 1.0, RuntimeKnobs(),
                     np.random.default_rng(0))  # fmt: skip
        await settle(shadow)
        return runtime.counters.drain(), live.selection().picker.step

    counts, step = asyncio.run(scenario())
    assert counts[f"errors|{kind}"] == 1.0 and counts["shadow_items|shed"] == 4.0
    assert "shadow_items|done" not in counts
    assert step == 0  # t counts only items every candidate answered


def test_the_sampling_coin_follows_the_rate() -> None:
    candidates = SlowCandidates(3)

    async def scenario() -> int:
        shadow, _, live = evaluator(candidates, batch_size=1000, wait_s=30.0)
        rng, knobs = np.random.default_rng(11), RuntimeKnobs()
        for request in range(100):
            ids = [f"p{request}-{i}" for i in range(100)]
            shadow.offer(np.zeros((100, 1)), ids, 0.05, knobs, rng)
        shadow.flush(knobs, rng)
        await settle(shadow)
        return live.selection().picker.step

    sampled = asyncio.run(scenario())
    # 10,000 items at 5 %: 500 expected, standard error sqrt(10000 * 0.05 * 0.95) = 21.8
    assert abs(sampled - 500) < 5 * 21.8
