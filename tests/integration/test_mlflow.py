"""MLflow, for real: a tracking server (`mlflow server`, SQLite and a local artifact
folder) on a free port, the demo's scikit-learn models registered in it as versions of
`digits`, and pickserve over real Ray Serve serving them by registry URI. MLflow's own
client reads back what pickserve wrote: one run per round, its parameters, the posterior's
history (a point per label batch, none twice), the swaps, the best, the champion alias.
MLflow is stopped for part of a round: no predict or label fails, and once it is back the
run equals the one a writer that never saw the outage makes of the same journal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import joblib
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from service.config.knobs import RuntimeKnobs
from service.config.settings import Settings
from service.models.demo_data import DemoData
from service.replica.tracking import JournalWriter, TrackingConfig
from service.state.live import LiveState
from service.state.store.factory import open_backend
from service.tools.demo import drive
from tests.integration.conftest import Deploy
from tests.integration.test_label_page import CHROMIUM_FLAGS
from tests.mlflow_server import MlflowServer, register, register_pyfunc
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def registry(mlflow_server: MlflowServer) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def registered(
    mlflow_server: MlflowServer,
    registry: Any,
    demo: DemoData,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Every demo candidate a version of `digits` (name -> version); the stream's best is
    also `@challenger`, the first two are tagged stage=candidate, and a model of 5 features
    is `narrow` version 1."""
    pool = yaml.safe_load(demo.pool_file.read_text())
    versions = {}
    for entry in pool["candidates"]:
        model = joblib.load(demo.pool_file.parent / entry["sklearn"])
        versions[entry["name"]] = register(
            mlflow_server.url, model, "digits", demo.stream_features[:5]
        )
    registry.set_registered_model_alias(
        "digits", "challenger", versions[demo.summary["best_today"]]
    )
    for name in list(versions)[:2]:  # the first two: an `mlflow_pool` by tag
        registry.set_model_version_tag("digits", versions[name], "stage", "candidate")
    rows = np.random.default_rng(0).normal(size=(40, 5))
    narrow = LogisticRegression().fit(rows, (rows[:, 0] > 0).astype(int))
    register(mlflow_server.url, narrow, "narrow", rows)
    return versions


def registry_pool(demo: DemoData, versions: dict[str, str], folder: Path) -> Path:
    """The demo pool, every candidate by registry URI (the stream's best by its alias)."""
    pool = yaml.safe_load(demo.pool_file.read_text())
    best = demo.summary["best_today"]
    pool["candidates"] = [
        {
            "name": name,
            "mlflow": "models:/digits@challenger" if name == best else f"models:/digits/{version}",
        }
        for name, version in versions.items()
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(pool, sort_keys=False))
    return path


def tracking_settings(server: MlflowServer, experiment: str, **extra: Any) -> dict[str, Any]:
    return {"mlflow_tracking_uri": server.url, "mlflow_experiment": experiment, **extra}


def eventually(check: Callable[[], T | None], timeout_s: float = 90, what: str = "") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def round_run(registry: Any, experiment: str, number: int) -> Any | None:
    found = registry.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = registry.search_runs([found.experiment_id],
                                filter_string=f"tags.`pickserve.round` = '{number}'")  # fmt: skip
    assert len(runs) <= 1, f"{len(runs)} runs for round {number}"
    return runs[0] if runs else None


def caught_up(registry: Any, experiment: str, number: int, labels: int) -> Any | None:
    """The round's run once MLflow holds its point at `labels` labels."""
    run = round_run(registry, experiment, number)
    if run is None:
        return None
    steps = [m.step for m in registry.get_metric_history(run.info.run_id, "labels")]
    return run if steps and max(steps) == labels else None


