"""What pickserve costs on top of a bare Ray Serve app serving the same model.

    python -m loadtest.overhead                 # the comparison table (about 5 minutes)
    python -m loadtest.overhead --soak-s 600    # plus a bounded soak, with a plot

In one Ray instance, behind the same Ray proxy, it deploys three applications:

- `bare` (`loadtest.bare`): one FastAPI deployment holding the model pickserve serves;
- `steady`: pickserve with its default knobs, its posterior settled (a simulated labeler
  answers from ground truth on the demo's `blurred` stream until svc-rbf, the best there,
  is served with posterior >= 0.9) and its labelers' queue fed (traffic without labels
  until the queue holds `queue_target` items), so shadow sampling runs at the trickle;
- `active`: pickserve in active selection: shadow rate 5 %, no pacing, a fresh posterior.

Each is driven by wrk with the same request bodies (8 demo instances each), in turn, for
several rounds: one connection (latency), then 8 connections (throughput). It prints the
medians over rounds and the ratios against `bare` measured in the same run. With
`--soak-s`, `active` then runs under load for that long while a labeler answers its
queue; memory of every pickserve replica and the queue depth are sampled and plotted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtest.wrk import WrkResult, require_wrk, run_wrk

TARGETS = ("bare", "steady", "active")
BATCH = 8


def _bodies(features: np.ndarray, count: int = 64) -> list[str]:
    rng = np.random.default_rng(0)
    rows = [rng.choice(len(features), BATCH, replace=False) for _ in range(count)]
    return [json.dumps({"instances": features[r].round(4).tolist()}) for r in rows]


def _deploy_pickserve(name: str, state_dir: Path, knobs: dict[str, Any]) -> None:
    from ray import serve

    from service.app import build
    from service.config.knobs import RuntimeKnobs
    from service.config.settings import Settings

    settings = Settings(state_dir=state_dir, store_namespace=name, knobs=RuntimeKnobs(**knobs))
    serve.run(build(settings), name=name, route_prefix=f"/{name}")


def _settle(url: str, demo: Any, stream: str) -> dict[str, Any]:
    from service.tools.demo import drive

    target = demo.best_on(stream)
    with httpx.Client(base_url=url, timeout=30) as client:
        progress = drive(client, demo, target, max_items=40_000, stream=stream, seed=1)
    return {"target": target, "items": progress.items_served, "labels": progress.labels_posted,
            "served": progress.selection.get("served_model"),
            "posterior": progress.selection.get("posterior", {}).get(target)}  # fmt: skip


def _queue_depth(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    line = next(x for x in text.splitlines() if x.startswith("pickserve_label_queue_depth"))
    return int(float(line.split()[-1]))


def _shadow_counts(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("pickserve_shadow_items_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = float(line.split()[-1])
    return counts


def _feed_queue(url: str, bodies: list[str], target: int, limit_s: float = 120) -> int:
    """Traffic without labels until the queue holds `target` items (or limit_s passes)."""
    deadline = time.monotonic() + limit_s
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            for body in bodies:
                client.post("/v1/predict", content=body,
                            headers={"content-type": "application/json"})  # fmt: skip
            time.sleep(1.5)  # shadow batches land after the answers
            depth = _queue_depth(url)
            if depth >= target:
                return depth
    return _queue_depth(url)


def _median(results: list[WrkResult], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in results))


def measure(
    base: str, bodies: list[str], rounds: int, duration_s: float
) -> dict[str, dict[str, list[WrkResult]]]:
    paths = {"bare": "/bare/predict", "steady": "/steady/v1/predict",
             "active": "/active/v1/predict"}  # fmt: skip
    for target in TARGETS:  # a check that each answers, then a warm-up
        answer = httpx.post(base + paths[target], content=bodies[0], timeout=30,
                            headers={"content-type": "application/json"})  # fmt: skip
        if answer.status_code != 200:
            raise SystemExit(f"error: {target} answers {answer.status_code}: {answer.text[:300]}")
        run_wrk(base + paths[target], bodies, 8, 3, threads=2)
    results: dict[str, dict[str, list[WrkResult]]] = {t: {"c1": [], "c8": []} for t in TARGETS}
    for round_index in range(rounds):
        for target in TARGETS:  # alternated, so drift of the machine hits all alike
            one = run_wrk(base + paths[target], bodies, 1, duration_s)
            eight = run_wrk(base + paths[target], bodies, 8, duration_s, threads=2)
            results[target]["c1"].append(one)
            results[target]["c8"].append(eight)
            print(f"round {round_index + 1}/{rounds} {target:>6}: 1 conn p50 "
                  f"{one.p50_ms:.2f} ms; 8 conns {eight.rps:.0f} req/s, p99 "
                  f"{eight.p99_ms:.1f} ms", file=sys.stderr, flush=True)  # fmt: skip
    return results


def table(results: dict[str, dict[str, list[WrkResult]]]) -> str:
    bare_p50 = _median(results["bare"]["c1"], "p50_ms")
    bare_rps = _median(results["bare"]["c8"], "rps")
    labels = {"bare": "bare Ray Serve app (same model)",
              "steady": "pickserve steady state (default knobs, queue fed)",
              "active": "pickserve active selection (shadow rate 5 %)"}  # fmt: skip
    lines = [
        "| setting | 1 conn p50 ms | 1 conn p99 ms | 8 conns req/s | 8 conns p50 ms | "
        "8 conns p99 ms | p50 − bare | req/s ÷ bare | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        c1, c8 = results[target]["c1"], results[target]["c8"]
        p50, rps = _median(c1, "p50_ms"), _median(c8, "rps")
        failed = sum(r.failed for r in c1 + c8)
        lines.append(
            f"| {labels[target]} | {p50:.2f} | {_median(c1, 'p99_ms'):.2f} | {rps:.0f} | "
            f"{_median(c8, 'p50_ms'):.1f} | {_median(c8, 'p99_ms'):.1f} | "
            f"{p50 - bare_p50:+.2f} ms | {rps / bare_rps:.2f}× | {failed} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the three apps")
    parser.add_argument("--duration-s", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--port", type=int, default=8765, help="Ray proxy port")
    parser.add_argument(
        "--steady-knobs",
        type=json.loads,
        default={},
        help="knobs of `steady` as JSON (default: pickserve's defaults)",
    )
    parser.add_argument(
        "--active-knobs",
        type=json.loads,
        default={"shadow_rate": 0.05, "queue_target": None},
        help="knobs of `active` as JSON",
    )
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="skip settling `steady` (it serves its initial model, svc-rbf)",
    )
    parser.add_argument("--soak-s", type=float, default=0, help="then soak `active` this long")
    parser.add_argument("--plot", type=Path, default=Path("loadtest-soak.png"))
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="then profile the bare and the steady replica with py-spy under one connection "
        "and write their stacks into this folder",
    )
    parser.add_argument("--profile-s", type=float, default=20, help="seconds per profile")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    require_wrk()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = str(Path(__file__).resolve().parents[1])  # Ray workers import loadtest.bare
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    import ray
    from ray import serve

    from service.app import demo_folder
    from service.config.settings import Settings
    from service.models.demo_data import ensure_demo

    state_dir = Path(tempfile.mkdtemp(prefix="pickserve-overhead-"))
    demo = ensure_demo(demo_folder(Settings(state_dir=state_dir)))
    features, _ = demo.stream("blurred")
    bodies = _bodies(features)
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    base = f"http://127.0.0.1:{args.port}"
    report: dict[str, Any] = {}
    try:
        _deploy_pickserve("steady", state_dir, args.steady_knobs)
        _deploy_pickserve("active", state_dir, {"seed": 2, **args.active_knobs})
        if not args.no_settle:
            report["settle"] = _settle(f"{base}/steady", demo, "blurred")
            print(f"settled: {report['settle']}", file=sys.stderr)
        served = _deploy_bare(base, demo)
        target = int(args.steady_knobs.get("queue_target", _default_queue_target()) or 0)
        if target:
            report["queue_fed"] = _feed_queue(f"{base}/steady", bodies, target)
        _measure_into(report, base, bodies, served, args)
        if args.profile is not None:
            report["profile"] = _profile(base, bodies, args.profile, args.profile_s)
        if args.soak_s > 0:
            from loadtest.soak import soak

            report["soak"] = soak(f"{base}/active", bodies, demo, args.soak_s, args.plot)
    finally:
        serve.shutdown()
        ray.shutdown()
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def _deploy_bare(base: str, demo: Any) -> str:
    """Deploy the bare app with the model `steady` serves; its name."""
    from ray import serve

    from loadtest.bare import BareModel
    from service.models.pool_file import read_pool_spec

    served = str(httpx.get(f"{base}/steady/v1/selection", timeout=30).json()["served_model"])
    spec = read_pool_spec(demo.pool_file)
    model_file = next(c.sklearn for c in spec.candidates if c.name == served)
    assert model_file is not None
    bare = BareModel.bind(str(demo.pool_file.parent / model_file))  # type: ignore[attr-defined]
    serve.run(bare, name="bare", route_prefix="/bare")
    return served


def _measure_into(
    report: dict[str, Any], base: str, bodies: list[str], served: str, args: argparse.Namespace
) -> None:
    """The three apps alternated under wrk; the figures and the shadow work done meanwhile
    go into `report`, and the table is printed."""
    before = {t: _shadow_counts(f"{base}/{t}") for t in ("steady", "active")}
    results = measure(base, bodies, args.rounds, args.duration_s)
    after = {t: _shadow_counts(f"{base}/{t}") for t in ("steady", "active")}
    report["served_model"] = served
    report["shadow_items_during_measurement"] = {
        t: {k: after[t].get(k, 0) - before[t].get(k, 0) for k in after[t]} for t in after
    }
    report["results"] = {t: {c: [r.as_dict() for r in rs] for c, rs in v.items()}
                         for t, v in results.items()}  # fmt: skip
    print(f"\nmodel served by all three: {served}; {args.rounds} rounds of "
          f"{args.duration_s:g} s per run; medians\n")  # fmt: skip
    print(table(results))
    print(f"\nshadow items during the measurement: {report['shadow_items_during_measurement']}")


def _default_queue_target() -> int | None:
    from service.config.knobs import RuntimeKnobs

    return RuntimeKnobs().queue_target


def _profile(base: str, bodies: list[str], folder: Path, duration_s: float) -> dict[str, Any]:
    from loadtest.profile import profile_table, profile_under_load, replica_pid

    replicas = {"bare": ("bare", "BareModel", "/bare/predict"),
                "steady": ("steady", "Router", "/steady/v1/predict")}  # fmt: skip
    profiles = {}
    for name, (app, deployment, path) in replicas.items():
        pid, stacks = replica_pid(app, deployment), folder / f"{name}-stacks.txt"
        profiles[name] = profile_under_load(pid, base + path, bodies, duration_s, stacks)
    print("\nreplica profiles (py-spy, one connection):\n")
    print(profile_table(profiles))
    return {name: p.as_dict() for name, p in profiles.items()}


if __name__ == "__main__":
    sys.exit(main())
