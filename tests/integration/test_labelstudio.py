"""The Label Studio bridge against a real Label Studio (its own virtualenv, started here on
a free port) and real pickserve: tasks go out, annotations made through Label Studio's
API as a person would come back as labels exactly once, also when webhooks are lost while
the bridge is down and when it is killed and restarted; skipped tasks give no label; a
new round withdraws the open tasks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.models.demo_data import DemoData
from tests.integration.conftest import Deploy
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
LS_TOKEN = "ls-test-token-0123456789abcdef01"
TOKENS = [
    {"name": "label-studio-bridge", "token": "bridge-token-0123456789ab", "roles": ["bridge"]},
    {"name": "ops", "token": "ops-ls-token-0123456789abcd", "roles": ["admin"]},
]
OPS = {"Authorization": "Bearer ops-ls-token-0123456789abcd"}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def studio_env(data: Path) -> dict[str, str]:
    env = dict(
        os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(data), LABEL_STUDIO_USERNAME="ops@example.com",
        LABEL_STUDIO_PASSWORD="a-long-password-1", LABEL_STUDIO_USER_TOKEN=LS_TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        USE_DEFAULT_BANNED_SUBNETS="false",  # let it call the bridge's webhook on 127.0.0.1
    )  # fmt: skip
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def studio_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("label-studio"))


@pytest.fixture(scope="module")
def label_studio(studio_data: Path) -> Iterator[httpx.Client]:
    subprocess.run(["bash", "deploy/ensure-label-studio.sh"], cwd=ROOT, check=True)
    data, port = studio_data, free_port()
    env = studio_env(data)
    process = subprocess.Popen(
        [str(ROOT / ".venv-labelstudio/bin/label-studio"), "start", "--no-browser", "-p", str(port)],
        env=env, stdout=(data / "log").open("wb"), stderr=subprocess.STDOUT, cwd=data,
        start_new_session=True,
    )  # fmt: skip
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        timeout=30,
        headers={"Authorization": f"Token {LS_TOKEN}"},
    )

    def up() -> bool:
        assert process.poll() is None, (data / "log").read_text()[-3000:]
        try:
            return client.get("/health").json().get("status") == "UP"
        except httpx.HTTPError:
            return False

    wait_for("Label Studio", up, timeout=240)
    yield client
    client.close()
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


class BridgeProcess:
    def __init__(self, pickserve: str, studio: str, state: Path, log: Path,
                 project: str = "digits", open_tasks: int = 6) -> None:  # fmt: skip
        self.command = [
            sys.executable, "-m", "service.tools.labelstudio", "--pickserve-url", pickserve,
            "--label-studio-url", studio, "--token", LS_TOKEN, "--project", project,
            "--state", str(state), "--webhook-port", str(free_port()), "--open-tasks",
            str(open_tasks), "--poll-s", "0.5", "--sweep-s", "2",
        ]  # fmt: skip
        self.env = dict(os.environ, PICKSERVE_TOKEN=str(TOKENS[0]["token"]))
        self.log, self.process = log, None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def tasks(studio: httpx.Client, project: int) -> list[dict[str, Any]]:
    for _ in range(5):  # Label Studio answers 500 when a task is deleted while it lists
        answer = studio.get(
            "/api/tasks/", params={"project": project, "fields": "all", "page_size": 1000}
        )
        if answer.status_code != 500:
            break
        time.sleep(0.2)
    answer.raise_for_status()
    return list(answer.json()["tasks"])


def project_id(studio: httpx.Client, title: str = "digits") -> int | None:
    projects = studio.get("/api/projects/").json()["results"]
    return next((int(p["id"]) for p in projects if p["title"] == title), None)


def annotate(studio: httpx.Client, task: dict[str, Any], label: str, skip: bool = False) -> None:
    result = [] if skip else [{"from_name": "label", "to_name": "item", "type": "choices",
                               "value": {"choices": [label]}}]  # fmt: skip
    answer = studio.post(
        f"/api/tasks/{task['id']}/annotations/", json={"result": result, "was_cancelled": skip}
    )
    answer.raise_for_status()


def audit(client: httpx.Client, round_number: int = 0) -> list[dict[str, Any]]:
    labels: list[dict[str, Any]] = client.get(
        f"/v1/rounds/{round_number}/labels", headers=OPS
    ).json()["labels"]
    return labels


def test_annotations_reach_pickserve_exactly_once(
    deploy: Deploy, demo: DemoData, label_studio: httpx.Client, tmp_path: Path
) -> None:
    client = deploy(settings={"tokens": json.dumps(TOKENS)}, shadow_rate=1.0, gamma=50.0,
                    lease_s=15.0)  # fmt: skip
    for start in (0, 48):
        rows = demo.stream_features[start : start + 48].tolist()
        assert client.post("/v1/predict", json={"instances": rows}, headers=OPS).is_success
    wait_for(
        "queued items", lambda: client.get("/v1/selection", headers=OPS).json()["queries"] >= 12
    )
    studio = label_studio
    bridge = BridgeProcess(str(client.base_url), str(studio.base_url), tmp_path / "map.sqlite3",
                           tmp_path / "bridge.log")  # fmt: skip
    bridge.start()
    try:
        project = wait_for("the project", lambda: project_id(studio))
        config = studio.get(f"/api/projects/{project}/").json()["label_config"]
        assert '<Image name="item" value="$image"' in config and '<Choice value="9"/>' in config
        first = wait_for("6 tasks", lambda: (t := tasks(studio, project)) and len(t) == 6 and t)
        assert all(t["data"]["image"].startswith("data:image/png;base64,") for t in first)
        assert all(not t["predictions"] for t in first)  # hidden from annotators by default

        # two annotations while the bridge runs: the webhook brings them
        given = {first[0]["data"]["item_id"]: "3", first[1]["data"]["item_id"]: "7"}
        annotate(studio, first[0], "3")
        annotate(studio, first[1], "7")
        wait_for("two labels", lambda: len(audit(client)) == 2, timeout=30)

        # the bridge dies: the webhooks of the next annotations are lost
        bridge.kill()
        given[first[2]["data"]["item_id"]] = "1"
        given[first[3]["data"]["item_id"]] = "0"
        annotate(studio, first[2], "1")
        annotate(studio, first[3], "0")
        annotate(studio, first[4], "", skip=True)  # skipped: no label
        time.sleep(1)
        assert len(audit(client)) == 2
        # as if it had died between writing the map and hearing back from an import
        cut_short = first[5]["data"]["item_id"]
        with sqlite3.connect(tmp_path / "map.sqlite3") as db:
            db.execute("UPDATE tasks SET status = 'pending', task_id = NULL WHERE item_id = ?",
                       (cut_short,))  # fmt: skip
        bridge.start()  # the sweep finds what the lost webhooks carried
        wait_for("four labels", lambda: len(audit(client)) == 4, timeout=60)
        wait_for("refilled slots", lambda: len(tasks(studio, project)) >= 9)

        labels = audit(client)
        assert {e["item_id"]: e["class_name"] for e in labels} == given
        assert Counter(e["item_id"] for e in labels).most_common(1)[0][1] == 1  # once each
        # each annotation is its annotator's (Label Studio's user), through the bridge role
        assert {e["by"] for e in labels} == {"ops@example.com@label-studio-bridge"}
        assert first[4]["data"]["item_id"] not in {e["item_id"] for e in labels}
        now = tasks(studio, project)
        items = Counter(t["data"]["item_id"] for t in now)
        assert items.most_common(1)[0][1] == 1, "a restart made a duplicate task"
        with sqlite3.connect(tmp_path / "map.sqlite3") as db:
            row = db.execute("SELECT task_id, status FROM tasks WHERE item_id = ?", (cut_short,))
            assert row.fetchone() == (first[5]["id"], "open")  # found, not imported again
        time.sleep(3)  # a few more sweeps and webhooks: still exactly once
        assert len(audit(client)) == 4
        assert client.get("/v1/selection", headers=OPS).json()["labels"] == 4

        # leases last 15 s, but the bridge renews them while their tasks are open: another
        # labeler asking now gets none of those items (8 s leases were let go once, on a
        # machine a fuzzer kept busy: a renewal came late)
        open_items = {t["data"]["item_id"] for t in tasks(studio, project) if not t["annotations"]}
        assert open_items
        time.sleep(16)  # past a lease: only the renewals (every 0.5 s, between sweeps) hold them
        others = client.get("/v1/queries", params={"limit": 500}, headers=OPS).json()["items"]
        assert open_items.isdisjoint(i["item_id"] for i in others)

        # a new round: the open tasks' items no longer wait, the bridge withdraws them
        assert client.post("/v1/rounds", json={}, headers=OPS).status_code == 200

        def only_annotated_left() -> bool:
            return all(t["annotations"] for t in tasks(studio, project))

        wait_for("withdrawn tasks", only_annotated_left, timeout=30)
        assert len(audit(client)) == 4
        log = (tmp_path / "bridge.log").read_text()
        assert "withdrew task" in log and "imported" in log
        assert LS_TOKEN not in log and str(TOKENS[0]["token"]) not in log  # never logged
    finally:
        if bridge.process is not None and bridge.process.poll() is None:
            bridge.process.send_signal(signal.SIGINT)
            bridge.process.wait(timeout=30)
        print((tmp_path / "bridge.log").read_text()[-3000:])


# ---- two annotators -------------------------------------------------------------------------

NOISY = "noisy@example.com"
MAKE_ANNOTATOR = f"""
from organizations.models import Organization
from rest_framework.authtoken.models import Token
from users.models import User
org = Organization.objects.order_by("id").first()
user, _ = User.objects.get_or_create(email="{NOISY}", defaults={{"username": "noisy"}})
org.add_user(user)
user.active_organization = org
user.save()
print("TOKEN", Token.objects.get_or_create(user=user)[0].key)
"""


def second_annotator(data: Path) -> str:
    """A second Label Studio user in the organization, with an API token: made in Label
    Studio's own Django shell, as an administrator would invite one."""
    done = subprocess.run(
        [str(ROOT / ".venv-labelstudio/bin/label-studio"), "shell"], input=MAKE_ANNOTATOR,
        env=studio_env(data), cwd=data, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = [w for line in done.stdout.splitlines() for w in line.split() if len(w) == 40]
    assert done.returncode == 0 and found, done.stdout[-2000:] + done.stderr[-2000:]
    return found[-1]


def test_two_annotators_each_a_labeler_overlap_reaches_the_other_and_the_noisy_one_is_flagged(
    deploy: Deploy, demo: DemoData, label_studio: httpx.Client, studio_data: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Two people annotate in Label Studio, each taking the tasks Label Studio hands them
    (its "next task"); one of them answers a wrong class half the time. Every item is an
    overlap item, and half of what the bridge is handed are gold items. Label Studio hands
    an overlap item's task to the other annotator (the bridge asks it for one more
    annotation), each annotation comes back once as a label of its own annotator, and the
    noisy one is flagged, with the lower accuracy, and quarantined."""
    client = deploy(settings={"tokens": json.dumps(TOKENS)}, shadow_rate=1.0, gamma=50.0,
                    lease_s=15.0, overlap_rate=1.0, gold_rate=0.5)  # fmt: skip
    features, labels = demo.stream("today")
    truth: dict[str, int] = {}
    for start in range(0, 192, 48):
        answer = client.post("/v1/predict", json={"instances": features[start : start + 48]
                             .tolist()}, headers=OPS)  # fmt: skip
        assert answer.is_success, answer.text
        for prediction, row in zip(answer.json()["predictions"], range(start, start + 48),
                                   strict=True):  # fmt: skip
            truth[prediction["item_id"]] = int(labels[row])
    rows = range(200, 240)
    body = {"items": [{"instance": features[r].tolist(), "label": int(labels[r])} for r in rows]}
    gold = client.post("/v1/gold", json=body, headers=OPS)
    assert gold.status_code == 200, gold.text
    truth.update(zip(gold.json()["item_ids"], (int(labels[r]) for r in rows), strict=True))
    people = {"ops@example.com": label_studio.headers["Authorization"],
              NOISY: f"Token {second_annotator(studio_data)}"}  # fmt: skip
    rng = np.random.default_rng(4)
    classes = [str(c) for c in range(10)]
    bridge = BridgeProcess(str(client.base_url), str(label_studio.base_url),
                           tmp_path / "map.sqlite3", tmp_path / "bridge.log", "digits-two",
                           open_tasks=40)  # fmt: skip
    bridge.start()
    made: dict[str, list[str]] = {name: [] for name in people}  # item ids each annotated
    try:
        project = wait_for("the project", lambda: project_id(label_studio, "digits-two"))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            for name, token in people.items():
                task = label_studio.get(f"/api/projects/{project}/next",
                                        headers={"Authorization": token})  # fmt: skip
                if task.status_code != 200:
                    continue
                item_id = task.json()["data"]["item_id"]
                assert item_id not in made[name], "Label Studio handed a task to one twice"
                answer = truth[item_id]
                if name == NOISY and rng.random() < 0.5:
                    answer = (answer + int(rng.integers(1, 10))) % 10
                result = [{"from_name": "label", "to_name": "item", "type": "choices",
                           "value": {"choices": [classes[answer]]}}]  # fmt: skip
                posted = label_studio.post(f"/api/tasks/{task.json()['id']}/annotations/",
                                           json={"result": result},
                                           headers={"Authorization": token})  # fmt: skip
                assert posted.status_code == 201, posted.text
                made[name].append(item_id)
            figures = {r["name"]: r for r in client.get(
                "/v1/labelers", headers=OPS).json()["labelers"]}  # fmt: skip
            if figures.get(f"{NOISY}@label-studio-bridge", {}).get("quarantined"):
                break
            time.sleep(0.3)
        print({n: len(m) for n, m in made.items()})
        print(json.dumps(figures, indent=1))
        honest, noisy = (figures[f"{n}@label-studio-bridge"] for n in people)
        assert noisy["flagged"] and noisy["quarantined"], noisy
        assert not honest["flagged"] and not honest["quarantined"], honest
        assert noisy["accuracy"] < 0.7 < honest["accuracy"]  # seen: 0.64 and 0.88, 30 checked each
        assert noisy["overlaps"] > 0 and honest["overlaps"] > 0 and noisy["gold"] > 0
        # overlap items reached the other annotator: both annotated some items
        both = set(made["ops@example.com"]) & set(made[NOISY])
        assert both - set(gold.json()["item_ids"]), "no item reached both annotators"

        # every annotation reached pickserve, each with a key of its own (the map keeps
        # one row per annotation), and each item's selection label is its first one's
        def handled() -> bool:
            made_ids = {int(a["id"]) for t in tasks(label_studio, project)
                        for a in t["annotations"]}  # fmt: skip
            with sqlite3.connect(tmp_path / "map.sqlite3") as db:
                rows = {r[0] for r in db.execute("SELECT annotation_id FROM answered")}
            return made_ids <= rows

        wait_for("every annotation handled", handled, timeout=30)
        labels = audit(client)
        assert Counter(e["item_id"] for e in labels).most_common(1)[0][1] == 1
        assert all(e["by"].endswith("@label-studio-bridge") for e in labels)
        log = (tmp_path / "bridge.log").read_text()
        assert "wants another annotator" in log
    finally:
        if bridge.process is not None and bridge.process.poll() is None:
            bridge.process.send_signal(signal.SIGINT)
            bridge.process.wait(timeout=30)
        print((tmp_path / "bridge.log").read_text()[-3000:])
