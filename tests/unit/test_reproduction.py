"""Replays of the real benchmark pools reproduce the reference figures (300 realisations).

Checked here: the reference points whose identification probability is estimated with a
standard error under ~0.02 (so ±0.05 is a real check, not a coin flip). The README lists
every point, including emocontext's two steep-curve points, with 3,000-run estimates.
"""

import json
from pathlib import Path

import pytest

from picker import load_pool
from picker.calibrate import replay_at_labels

DATA = Path(__file__).resolve().parent.parent / "data" / "benchmarks"
REFERENCE = json.loads((DATA / "reference.json").read_text())
POINTS = [
    ("emocontext", "modelpicker", 162, 1.00),
    ("emocontext", "random", 150, 0.90),
    ("gas-drift", "modelpicker", 203, 0.95),
    ("gas-drift", "modelpicker", 380, 1.00),
    ("gas-drift", "random", 200, 0.87),
    ("gas-drift", "random", 300, 0.93),
    ("glue-rte", "modelpicker", 78, 0.92),
    ("glue-rte", "modelpicker", 136, 1.00),
    ("glue-rte", "random", 100, 0.88),
    ("glue-rte", "random", 200, 1.00),
]


@pytest.mark.parametrize(("name", "method", "labels", "identified"), POINTS)
def test_reference_point(name: str, method: str, labels: int, identified: float) -> None:
    assert [labels, identified] in REFERENCE[name][method]
    pool = load_pool(DATA / name / "predictions.npy", DATA / name / "oracle.npy")
    result = replay_at_labels(pool, method, labels, REFERENCE[name]["stream_size"], 300, seed=0)  # type: ignore[arg-type]
    assert result.runs == 300
    assert abs(result.labels - labels) <= 0.05 * labels
    assert abs(result.identified - identified) <= 0.05
