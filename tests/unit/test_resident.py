"""Models placed, not copied (`service.models.resident`): at most `limit` models in
memory, least recently used out first, the pinned (served) one never; loads counted and
timed; a call keeps its model however an eviction meanwhile goes."""

from __future__ import annotations

import threading

import pytest

from service.models.loaders import Candidate
from service.models.resident import Residency


class Loader:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, name: str) -> Candidate:
        with self.lock:
            self.calls.append(name)
        return Candidate(name, object(), 2, "sklearn")


def pool(n: int) -> list[Candidate]:
    return [Candidate(f"m{i}", None, 2, "sklearn") for i in range(n)]


def held(candidates: list[Candidate]) -> set[str]:
    return {c.name for c in candidates if c.model is not None}


def test_at_most_limit_resident_least_recently_used_out_first() -> None:
    loader, candidates = Loader(), pool(6)
    residency = Residency(3, loader, clock=iter(range(100)).__next__)
    for i in (0, 1, 2, 0, 3):  # m1 is the least recently used when m3 arrives
        assert residency.resident(candidates[i]).model is not None
    assert held(candidates) == {"m0", "m2", "m3"} and residency.resident_count == 3
    assert loader.calls == ["m0", "m1", "m2", "m3"]  # m0's second use loaded nothing
    assert residency.loads == 4 and residency.load_seconds == 4.0  # one tick each


def test_the_pinned_model_is_never_evicted() -> None:
    loader, candidates = Loader(), pool(6)
    residency = Residency(2, loader)
    residency.pin("m0")
    residency.resident(candidates[0])
    for i in range(1, 6):
        residency.resident(candidates[i])
        assert "m0" in held(candidates) and len(held(candidates)) <= 2
    assert loader.calls.count("m0") == 1


def test_a_call_keeps_its_model_when_it_is_evicted_meanwhile() -> None:
    candidates = pool(3)
    residency = Residency(1, Loader())
    running = residency.resident(candidates[0])
    residency.resident(candidates[1])  # evicts m0
    assert candidates[0].model is None and running.model is not None


def test_one_load_for_many_concurrent_callers() -> None:
    loader, candidates = Loader(), pool(2)
    residency = Residency(2, loader)
    threads = [threading.Thread(target=residency.resident, args=(candidates[0],))
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loader.calls == ["m0"]


def test_adopted_models_count_and_the_bound_is_at_least_one() -> None:
    candidates = pool(4)
    for candidate in candidates:
        candidate.model = object()
    residency = Residency(2, Loader())
    residency.adopt(candidates)
    assert held(candidates) == {"m2", "m3"}
    residency.forget(["m3"])
    assert held(candidates) == {"m2"}
    with pytest.raises(ValueError, match="at least 1"):
        Residency(0, Loader())


def test_the_setting_refuses_a_bound_that_holds_no_model() -> None:
    from pydantic import ValidationError

    from service.config.settings import Settings

    with pytest.raises(ValidationError, match="max_resident_models"):
        Settings(max_resident_models=0)
    assert Settings(max_resident_models=1).max_resident_models == 1
    assert Settings().max_resident_models is None  # every candidate, as before
