"""`python -m picker replay|calibrate`: the offline tools over recorded prediction matrices.

Results go to stdout, one JSON object per line; progress and errors go to stderr. rich
(progress bar) and matplotlib (--plot) are imported lazily, only when used, so that the
picker package itself depends on numpy and the standard library alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from picker.calibrate import calibrate_gamma, calibrate_pool
from picker.data import PickerInputError, Pool, load_matrix, load_pool, make_pool
from picker.large_pool import DEFAULT_DELTA, run_modelpicker
from picker.pool_replay import pool_replay
from picker.replay import METHODS, Method, ProgressCallback, ReplayResult, replay, summarise
from picker.selectors import POOL_METHODS


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (np.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _number_or(
    word: str, convert: type, valid: Callable[[Any], bool], what: str
) -> Callable[[str], Any]:
    """An argparse type: `word` (None), or a number for which `valid` holds."""

    def parse(text: str) -> Any:
        if text == word:
            return None
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor {word!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"{what}, got {text}")
        return value

    return parse


_active_models = _number_or("all", int, lambda k: k >= 2, "the active set needs at least 2 models")
_delta = _number_or("off", float, lambda d: 0.0 < d < 1.0, "delta must be in (0, 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m picker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("replay", "replay query rules over random streams of a recorded pool"),
        ("calibrate", "find the gamma whose mean label count matches a budget"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("predictions", help="(items x models) predicted classes, .npy or .csv")
        command.add_argument(
            "oracle",
            nargs="?" if name == "calibrate" else None,
            help="(items,) true classes, .npy or .csv"
            + (
                " (not needed for the pool methods: the majority vote stands in)"
                if name == "calibrate"
                else ""
            ),
        )
        command.add_argument(
            "--stream-size", type=_positive(int), help="items per stream (default: all)"
        )
        command.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
    _replay_options(commands.choices["replay"])
    _calibrate_options(commands.choices["calibrate"])
    return parser


def _replay_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--method", nargs="+", choices=METHODS + POOL_METHODS, default=["modelpicker"]
    )
    command.add_argument("--gamma", nargs="+", type=_positive(float), help="modelpicker, entropy")
    command.add_argument(
        "--budget",
        nargs="+",
        type=_positive(float),
        help="labels per stream: random, and the pool methods (one pass serves every budget)",
    )
    command.add_argument(
        "--eps", type=_positive(float), help="model-selector's eps (default 0.46, published)"
    )
    command.add_argument(
        "--active-models",
        type=_active_models,
        default=None,
        metavar="K|all",
        help="modelpicker's large-pool mode: K models evaluated on every item, the whole "
        "pool on labeled items (all: every model on every item, the default)",
    )
    command.add_argument(
        "--delta",
        type=_delta,
        default=DEFAULT_DELTA,
        metavar="D|off",
        help="the large-pool mode's elimination: a model leaves the round once a test at "
        f"level D says it is behind the leader (default {DEFAULT_DELTA}; off: none leaves)",
    )
    command.add_argument(
        "--runs", type=_positive(int), default=300, help="realisations (default 300)"
    )
    command.add_argument(
        "--plot", type=Path, help="draw identification probability vs labels to this PNG"
    )


def _calibrate_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--budget", type=_positive(float), required=True, help="target mean labels"
    )
    command.add_argument(
        "--method", choices=("modelpicker", "entropy", *POOL_METHODS), default="modelpicker"
    )
    command.add_argument("--runs", type=_positive(int), default=100, help="realisations per trial")


def _settings(args: argparse.Namespace) -> list[tuple[Method, float]]:
    settings: list[tuple[Method, float]] = []
    for method in args.method:
        if method in POOL_METHODS:
            continue
        params = args.budget if method == "random" else args.gamma
        if not params:
            flag = "--budget" if method == "random" else "--gamma"
            raise PickerInputError(f"--method {method} needs {flag}")
        settings.extend((method, float(p)) for p in params)
    return settings


@contextmanager
def _progress(total: int, quiet: bool) -> Iterator[ProgressCallback | None]:
    if quiet:
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True, console=_stderr_console()) as bar:
        task = bar.add_task("replay", total=total)
        yield lambda n: bar.advance(task, n)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _stream_size(args: argparse.Namespace, pool: Pool) -> int:
    size = pool.n_items if args.stream_size is None else int(args.stream_size)
    if size > pool.n_items:
        raise PickerInputError(f"--stream-size {size} exceeds the {pool.n_items} items in the pool")
    return size


def _whole_labels(budgets: Sequence[float]) -> list[int]:
    if any(b != int(b) for b in budgets):
        raise PickerInputError("--budget for the pool methods is a whole number of labels")
    return [int(b) for b in budgets]


def _replay_budgets(args: argparse.Namespace, pool: Pool, pooled: list[str]) -> list[int]:
    """The pool methods' budgets, once every replay option was checked against the rest."""
    budgets = _whole_labels(args.budget or []) if pooled else []
    if pooled and not budgets:
        raise PickerInputError(f"--method {pooled[0]} needs --budget (labels per stream)")
    if args.eps is not None and "model-selector" not in args.method:
        raise PickerInputError("--eps is model-selector's setting; add --method model-selector")
    if args.eps is not None and not args.eps < 0.5:
        raise PickerInputError(f"--eps must be in (0, 0.5), got {args.eps:g}")
    active = args.active_models
    if active is not None and "modelpicker" not in args.method:
        raise PickerInputError("--active-models is modelpicker's; add --method modelpicker")
    if active is not None and active > pool.n_models:
        raise PickerInputError(
            f"--active-models {active} exceeds the pool's {pool.n_models} models"
        )
    return budgets