def metric(client: httpx.Client, series: str) -> float:
    """One series of /metrics (0 when it is not there)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def histories(registry: Any, run: Any) -> dict[str, list[tuple[int, float, int]]]:
    """Every metric of a run: its (step, value, timestamp) points, in step order."""
    keys = registry.get_run(run.info.run_id).data.metrics
    return {key: sorted((m.step, m.value, m.timestamp) for m in
                        registry.get_metric_history(run.info.run_id, key))
            for key in keys}  # fmt: skip


def swaps_of(registry: Any, run: Any) -> list[dict[str, Any]]:
    import mlflow.artifacts

    text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/swaps.json")
    return list(json.loads(text))


def test_a_registry_pool_converges_and_every_round_is_a_run(
    deploy: Deploy, demo: DemoData, mlflow_server: MlflowServer, registry: Any,
    registered: dict[str, str], tmp_path: Path, state_dir: Path,
) -> None:  # fmt: skip
    pool = registry_pool(demo, registered, tmp_path / "pool")
    experiment = "journey"
    client = deploy(pool=pool, shadow_rate=0.5, router_replicas=2,
                    settings=tracking_settings(mlflow_server, experiment,
                                               mlflow_champion_alias="champion"))  # fmt: skip
    first, target = demo.summary["best_on_training_distribution"], demo.summary["best_today"]
    progress = drive(client, demo, target, max_items=12_000, seed=3, labels_per_batch=50)
    selection = client.get("/v1/selection").json()
    assert selection["served_model"] == target and selection["posterior"][target] >= 0.9
    assert progress.labels_posted == selection["labels"]  # every label landed

    run = eventually(lambda: caught_up(registry, experiment, 0, selection["labels"]),
                     what="the round's last point in MLflow")  # fmt: skip
    assert run.info.run_name == "round-0"
    assert run.data.tags["pickserve.namespace"] == deploy.namespace  # type: ignore[attr-defined]
    params = run.data.params
    assert params["selector"] == "modelpicker" and float(params["gamma"]) == RuntimeKnobs().gamma
    assert params["candidates"].split(",") == list(registered)
    assert params[f"candidate.{target}"].startswith(
        f"digits v{registered[target]} @challenger, run "
    )
    assert params[f"candidate.{first}"].startswith(f"digits v{registered[first]}")
    # the posterior's history: one point per label batch, at step = labels, none twice
    metrics = histories(registry, run)
    steps = [step for step, _, _ in metrics["labels"]]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)
    assert all(value == step for step, value, _ in metrics["labels"])
    assert len(steps) >= 3 and steps[-1] == selection["labels"]
    for name in registered:
        assert [s for s, _, _ in metrics[f"posterior.{name}"]] == steps
    assert metrics[f"posterior.{target}"][-1][1] >= 0.9
    live = LiveState(
        open_backend(
            Settings(state_dir=state_dir, store="embedded", store_namespace=deploy.namespace)
        )
    )  # type: ignore[attr-defined]
    assert [p["step"] for p in live.journal(0, 100_000)] == steps  # the whole journal, once
    live.backend.close()
    written = eventually(lambda: metric(client, "pickserve_mlflow_points_total") == len(steps),
                         what="the points counted once in /metrics")  # fmt: skip
    assert written  # two replicas, each point written (and counted) once
    print(
        f"\nregistry loop: {progress.items_served} items, {selection['labels']} labels, "
        f"{len(steps)} points in MLflow, posterior {metrics[f'posterior.{target}'][-1][1]:.3f}"
    )
    assert metrics[f"posterior.{target}"][-1][1] > metrics[f"posterior.{target}"][0][1]
    # the swaps, as the service lists them, and the champion alias on the served version
    swaps = eventually(lambda: (s := swaps_of(registry, run)) and
                       len(s) == len(selection["swaps"]) and s, what="swaps.json")  # fmt: skip
    assert [(s["from_model"], s["to_model"], s["labels"]) for s in swaps] == [
        (s["from_model"], s["to_model"], s["labels"]) for s in selection["swaps"]
    ]
    assert swaps[-1]["to_model"] == target
    champion = eventually(lambda: registry.get_model_version_by_alias("digits", "champion"),
                          what="the champion alias")  # fmt: skip
    assert champion.version == registered[target]

    # a new round: the old run ends FINISHED with its best, the new one starts
    assert client.post("/v1/rounds", json={}).status_code == 200
    ended = eventually(lambda: (r := registry.get_run(run.info.run_id)).info.status == "FINISHED"
                       and r, what="round 0 finished")  # fmt: skip
    assert ended.data.tags["pickserve.best"] == target
    assert eventually(lambda: round_run(registry, experiment, 1), what="round 1's run")
    screenshot_of_the_run(mlflow_server, registry, experiment, run)


def screenshot_of_the_run(server: MlflowServer, registry: Any, experiment: str, run: Any) -> None:
    """The run in MLflow's own UI, in a real browser: the README's picture."""
    from playwright.sync_api import sync_playwright

    experiment_id = registry.get_experiment_by_name(experiment).experiment_id
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(
            f"{server.url}/#/experiments/{experiment_id}/runs/{run.info.run_id}/model-metrics"
        )
        page.get_by_text("round-0").first.wait_for(timeout=60_000)
        page.get_by_text("posterior", exact=False).first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)  # the charts draw after their data arrives
        page.screenshot(path=str(ROOT / "docs" / "mlflow-round.png"))
        browser.close()


def test_mlflow_down_for_part_of_a_round_loses_nothing_and_writes_nothing_twice(
    deploy: Deploy, demo: DemoData, mlflow_server: MlflowServer, registry: Any,
    registered: dict[str, str], state_dir: Path, tmp_path: Path,
) -> None:  # fmt: skip
    pool = registry_pool(demo, registered, tmp_path / "pool")
    experiment = "outage"
    client = deploy(
        pool=pool, shadow_rate=0.5, settings=tracking_settings(mlflow_server, experiment)
    )
    never = "(no candidate)"  # drive on: the round must go on through the outage
    before = drive(client, demo, never, max_items=400, seed=5, labels_per_batch=20)
    labels = client.get("/v1/selection").json()["labels"]
    eventually(lambda: caught_up(registry, experiment, 0, labels), what="the first points")
    mlflow_server.stop()
    try:
        during = drive(client, demo, never, max_items=800, seed=6, labels_per_batch=20)
        # a registry candidate cannot be added while the registry is down: one line, a 422
        added = client.post("/v1/candidates", json={"name": "late", "mlflow": "models:/digits/1"})
        assert added.status_code == 422 and "unreachable" in added.json()["detail"]
    finally:
        mlflow_server.start()
    selection = client.get("/v1/selection").json()
    assert before.labels_posted + during.labels_posted == selection["labels"]
    assert during.labels_posted > 0 and during.items_served >= 800  # no request failed
    run = eventually(lambda: caught_up(registry, experiment, 0, selection["labels"]),
                     what="the journal written after the outage")  # fmt: skip
    assert metric(client, 'pickserve_errors_total{kind="mlflow"}') > 0  # the outage, counted

    # the same journal, written by a writer that never saw the outage
    namespace = deploy.namespace  # type: ignore[attr-defined]
    assert run.data.tags["pickserve.namespace"] == namespace
    settings = Settings(state_dir=state_dir, store="embedded", store_namespace=namespace)
    live = LiveState(open_backend(settings))
    knobs = RuntimeKnobs(seed=7, queue_target=None, drift_action="off", shadow_rate=0.5)
    entries = {c["name"]: c["mlflow"] for c in yaml.safe_load(pool.read_text())["candidates"]}
    reference = JournalWriter(live, TrackingConfig("outage-reference", settings.store_namespace),
                              lambda: entries, knobs.model_dump, client=registry)  # fmt: skip
    reference.sync(time.time())
    copy = round_run(registry, "outage-reference", 0)
    assert copy is not None
    kept = histories(registry, run)
    assert kept == histories(registry, copy)
    assert kept["labels"][-1][0] == selection["labels"]
    print(
        f"\noutage: {during.items_served} items and {during.labels_posted} labels while MLflow "
        f"was down; {len(kept['labels'])} points, {selection['labels']} labels in all"
    )
    assert len({s for s, _, _ in kept["labels"]}) == len(kept["labels"])  # none twice
    assert run.data.params == copy.data.params
    assert swaps_of(registry, run) == swaps_of(registry, copy) if selection["swaps"] else True
    live.backend.close()


FAILURES = [
    (
        "unknown model",
        "models:/nothing-here/1",
        "the registry has no registered model 'nothing-here'",
    ),
    ("unknown version", "models:/digits/99", "registered model 'digits' has no version 99"),
    (
        "alias not set",
        "models:/digits@nobody",
        "registered model 'digits' has no alias @nobody set",
    ),
    (
        "signature",
        "models:/narrow/1",
        "its signature takes 5 input columns, the pool has n_features=64",
    ),
]


def failing_pool(demo: DemoData, versions: dict[str, str], folder: Path) -> Path:
    path = registry_pool(demo, versions, folder)
    pool = yaml.safe_load(path.read_text())
    pool["candidates"] += [
        {"name": f"bad-{i}", "mlflow": uri} for i, (_, uri, _) in enumerate(FAILURES)
    ]
    path.write_text(yaml.safe_dump(pool, sort_keys=False))
    return path


def run_service(
    *args: str, tracking_uri: str, state_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PICKSERVE_MLFLOW_TRACKING_URI": tracking_uri}
    if state_dir is not None:
        environment["PICKSERVE_STATE_DIR"] = str(state_dir)
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True,
                          timeout=300, env=environment, cwd=ROOT)  # fmt: skip


def test_every_registry_failure_is_one_line_at_start_up(
    demo: DemoData, mlflow_server: MlflowServer, registered: dict[str, str], tmp_path: Path
) -> None:
    pool = failing_pool(demo, registered, tmp_path / "pool")
    checked = run_service("check-pool", str(pool), tracking_uri=mlflow_server.url)
    assert checked.returncode == 2
    errors = [line for line in checked.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(FAILURES)
    for (kind, uri, reason), line in zip(FAILURES, errors, strict=True):
        assert line.endswith(f"(mlflow {uri}): {reason}"), (kind, line)
    loaded = len(registered)  # the good ones, with their registry column
    assert f"{loaded} of {loaded + len(FAILURES)} candidates load" in checked.stdout
    assert "registry" in checked.stdout and "digits v" in checked.stdout
    started = run_service("--pool", str(pool), "--port", str(free_port()),
                          tracking_uri=mlflow_server.url, state_dir=tmp_path / "state")  # fmt: skip
    assert started.returncode == 2
    assert started.stderr.strip().splitlines()[-1].endswith(FAILURES[0][2])
    tagged = tmp_path / "tagged" / "pool.yaml"  # a registered model's tagged versions
    tagged.parent.mkdir()
    pool_spec = yaml.safe_load(demo.pool_file.read_text())
    pool_spec.pop("initial")
    pool_spec["candidates"] = []
    pool_spec["mlflow_pool"] = {"model": "digits", "tag": "stage=candidate"}
    tagged.write_text(yaml.safe_dump(pool_spec))
    listed = run_service("check-pool", str(tagged), tracking_uri=mlflow_server.url)
    assert listed.returncode == 0, listed.stderr
    first_two = list(registered.values())[:2]
    for version in first_two:
        assert f"digits-v{version}" in listed.stdout and f"digits v{version}," in listed.stdout
    assert "2 of 2 candidates load" in listed.stdout
    unreachable = f"http://user:secret@127.0.0.1:{free_port()}"
    down = run_service("check-pool", str(registry_pool(demo, registered, tmp_path / "p2")),
                       tracking_uri=unreachable)  # fmt: skip
    assert down.returncode == 2 and "secret" not in down.stderr
    lines = [line for line in down.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == len(registered)
    assert all(line.endswith(f"the MLflow registry at {unreachable.replace('user:secret@', '')} "
                             "is unreachable") for line in lines)  # fmt: skip


def test_every_registry_failure_is_a_422_at_run_time(
    deploy: Deploy, demo: DemoData, mlflow_server: MlflowServer, registered: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    pool = registry_pool(demo, registered, tmp_path / "pool")
    client = deploy(pool=pool, settings={"mlflow_tracking_uri": mlflow_server.url,
                                         "mlflow_tracking": False})  # fmt: skip
    before = client.get("/v1/pool").json()
    for kind, uri, reason in FAILURES:
        answer = client.post("/v1/candidates", json={"name": "newcomer", "mlflow": uri})
        assert answer.status_code == 422, (kind, answer.text)
        assert answer.json()["detail"].endswith(reason), (kind, answer.text)
    assert client.get("/v1/pool").json() == before  # nothing changed
    malformed = client.post("/v1/candidates", json={"name": "x", "mlflow": "runs:/abc/model"})
    assert malformed.status_code == 422
    added = client.post(
        "/v1/candidates",
        json={
            "name": "again",
            "mlflow": f"models:/digits/{registered[demo.summary['best_today']]}",
        },
    )
    assert added.status_code == 200, added.text
    assert "again" in added.json()["candidates"]


class DiesAfterWriting:
    """MLflow's client, but the writer dies right after a batch of points landed, before
    its cursor moved (as a replica killed at that moment)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def log_batch(self, run_id: str, **kwargs: Any) -> None:
        self.client.log_batch(run_id, **kwargs)
        if kwargs.get("metrics"):
            raise ConnectionError("the replica died here")


