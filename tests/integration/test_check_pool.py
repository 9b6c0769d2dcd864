"""`python -m service check-pool` on the demo pool, as a real process: the table lists
every candidate, and with --data/--labels the accuracies and agreements it prints are the
candidates' own on those items."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from service.models.demo_data import DemoData
from service.models.loaders import load_pool
from tests import bad_pools

ROOT = Path(__file__).resolve().parents[2]


def check_pool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "check-pool", *args], cwd=ROOT,
        capture_output=True, text=True, timeout=300, check=False,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def cells(output: str, name: str) -> list[str]:
    """The cells of the table row that starts with `name`."""
    for line in output.splitlines():
        parts = [p.strip() for p in line.split("│")[1:-1]]
        if parts and parts[0] == name:
            return parts
    raise AssertionError(f"no row for {name!r} in:\n{output}")


def test_the_checker_table_on_the_demo_pool(demo: DemoData, tmp_path: Path) -> None:
    features, labels = demo.stream_features[:300], demo.stream_labels[:300]
    np.save(tmp_path / "X.npy", features)
    np.save(tmp_path / "y.npy", labels)
    plain = check_pool(str(demo.pool_file))
    assert plain.returncode == 0, plain.stderr
    pool = load_pool(demo.pool_file)
    assert "10 of 10 candidates load" in plain.stdout
    for name in pool.names:
        row = cells(plain.stdout, name)
        assert row[1] == "sklearn" and row[2] == "all 10" and row[3] == "—"  # no prior
        assert re.fullmatch(r"\d+ ms", row[4]) and re.fullmatch(r"\d+\.\d MiB", row[5])
        assert re.fullmatch(r"\d+\.\d µs", row[6]) and float(row[6].split()[0]) > 0

    full = check_pool(str(demo.pool_file), "--data", str(tmp_path / "X.npy"),
                      "--labels", str(tmp_path / "y.npy"))  # fmt: skip
    assert full.returncode == 0, full.stderr
    predictions = pool.predict_all(features)
    for index, name in enumerate(pool.names):
        accuracy = np.mean(predictions[:, index] == labels)
        assert cells(full.stdout, name)[7] == f"{accuracy:.3f}"
        agreement = cells(full.stdout, f"{index + 1} {name}")[1:]
        expected = [np.mean(predictions[:, index] == predictions[:, j]) for j in range(10)]
        assert agreement == [f"{share:.2f}" for share in expected]
    assert "agreement on 300 items" in full.stdout


def test_the_checker_refuses_data_that_does_not_fit(demo: DemoData, tmp_path: Path) -> None:
    np.save(tmp_path / "narrow.npy", np.zeros((5, 3)))
    np.save(tmp_path / "X.npy", np.zeros((5, 64)))
    np.save(tmp_path / "y.npy", np.array(["cat"] * 5))
    narrow = check_pool(str(demo.pool_file), "--data", str(tmp_path / "narrow.npy"))
    assert narrow.returncode == 2
    assert narrow.stderr.strip().endswith("narrow.npy: shape (5, 3), expected (items, 64)")
    names = check_pool(str(demo.pool_file), "--data", str(tmp_path / "X.npy"),
                       "--labels", str(tmp_path / "y.npy"))  # fmt: skip
    assert names.returncode == 2 and "['cat'] are not class names" in names.stderr


def test_the_checker_reports_every_failing_candidate(tmp_path: Path) -> None:
    path, _ = bad_pools.make("missing_file", tmp_path)
    path.write_text(path.read_text() + "  - {name: rule, python: 'no_such_module_here:make'}\n")
    result = check_pool(str(path))
    assert result.returncode == 2
    assert "1 of 3 candidates load" in result.stdout and cells(result.stdout, "good")
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert "candidate 'lost'" in errors[0] and "no such file" in errors[0]
    assert "candidate 'rule'" in errors[1] and "cannot import module" in errors[1]


def test_the_checker_shows_each_candidates_prior(tmp_path: Path) -> None:
    path = bad_pools._pool(tmp_path, "{name: twin, sklearn: good.joblib, prior: 0.75}")
    shown = check_pool(str(path))
    assert shown.returncode == 0, shown.stderr
    assert cells(shown.stdout, "twin")[3] == "0.750" and cells(shown.stdout, "good")[3] == "—"
    path.write_text(path.read_text().replace("prior: 0.75", "prior: 1.5"))
    refused = check_pool(str(path))
    assert refused.returncode == 2 and "prior" in refused.stderr, refused.stderr
