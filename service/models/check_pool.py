"""`python -m service check-pool pool.yaml`: load and probe every candidate without Ray.

Prints one row per candidate (kind, the pool classes its outputs cover, load time, memory
taken by loading, latency per item on a small batch; for an MLflow registry candidate, its
registered model, version and run). With `--data X.npy` it also runs
every candidate on those rows and prints how often each pair agrees, and with
`--labels y.npy` (class indices or class names) each model's accuracy. Exit code 0 when
every candidate loads; 2 otherwise, with the same one-line reasons as `make run`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from service.models.loaders import Candidate, LoadedPool, load_candidate, use_search_path
from service.models.pool_file import PoolLoadError, PoolSpec, read_pool_spec

LATENCY_BATCH = 32
LATENCY_REPEATS = 5


@dataclass
class Row:
    candidate: Candidate
    load_s: float
    memory_bytes: int | None
    latency_s: float


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def per_item_latency(candidate: Candidate, batch: npt.NDArray[np.float64]) -> float:
    """Median over a few runs of one batch, divided by its rows."""
    times = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        candidate.class_probabilities(batch)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) / len(batch)


def check(
    pool_file: Path, batch: npt.NDArray[np.float64] | None = None
) -> tuple[PoolSpec, list[Row], list[str]]:
    """Load every candidate (not stopping at the first failure): rows and error lines."""
    spec = read_pool_spec(pool_file)
    use_search_path(pool_file, spec)
    probe = np.zeros((LATENCY_BATCH, spec.n_features)) if batch is None else batch
    rows, errors = [], []
    for candidate_spec in spec.candidates:
        before, started = resident_bytes(), time.perf_counter()
        try:
            candidate = load_candidate(candidate_spec, pool_file, spec)
        except PoolLoadError as error:
            errors.append(str(error))
            continue
        load_s = time.perf_counter() - started
        after = resident_bytes()
        memory = None if before is None or after is None else max(after - before, 0)
        rows.append(Row(candidate, load_s, memory, per_item_latency(candidate, probe)))
    return spec, rows, errors


def read_data(path: Path, n_features: int) -> npt.NDArray[np.float64]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read a .npy array ({error})") from error
    if data.ndim != 2 or data.shape[1] != n_features or len(data) == 0:
        raise ValueError(f"{path}: shape {data.shape}, expected (items, {n_features})")
    matrix = np.asarray(data, dtype=np.float64)
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{path}: holds NaN or infinity")
    return matrix


def read_labels(path: Path, n_items: int, class_names: list[str]) -> npt.NDArray[np.int64]:
    """Class indices, or class names mapped to their indices."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read a .npy array ({error})") from error
    if labels.shape != (n_items,):
        raise ValueError(f"{path}: shape {labels.shape}, expected ({n_items},) like the data")
    if labels.dtype.kind in "US":
        unknown = sorted({str(v) for v in labels} - set(class_names))
        if unknown:
            raise ValueError(f"{path}: {unknown[:5]} are not class names {class_names}")
        return np.asarray([class_names.index(str(v)) for v in labels], dtype=np.int64)
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(f"{path}: labels must be class indices 0..{len(class_names) - 1}")
    indices: npt.NDArray[np.int64] = labels.astype(np.int64)
    return indices


def coverage(candidate: Candidate, class_names: list[str]) -> str:
    """Which pool classes the model's outputs land on."""
    if candidate.columns is None or len(set(candidate.columns.tolist())) == len(class_names):
        return f"all {len(class_names)}"
    known = [class_names[i] for i in candidate.columns]
    return f"{len(known)} of {len(class_names)}: " + ", ".join(known[:6])


def _size(n_bytes: int | None) -> str:
    return "?" if n_bytes is None else f"{n_bytes / 2**20:.1f} MiB"


def _prior(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def report(
    console: Console,
    spec: PoolSpec,
    rows: list[Row],
    data: npt.NDArray[np.float64] | None,
    labels: npt.NDArray[np.int64] | None,
) -> None:
    table = Table(title=f"{len(rows)} of {len(spec.candidates)} candidates load")
    for column in ("name", "kind", "classes", "prior", "load", "memory", "latency / item"):
        table.add_column(column, justify="left" if column in ("name", "kind") else "right")
    priors = {c.name: c.prior for c in spec.candidates}
    registry = any(r.candidate.origin is not None for r in rows)
    if registry:  # the registered model, version (an alias resolved now) and run
        table.add_column("registry")
    predictions = None
    if data is not None and rows:
        pool = LoadedPool(spec, [r.candidate for r in rows])
        predictions = pool.predict_all(data)
    if labels is not None and predictions is not None:
        table.add_column("accuracy", justify="right")
    for index, row in enumerate(rows):
        cells = [
            row.candidate.name, row.candidate.kind, coverage(row.candidate, spec.class_names),
            _prior(priors.get(row.candidate.name)), f"{row.load_s * 1000:.0f} ms",
            _size(row.memory_bytes),
            f"{row.latency_s * 1e6:.1f} µs",
        ]  # fmt: skip
        if registry:
            origin = row.candidate.origin
            cells.append("—" if origin is None else origin.describe())
        if labels is not None and predictions is not None:
            cells.append(f"{np.mean(predictions[:, index] == labels):.3f}")
        table.add_row(*cells)
    console.print(table)
    if predictions is not None:
        agreement = Table(title=f"agreement on {len(predictions)} items (share predicted alike)")
        agreement.add_column("model")
        for number in range(1, len(rows) + 1):
            agreement.add_column(str(number), justify="right")
        for i, row in enumerate(rows):
            shares = [np.mean(predictions[:, i] == predictions[:, j]) for j in range(len(rows))]
            agreement.add_row(f"{i + 1} {row.candidate.name}", *(f"{s:.2f}" for s in shares))
        console.print(agreement)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service check-pool",
        description="Load and probe every candidate of a pool file, without Ray.",
    )
    parser.add_argument("pool", type=Path, help="the pool YAML")
    parser.add_argument("--data", type=Path, help="items to run every candidate on (.npy)")
    parser.add_argument("--labels", type=Path, help="their true classes (.npy): accuracy")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 100))
    if args.labels is not None and args.data is None:
        parser.error("--labels needs --data")
    try:
        spec = read_pool_spec(args.pool)
        data = None if args.data is None else read_data(args.data, spec.n_features)
        labels = None
        if args.labels is not None and data is not None:
            labels = read_labels(args.labels, len(data), spec.class_names)
        batch = None if data is None else data[:LATENCY_BATCH]
        spec, rows, errors = check(args.pool, batch)
    except (PoolLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report(console, spec, rows, data, labels)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"checked {args.pool} (peak memory {peak:.0f} MiB)")
    return 2 if errors else 0
