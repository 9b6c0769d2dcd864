"""Failover and canary swaps over real Ray Serve: a served model that starts raising, then
hanging, costs no request and serves again once it recovers; a canary that errors on 30 %
of its requests is rolled back, one that does not is promoted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from service.models.demo_data import DemoData
from tests.integration.conftest import Deploy, demo_models_in

SWITCHABLE = '''
"""A demo model whose behaviour a file beside it decides: ok, raise, hang, or flaky (30 %
of calls raise)."""
import time
from pathlib import Path

import joblib
import numpy as np

MODE = Path(__file__).with_name("mode.txt")


class Switchable:
    def __init__(self, model_file):
        self.model = joblib.load(model_file)
        self.rng = np.random.default_rng(0)

    def predict_proba(self, features):
        mode = MODE.read_text().strip() if MODE.exists() else "ok"
        if mode == "raise" or (mode == "flaky" and self.rng.random() < 0.3):
            raise RuntimeError("switched to fail")
        deadline = time.monotonic() + 20
        while mode == "hang" and time.monotonic() < deadline:
            time.sleep(0.05)
            mode = MODE.read_text().strip()
        return self.model.predict_proba(features)


def make():
    return Switchable(MODEL_FILE)
'''


def switchable_pool(demo: DemoData, folder: Path, initial: str, model: str = "knn-3") -> Path:
    models = demo_models_in(demo, folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = f"MODEL_FILE = {str(models / f'{model}.joblib')!r}\n" + SWITCHABLE
    (folder / "switchable.py").write_text(source)
    (folder / "mode.txt").write_text("ok")
    pool = folder / "pool.yaml"
    pool.write_text(
        f"n_features: 64\nclasses: 10\ninitial: {initial}\ncandidates:\n"
        "  - {name: switch, python: 'switchable:make'}\n"
        f"  - {{name: logreg, sklearn: {models / 'logreg.joblib'}}}\n"
    )
    return pool


class Clients:
    """Steady predicts from two threads; every answer's status and model."""

    def __init__(self, base_url: str, rows: list[list[float]]) -> None:
        self.base_url, self.rows = base_url, rows
        self.answers: list[tuple[float, int, str | None]] = []
        self.latency_ms: list[float] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(2)]

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stop.is_set() and len(self.answers) < 50_000:
                started = time.perf_counter()
                answer = client.post("/v1/predict", json={"instances": self.rows})
                self.latency_ms.append((time.perf_counter() - started) * 1000)
                model = answer.json().get("model") if answer.status_code == 200 else None
                self.answers.append((time.monotonic(), answer.status_code, model))

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def at_least(self, answers: int, timeout_s: float = 60.0) -> None:
        """Go on until this many answers came back (a slow machine answers fewer in the
        same scenario)."""
        deadline = time.monotonic() + timeout_s
        while len(self.answers) < answers:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers"
            time.sleep(0.1)

    def models_since(self, moment: float) -> set[str | None]:
        return {m for t, _, m in self.answers if t >= moment}

    def wait_for(self, model: str, timeout_s: float = 15.0) -> float:
        """Seconds until `model` answers a request sent from now on."""
        moment, deadline = time.monotonic(), time.monotonic() + timeout_s
        while model not in self.models_since(moment):
            assert time.monotonic() < deadline, f"{model} does not answer"
            time.sleep(0.1)
        return time.monotonic() - moment