def run_replay_command(args: argparse.Namespace) -> list[ReplayResult]:
    pool = load_pool(args.predictions, args.oracle)
    stream_size, settings = _stream_size(args, pool), _settings(args)
    pooled = [m for m in args.method if m in POOL_METHODS]
    budgets = _replay_budgets(args, pool, pooled)
    active = args.active_models
    total = stream_size * len(settings) + max(budgets, default=0) * args.runs * len(pooled)
    results = []
    with _progress(total, args.quiet) as on_step:
        for index, (method, param) in enumerate(settings):
            rng = np.random.default_rng([args.seed, index])
            if method == "modelpicker":
                outcome = run_modelpicker(
                    pool, param, active, stream_size, args.runs, rng, on_step, args.delta
                )
                result = summarise(outcome, method, param, active)
            else:
                result = replay(pool, method, param, stream_size, args.runs, rng, on_step)
            print(json.dumps(result.to_dict()), flush=True)
            results.append(result)
        for index, name in enumerate(pooled, start=len(settings)):
            rng = np.random.default_rng([args.seed, index])
            setting = args.eps if name == "model-selector" else None
            for result in pool_replay(
                pool, name, budgets, stream_size, args.runs, rng, setting, on_step
            ):
                print(json.dumps(result.to_dict()), flush=True)
                results.append(result)
    if args.plot is not None:
        plot_results(results, args.plot)
    return results


def plot_results(results: Sequence[ReplayResult], path: Path) -> None:
    """Identification probability against mean labels, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(r.label for r in results):
        points = sorted((r.labels, r.identified) for r in results if r.label == label)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.set_xlabel("mean labels per stream")
    axes.set_ylabel("identification probability")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_calibrate_command(args: argparse.Namespace) -> None:
    if args.oracle is None and args.method not in POOL_METHODS:
        raise PickerInputError(f"calibrate --method {args.method} needs the oracle file")
    if args.oracle is None:
        # The pool methods' calibration replaces the oracle by the majority vote.
        predictions = load_matrix(args.predictions)
        pool = make_pool(predictions, predictions[:, 0] if predictions.ndim == 2 else predictions)
    else:
        pool = load_pool(args.predictions, args.oracle)
    if args.method in POOL_METHODS:
        (budget,) = _whole_labels([args.budget])
        forecast = calibrate_pool(
            pool, args.method, budget, _stream_size(args, pool), args.runs, args.seed
        )
        print(json.dumps(forecast), flush=True)
        return
    calibration = calibrate_gamma(
        pool, args.budget, _stream_size(args, pool), args.runs, args.seed, args.method
    )
    print(json.dumps(calibration.to_dict()), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "replay":
            run_replay_command(args)
        else:
            run_calibrate_command(args)
    except PickerInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
