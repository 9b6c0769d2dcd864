"""A property test: random sequences of candidates added and removed, labels, new rounds,
candidate changes cut short between the store and the pool file, and replica restarts keep
the pool file, the store, what /v1/selection shows and what /v1/rounds shows in agreement,
names included (the embedded store, reopened on every restart, as a restarted replica
does)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from service.http.views import round_view, selection_view
from service.models import roster
from service.state.follow import follow_store
from service.state.live import LiveState, new_op
from service.state.store.base import Retention
from service.state.store.sqlite import SQLiteBackend

NOW = 1_000_000.0
TTL = 1e9
NAMES = [f"m{i}" for i in range(8)]


class PoolAndStore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp())
        self.pool_file = self.folder / "pool.yaml"
        entries = [{"name": n, "sklearn": f"{n}.joblib"} for n in NAMES[:3]]
        self.pool_file.write_text(
            yaml.safe_dump({"n_features": 2, "classes": 3, "candidates": entries})
        )
        self.rounds: list[list[str]] = [NAMES[:3]]  # the oracle: each round's candidates
        self.items = 0
        self.cut_short = False  # a change reached the store, not the file
        self.restart()

    def restart(self) -> None:
        """A replica starting: the store reopened, the pool file caught up, initialised."""
        self.live = LiveState(SQLiteBackend(self.folder / "state.sqlite3", Retention()))
        follow_store(self.live.backend, self.pool_file)
        names = [c["name"] for c in yaml.safe_load(self.pool_file.read_text())["candidates"]]
        self.live.initialise(names, 0, None, NOW)
        self.cut_short = False

    def follow(self, finish: bool) -> None:
        if finish:
            meta = self.live.selection().meta
            roster.follow(self.pool_file, meta.models, meta.added, meta.removed)
        else:
            self.cut_short = True

    @property
    def current(self) -> list[str]:
        return self.rounds[-1]

    @rule(index=st.integers(0, 7), finish=st.booleans())
    def add(self, index: int, finish: bool) -> None:
        name = NAMES[index]
        if name in self.current:
            return
        rng = np.random.default_rng(index)
        self.live.add_candidate(new_op("add"), {"name": name, "sklearn": f"{name}.joblib"},
                                lambda x: rng.integers(0, 3, len(x)), NOW)  # fmt: skip
        self.rounds[-1] = [*self.current, name]
        self.follow(finish)

    @precondition(lambda self: len(self.current) > 2)
    @rule(pick=st.integers(0, 7), finish=st.booleans())
    def remove(self, pick: int, finish: bool) -> None:
        name = self.current[pick % len(self.current)]
        self.live.remove_candidate(new_op("remove"), name, NOW)
        self.rounds[-1] = [n for n in self.current if n != name]
        self.follow(finish)

    @rule(seed=st.integers(0, 1000), label=st.integers(0, 2))
    def label(self, seed: int, label: int) -> None:
        from service.state.rules import Batch

        k = len(self.current)
        predictions = np.random.default_rng(seed).integers(0, 3, (1, k))
        predictions[0, 0] = (predictions[0, 1] + 1) % 3  # they disagree: q > 0
        item = f"i{self.items}"
        self.items += 1
        batch = Batch([item], predictions, np.zeros((1, 2)), tuple(self.current))
        self.live.observe(new_op("t"), batch, 1e6, np.random.default_rng(seed), NOW)
        if self.live.item(item) is not None:
            self.live.label(new_op("label"), item, label, NOW, TTL)

    @rule()
    def new_round(self) -> None:
        self.live.start_round(new_op("round"), None, NOW)
        self.rounds.append(list(self.current))

    @rule()
    def replica_restart(self) -> None:
        self.live.backend.close()
        self.restart()

    @invariant()
    def file_store_selection_and_history_agree(self) -> None:
        selection = self.live.selection()
        assert list(selection.meta.models) == self.current
        if not self.cut_short:
            in_file = [c["name"] for c in yaml.safe_load(self.pool_file.read_text())["candidates"]]
            assert in_file == self.current
        view = selection_view(selection, full=True)
        assert list(view.posterior or {}) == list(view.losses or {}) == self.current
        assert view.best_model in self.current and view.served_model in self.current
        history = self.live.rounds(len(self.rounds))
        assert [r.number for r in history] == list(range(len(self.rounds) - 1, -1, -1))
        for record in history:
            shown = round_view(record, self.current)
            assert list(shown.posterior) == self.rounds[record.number]
            assert shown.best_model in self.rounds[record.number]
            assert abs(sum(shown.posterior.values()) - 1) < 1e-9


PoolAndStore.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_pool_file_store_selection_and_history_agree = PoolAndStore.TestCase