def test_a_failing_then_hanging_served_model_costs_no_request_and_recovers(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    pool = switchable_pool(demo, tmp_path / "pool", initial="switch")
    client = deploy(pool=pool, shadow_rate=0.0, settings={"model_timeout_s": 1.0})
    mode = tmp_path / "pool" / "mode.txt"
    with Clients(str(client.base_url), demo.stream_features[:4].tolist()) as clients:
        clients.wait_for("switch")
        mode.write_text("raise")
        clients.wait_for("logreg")  # failed over, within the request
        health = client.get("/metrics").text
        assert 'pickserve_model_healthy{model="switch"} 0.0' in health
        mode.write_text("ok")
        back_after_raise = clients.wait_for("switch")  # the probe saw it answer: it serves again
        mode.write_text("hang")
        clients.wait_for("logreg")
        mode.write_text("ok")
        back_after_hang = clients.wait_for("switch", timeout_s=25)
        clients.at_least(60)  # enough traffic for "not one failed" to say something
    statuses = [s for _, s, _ in clients.answers]
    slowest = max(clients.latency_ms)
    by_model = {m: sum(1 for _, _, x in clients.answers if x == m) for m in ("switch", "logreg")}
    print(
        f"\nfailover figures: {len(statuses)} requests, {len(statuses) - statuses.count(200)} "
        f"failed; answered by switch {by_model['switch']}, by logreg {by_model['logreg']}; "
        f"slowest {slowest:.0f} ms (model_timeout_s 1); serving again {back_after_raise:.1f} s "
        f"after it stopped raising, {back_after_hang:.1f} s after it stopped hanging"
    )
    assert statuses.count(200) == len(statuses) > 50  # not one failed request
    failovers = [line for line in client.get("/metrics").text.splitlines()
                 if line.startswith('pickserve_failovers_total{model="switch"}')]  # fmt: skip
    assert failovers and float(failovers[0].split()[-1]) >= 2


def label_for(client: httpx.Client, model: str, demo: DemoData, rounds: int = 60) -> None:
    """Label queued items with `model`'s predictions until it is the posterior's best."""
    for n in range(rounds):
        rows = demo.stream_features[(n * 16) % 700 : (n * 16) % 700 + 16].tolist()
        client.post("/v1/predict", json={"instances": rows})
        time.sleep(0.7)  # the shadow batch lands
        items = client.get("/v1/queries", params={"limit": 50}).json()["items"]
        labels = [{"item_id": i["item_id"], "label": i["predictions"][model]} for i in items]
        if labels:
            client.post("/v1/feedback", json={"labels": labels})
        selection = client.get("/v1/selection").json()
        if selection["best_model"] == model and selection["posterior"][model] > 0.9:
            return
    raise AssertionError(f"{model} did not become the posterior's best")


def run_canary(deploy: Deploy, demo: DemoData, folder: Path, flaky: bool) -> tuple[dict, list]:  # type: ignore[type-arg]
    pool = switchable_pool(demo, folder, initial="logreg")
    (folder / "mode.txt").write_text("flaky" if flaky else "ok")
    client = deploy(pool=pool, shadow_rate=1.0, gamma=50.0, swap_mode="canary",
                    canary_steps=[0.3, 0.6], canary_step_requests=20,
                    canary_max_error_rate=0.1)  # fmt: skip
    label_for(client, "switch", demo)
    with Clients(str(client.base_url), demo.stream_features[:2].tolist()) as clients:
        deadline = time.monotonic() + 60
        while True:
            kinds = [s["kind"] for s in client.get("/v1/selection").json()["swaps"]]
            if "rollback" in kinds or ("swap" in kinds and "canary_start" in kinds):
                break
            assert time.monotonic() < deadline, f"the canary neither ended nor moved: {kinds}"
            time.sleep(0.2)
        time.sleep(1.0)
    return client.get("/v1/selection").json(), clients.answers


def test_a_canary_that_errors_is_rolled_back_and_a_sound_one_is_promoted(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    selection, answers = run_canary(deploy, demo, tmp_path / "flaky", flaky=True)
    kinds = [s["kind"] for s in selection["swaps"]]
    assert kinds[0] == "canary_start" and "rollback" in kinds and "swap" not in kinds
    rollback = next(s for s in selection["swaps"] if s["kind"] == "rollback")
    assert rollback["to_model"] == "switch" and "error rate" in rollback["reason"]
    assert selection["served_model"] == "logreg"  # the served model stayed
    assert all(status == 200 for _, status, _ in answers)  # its errors were failed over

    selection, answers = run_canary(deploy, demo, tmp_path / "sound", flaky=False)
    kinds = [s["kind"] for s in selection["swaps"]]
    assert kinds[:2] == ["canary_start", "canary_step"] and kinds[-1] == "swap"
    assert selection["swaps"][-1]["via"] == "canary"
    assert selection["served_model"] == "switch"
    assert all(status == 200 for _, status, _ in answers)
    print(
        f"\ncanary figures: the flaky one rolled back ({rollback['reason']}); the sound one "
        f"promoted after {len(kinds) - 1} steps, {len(answers)} client requests, 0 failed"
    )
    shares = [m for _, _, m in answers]
    assert "switch" in shares and "logreg" in shares  # traffic moved in steps
