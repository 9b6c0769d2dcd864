"""The drift monitor as pure code: its false-alarm rate on a stationary stream is at most
alpha per tested window (checked on 2,000 windows, within 4 standard errors), a real shift
is found, windows fill exactly across batch boundaries, and its state round-trips."""

from __future__ import annotations

import numpy as np

from service.state.drift import DriftConfig, Monitor, Window, compare_windows, observe


def stream(rng: np.random.Generator, n: int, class_p: list[float], split: float) -> np.ndarray:
    """n items × 3 models: model 0 predicts classes with class_p; on a share `split` of the
    items the other two models disagree with it."""
    watched = rng.choice(len(class_p), size=n, p=class_p)
    disagree = rng.random(n) < split
    other = np.where(disagree, (watched + 1) % len(class_p), watched)
    return np.stack([watched, watched, other], axis=1).astype(np.int64)


def test_false_alarms_on_a_stationary_stream_stay_within_alpha() -> None:
    rng = np.random.default_rng(20261202)
    alpha, windows, size = 0.05, 2000, 200
    config = DriftConfig(window=size, alpha=alpha, n_classes=4)
    monitor, alarms = Monitor.start(0, 4), 0
    batch = stream(rng, size * (windows + 1), [0.4, 0.3, 0.2, 0.1], 0.2)
    for start in range(0, len(batch), 500):
        monitor, evidence = observe(monitor, batch[start : start + 500], config, start)
        alarms += evidence is not None
    rate, standard_error = alarms / windows, np.sqrt(alpha * (1 - alpha) / windows)
    assert rate <= alpha + 4 * standard_error, rate


def test_a_shift_in_predicted_classes_or_disagreement_is_found() -> None:
    rng = np.random.default_rng(5)
    config = DriftConfig(window=300, alpha=1e-4, n_classes=4)
    before = stream(rng, 300, [0.4, 0.3, 0.2, 0.1], 0.2)
    for after in (
        stream(rng, 300, [0.1, 0.2, 0.3, 0.4], 0.2),  # classes move
        stream(rng, 300, [0.4, 0.3, 0.2, 0.1], 0.5),
    ):  # the models split more
        monitor, evidence = observe(Monitor.start(0, 4), np.vstack([before, after]), config, 0)
        assert evidence is not None and evidence["drift"] and evidence["at_step"] == 600
        assert evidence["reference_items"] == evidence["window_items"] == 300
        assert monitor.reference.n == 300 and monitor.current.n == 0  # the new reference


def test_windows_fill_exactly_across_batches_and_state_round_trips() -> None:
    rng = np.random.default_rng(1)
    config = DriftConfig(window=100, alpha=1e-4, n_classes=3)
    monitor = Monitor.start(1, 3)
    items = stream(rng, 250, [0.5, 0.3, 0.2], 0.1)
    items[3, 1] = -1  # a model's non-finite output: the "no class" bin
    for start in range(0, 250, 7):
        monitor, _ = observe(monitor, items[start : start + 7], config, start)
        assert Monitor.from_dict(monitor.to_dict()) == monitor
    assert monitor.reference.n == 100 and monitor.current.n == 50
    assert monitor.reference.classes[-1] == 1
    assert monitor.last is not None and monitor.last["at_step"] == 200


def test_identical_windows_give_no_evidence() -> None:
    window = Window((30, 20, 0, 0), disagreements=10)
    figures = compare_windows(window, window, 1e-4)
    assert figures["p_value"] == 1.0 and not figures["drift"]
    silent = Window((50, 0, 0, 0))  # one class only, no disagreement at all
    assert compare_windows(silent, silent, 1e-4)["disagreement_p_value"] == 1.0