def relabeled(live: LiveState, count: int) -> None:
    """The round's label count moved to `count` (as labels landing move it)."""
    from dataclasses import replace

    from service.state.rules import tally_key
    from service.state.store.base import Put, Txn

    def attempt() -> tuple[Txn, None]:
        current = live.selection(recent_swaps=0)
        tally = replace(current.tally, picker=replace(current.picker, labels=count))
        key = tally_key(current.picker.round)
        return Txn(f"labels:{key}:{count}", expect={key: current.tally_version},
                   put={key: Put(tally.to_dict())}), None  # fmt: skip

    live._transact(attempt)


def test_a_writer_taking_over_never_writes_a_point_twice_and_drift_is_on_both_runs(
    registry: Any,
) -> None:
    from service.state.store.memory import MemoryBackend

    live = LiveState(MemoryBackend())
    live.initialise(["a", "b"], 0, None, 1_000.0)
    config = TrackingConfig("takeover", "ns-takeover")
    knobs = RuntimeKnobs().model_dump
    dying = JournalWriter(live, config, lambda: {}, knobs, client=DiesAfterWriting(registry))
    for count in (1, 2, 3):
        relabeled(live, count)
        live.record_point(1_000.0 + count, 100.0)
    with pytest.raises(ConnectionError):
        dying.sync(2_000.0)  # the points reached MLflow; its cursor did not move
    run = round_run(registry, "takeover", 0)
    assert [m.step for m in registry.get_metric_history(run.info.run_id, "labels")] == [1, 2, 3]
    taker = JournalWriter(live, config, lambda: {}, knobs, client=registry)
    assert not taker.take_lease(2_030.0)  # the dead writer's lease holds until it expires
    taker.sync(2_100.0)  # past it
    assert not dying.take_lease(2_101.0)  # now the taker's
    relabeled(live, 4)
    live.record_point(1_004.0, 100.0)
    taker.sync(2_104.0)
    steps = [m.step for m in registry.get_metric_history(run.info.run_id, "labels")]
    assert steps == [1, 2, 3, 4]  # each once: the taker began after MLflow's last step

    evidence = {"round": 0, "reason": "drift", "p_value": 1e-7, "window": 300}
    live.start_round_on_drift(evidence, 2_110.0)
    taker.sync(2_111.0)
    ended = registry.get_run(run.info.run_id)
    assert ended.info.status == "FINISHED" and ended.data.tags["pickserve.ended_by"] == "drift"
    assert ended.data.tags["pickserve.best"] == "a"
    import mlflow.artifacts

    recorded = json.loads(mlflow.artifacts.load_text(f"{ended.info.artifact_uri}/ended_by.json"))
    assert recorded["p_value"] == 1e-7
    following = round_run(registry, "takeover", 1)
    assert following.data.tags["pickserve.started_by"] == "drift"
    assert following.data.params["round"] == "1" and following.info.status == "RUNNING"


