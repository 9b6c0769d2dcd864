"""The tools as a user runs them: `python -m picker ...`, exit codes and messages."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "benchmarks" / "glue-rte"


def run_picker(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "picker", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def pool_files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=80)
    preds = np.where(
        rng.random((80, 4)) < [0.9, 0.7, 0.6, 0.5], truth[:, None], (truth[:, None] + 1) % 3
    )
    np.savetxt(tmp_path / "p.csv", preds, delimiter=",", fmt="%d")
    np.savetxt(tmp_path / "o.csv", truth, delimiter=",", fmt="%d")
    return tmp_path / "p.csv", tmp_path / "o.csv"


def test_replay_prints_one_json_line_per_setting_and_plots(tmp_path: Path) -> None:
    plot = tmp_path / "curve.png"
    methods = ["--method", "modelpicker", "random", "--gamma", "1", "4", "--budget", "50"]
    done = run_picker(
        "replay",
        DATA / "predictions.npy",
        DATA / "oracle.npy",
        *methods,
        "--runs",
        "20",
        "--plot",
        plot,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["method"], r["param"]) for r in rows] == [
        ("modelpicker", 1.0),
        ("modelpicker", 4.0),
        ("random", 50.0),
    ]
    items, models = np.load(DATA / "predictions.npy").shape
    for row in rows:
        assert {"labels", "identified", "gap", "runs"} <= row.keys() and row["runs"] == 20
        assert row["evaluations"] == items * models  # the whole stream, every model
    assert rows[0]["labels"] < rows[1]["labels"]
    assert plot.stat().st_size > 1000


def test_replay_reads_csv(pool_files: tuple[Path, Path]) -> None:
    done = run_picker("replay", *pool_files, "--gamma", "3", "--runs", "10", "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"] == 10


def test_calibrate_matches_budget(pool_files: tuple[Path, Path]) -> None:
    done = run_picker("calibrate", *pool_files, "--budget", "20", "--runs", "50", "--quiet")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert abs(result["labels"] - 20) <= 0.2 + 1e-9 and result["gamma"] > 0


def write(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mismatched", "predictions have 10 items but the oracle has 9"),
        ("one_model", "at least 2 models"),
        ("non_integer", "whole numbers"),
        ("empty", "empty"),
        ("gamma_zero", "must be > 0"),
        ("gamma_negative", "must be > 0"),
        ("missing_flag", "--method random needs --budget"),
        ("unreachable_budget", "above the most labels"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path: Path, case: str, message: str) -> None:
    preds = write(tmp_path / "p.npy", np.tile([0, 1, 1], (10, 1)))
    oracle = write(tmp_path / "o.npy", np.ones(10))
    extra: list[str] = ["--gamma", "2"]
    command = "replay"
    if case == "mismatched":
        oracle = write(tmp_path / "o.npy", np.ones(9))
    elif case == "one_model":
        preds = write(tmp_path / "p.npy", np.ones((10, 1)))
    elif case == "non_integer":
        preds = write(tmp_path / "p.npy", np.full((10, 3), 1.5))
    elif case == "empty":
        preds = tmp_path / "empty.csv"
        preds.write_text("")
    elif case in ("gamma_zero", "gamma_negative"):
        extra = ["--gamma", "0" if case == "gamma_zero" else "-1"]
    elif case == "missing_flag":
        extra = ["--method", "random"]
    else:
        command, extra = "calibrate", ["--budget", "50", "--runs", "5"]
    done = run_picker(command, preds, oracle, *extra, "--quiet")
    assert done.returncode != 0
    assert message in done.stderr
    assert done.stdout == ""


def test_replay_runs_the_pool_methods_at_every_budget(tmp_path: Path) -> None:
    plot = tmp_path / "pool.png"
    done = run_picker(
        "replay", DATA / "predictions.npy", DATA / "oracle.npy",
        "--method", "modelpicker", "model-selector", "coda", "pool-based",
        "--gamma", "2", "--budget", "10", "40", "--eps", "0.4", "--runs", "3",
        "--quiet", "--plot", plot,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["method"], r.get("budget")) for r in rows] == [
        ("modelpicker", None),
        ("model-selector", 10),
        ("model-selector", 40),
        ("coda", 10),
        ("coda", 40),
        ("pool-based", 10),
        ("pool-based", 40),
    ]
    assert rows[1]["param"] == 0.4 and rows[3]["param"] == 0.9 and rows[5]["param"] is None
    assert all(r["labels"] == r["budget"] for r in rows[1:])
    items, models = np.load(DATA / "predictions.npy").shape
    assert all(r["evaluations"] == items * models for r in rows)  # every model on every item
    assert plot.stat().st_size > 1000


def test_calibrate_pool_methods_needs_no_labels(pool_files: tuple[Path, Path]) -> None:
    predictions = pool_files[0]
    done = run_picker(
        "calibrate", predictions, "--method", "model-selector", "--budget", "8", "--runs", "4"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert 0.35 <= result["eps"] <= 0.49 and 0 <= result["identified_vs_majority"] <= 1
    done = run_picker("calibrate", predictions, "--method", "pool-based", "--budget", "8")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["eps"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "coda"], "--method coda needs --budget"),
        (["--method", "pool-based", "--budget", "10.5"], "whole number of labels"),
        (["--method", "model-selector", "--budget", "5", "--eps", "0.6"], "--eps must be in"),
        (["--method", "coda", "--budget", "5", "--eps", "0.4"], "--eps is model-selector's"),
    ],
)
def test_bad_pool_flags_give_a_clear_error(
    pool_files: tuple[Path, Path], extra: list[str], message: str
) -> None:
    done = run_picker("replay", *pool_files, *extra, "--quiet")
    assert done.returncode == 2
    assert message in done.stderr and done.stdout == ""


def test_calibrate_modelpicker_still_needs_the_oracle(pool_files: tuple[Path, Path]) -> None:
    done = run_picker("calibrate", pool_files[0], "--budget", "10")
    assert done.returncode == 2 and "needs the oracle file" in done.stderr


def test_replay_active_models_counts_fewer_evaluations() -> None:
    done = run_picker(
        "replay", DATA / "predictions.npy", DATA / "oracle.npy", "--gamma", "2",
        "--runs", "10", "--quiet", "--active-models", "10", "--delta", "off",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    items, models = np.load(DATA / "predictions.npy").shape
    assert row["active_models"] == 10
    # 10 models on every item, the other 77 on the labeled ones only
    assert row["evaluations"] == pytest.approx(items * 10 + row["labels"] * (models - 10))
    # by default models leave the round (delta 0.05): the label checks run fewer of them
    eliminating = run_picker(
        "replay", DATA / "predictions.npy", DATA / "oracle.npy", "--gamma", "8",
        "--runs", "10", "--quiet", "--active-models", "10",
    )  # fmt: skip
    row = json.loads(eliminating.stdout)
    assert row["evaluations"] < items * 10 + row["labels"] * (models - 10)
    everything = run_picker(
        "replay", DATA / "predictions.npy", DATA / "oracle.npy", "--gamma", "2",
        "--runs", "10", "--quiet", "--active-models", "all",
    )  # fmt: skip
    assert "active_models" not in json.loads(everything.stdout)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--active-models", "1"], "at least 2 models"),
        (["--active-models", "five"], "neither a number nor 'all'"),
        (["--active-models", "88"], "exceeds the pool's 87 models"),
        (["--method", "random", "--budget", "20", "--active-models", "5"], "modelpicker's"),
        (["--active-models", "5", "--delta", "1"], "delta must be in (0, 1)"),
        (["--active-models", "5", "--delta", "none"], "neither a number nor 'off'"),
    ],
)
def test_replay_active_models_refuses_what_it_cannot_do(extra: list[str], message: str) -> None:
    done = run_picker(
        "replay", DATA / "predictions.npy", DATA / "oracle.npy", "--gamma", "2", *extra,
        "--runs", "2", "--quiet",
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr, done.stderr