def test_a_pyfunc_candidate_answers_with_its_class_probabilities(
    demo: DemoData, mlflow_server: MlflowServer, registered: dict[str, str], tmp_path: Path
) -> None:
    """The same estimator as a scikit-learn version and as a pyfunc one: the same accuracy
    on the stream; a pyfunc whose signature declares other outputs is refused in one line."""
    name = next(iter(registered))
    entry = next(c for c in yaml.safe_load(demo.pool_file.read_text())["candidates"]
                 if c["name"] == name)  # fmt: skip
    estimator = joblib.load(demo.pool_file.parent / entry["sklearn"])
    rows = demo.stream_features[:5]
    as_pyfunc = register_pyfunc(mlflow_server.url, estimator, "digits-pyfunc", rows, 10)
    narrow = register_pyfunc(mlflow_server.url, estimator, "digits-pyfunc", rows, 3)
    pool_spec = yaml.safe_load(demo.pool_file.read_text())
    pool_spec.pop("initial")
    pool_spec["candidates"] = [
        {"name": "as-sklearn", "mlflow": f"models:/digits/{registered[name]}"},
        {"name": "as-pyfunc", "mlflow": f"models:/digits-pyfunc/{as_pyfunc}"},
        {"name": "pyfunc-3", "mlflow": f"models:/digits-pyfunc/{narrow}"},
    ]
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool_spec))
    np.save(tmp_path / "x.npy", demo.stream_features[:400])
    np.save(tmp_path / "y.npy", demo.stream_labels[:400])
    checked = run_service("check-pool", str(tmp_path / "pool.yaml"), "--data",
                          str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                          tracking_uri=mlflow_server.url)  # fmt: skip
    assert checked.returncode == 2
    (line,) = [x for x in checked.stderr.splitlines() if x.startswith("error:")]
    assert line.endswith("its signature returns 3 columns, the pool has 10 classes (a pyfunc "
                         "candidate returns one probability per class)")  # fmt: skip
    accuracy = {
        found.group(1): float(found.group(2))
        for found in (re.match(r"│ (as-\w+) .*│\s+([0-9.]+) │$", x.strip())
                      for x in checked.stdout.splitlines())
        if found
    }  # fmt: skip
    truth = float(
        np.mean(estimator.predict(demo.stream_features[:400]) == demo.stream_labels[:400])
    )
    assert accuracy == {"as-sklearn": pytest.approx(truth, abs=5e-4),
                        "as-pyfunc": pytest.approx(truth, abs=5e-4)}, checked.stdout  # fmt: skip
