"""What an adversarial review broke, sent exactly as quoted, over HTTP to the real app
(Ray Serve, the embedded store, tokens for infer, two labelers, metrics and admin). The
numbers are the review's."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.models.demo_data import DemoData
from tests.integration.conftest import Deployer, own_copy_of_demo_pool

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {
    "infer": "infer-token-0123456789", "alice": "alice-token-0123456789",
    "bob": "bob-token-0123456789ab", "scraper": "scrape-token-0123456789",
    "admin": "admin-token-0123456789",
}  # fmt: skip
ROLES = {"infer": "infer", "alice": "label", "bob": "label", "scraper": "metrics", "admin": "admin"}
LEASE_S = 3.0
ROUNDS_KEPT = 3


def as_(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


@pytest.fixture(scope="module")
def pool(demo: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pool = own_copy_of_demo_pool(demo, tmp_path_factory.mktemp("adversarial") / "pool")
    (pool.parent / "aborts.py").write_text("import os\n\ndef make():\n    os.abort()\n")
    (pool.parent / "hangs.py").write_text("import signal\n\ndef make():\n    signal.pause()\n")
    (pool.parent / "stops.py").write_text(
        "def make():\n    from ray import serve\n\n    serve.shutdown()\n"
    )
    return pool


class Service:
    """The module's deployment, and the way to deploy it again on the same state."""

    def __init__(self, deployer: Deployer, pool: Path) -> None:
        self.deployer, self.pool, self.namespace = deployer, pool, uuid.uuid4().hex

    def deploy(self) -> httpx.Client:
        tokens = [{"name": n, "token": t, "roles": [ROLES[n]]} for n, t in TOKENS.items()]
        return self.deployer(
            pool=self.pool, namespace=self.namespace, shadow_rate=1.0, gamma=50.0,
            lease_s=LEASE_S,
            settings={"tokens": json.dumps(tokens), "candidate_load_timeout_s": 15.0,
                      "body_timeout_s": 2.0, "rounds_kept": ROUNDS_KEPT},
        )  # fmt: skip


@pytest.fixture(scope="module")
def service(
    pool: Path, serve_port: int, state_dir: Path, demo: DemoData, redis_server: Any
) -> Iterator[Service]:
    deployer = Deployer(serve_port, state_dir, redis_server.url)
    yield Service(deployer, pool)
    deployer.close()


@pytest.fixture(scope="module")
def client(service: Service) -> httpx.Client:
    return service.deploy()


def feed(client: httpx.Client, demo: DemoData, rows: int = 64) -> None:
    """Traffic, and wait until the picker has seen every row (shadow_rate is 1) and items are
    queued for labels: the posterior's learning rate moves with every item seen, so a test
    that compares posteriors must not read one while items are still arriving."""

    def step() -> int:
        return int(client.get("/v1/selection", headers=as_("admin")).json()["step"])

    before = step()
    client.post("/v1/predict", json={"instances": demo.stream_features[:rows].tolist()},
                headers=as_("infer"))  # fmt: skip
    deadline = time.monotonic() + 30
    while step() < before + rows or (
        client.get("/metrics", headers=as_("admin")).text.find("pickserve_label_queue_depth 0") >= 0
    ):
        assert time.monotonic() < deadline, "the rows were not all seen, or nothing was queued"
        time.sleep(0.2)


def pool_names(pool: Path) -> list[str]:
    return [c["name"] for c in yaml.safe_load(pool.read_text())["candidates"]]


def consistent(client: httpx.Client, pool: Path) -> list[str]:
    """/v1/selection, /v1/rounds and admin /v1/queries answer, and all name the pool file's
    candidates."""
    names = pool_names(pool)
    selection = client.get("/v1/selection", headers=as_("admin"))
    assert selection.status_code == 200, selection.text
    assert list(selection.json()["posterior"]) == names
    rounds = client.get("/v1/rounds", params={"limit": 2}, headers=as_("admin"))
    assert rounds.status_code == 200, rounds.text
    assert list(rounds.json()["rounds"][0]["posterior"]) == names
    queries = client.get("/v1/queries", params={"limit": 1}, headers=as_("admin"))
    assert queries.status_code == 200, queries.text
    return names


def test_1_a_key_reused_with_another_body_is_refused_everywhere(
    client: httpx.Client, pool: Path, demo: DemoData
) -> None:
    first = client.post("/v1/candidates", json={"name": "c1", "sklearn": "models/logreg.joblib"},
                        headers={**as_("admin"), "Idempotency-Key": "K"})  # fmt: skip
    assert first.status_code == 200, first.text
    again = client.post("/v1/candidates", json={"name": "c1", "sklearn": "models/logreg.joblib"},
                        headers={**as_("admin"), "Idempotency-Key": "K"})  # fmt: skip
    assert again.status_code == 200 and again.json() == first.json()  # a repeat: the answer
    other = client.post("/v1/candidates", json={"name": "c2", "sklearn": "models/lda.joblib"},
                        headers={**as_("admin"), "Idempotency-Key": "K"})  # fmt: skip
    assert other.status_code == 422 and "used before with another request" in other.text
    assert "c2" not in consistent(client, pool) and "c1" in pool_names(pool)

    five = client.post("/v1/rounds", json={"label_budget": 5},
                       headers={**as_("admin"), "Idempotency-Key": "R"})  # fmt: skip
    nine = client.post("/v1/rounds", json={"label_budget": 9},
                       headers={**as_("admin"), "Idempotency-Key": "R"})  # fmt: skip
    assert five.status_code == 200 and nine.status_code == 422
    repeat = client.post("/v1/rounds", json={"label_budget": 5},
                         headers={**as_("admin"), "Idempotency-Key": "R"})  # fmt: skip
    assert repeat.json()["round"] == five.json()["round"]  # a repeat starts nothing
    now = client.get("/v1/selection", headers=as_("admin")).json()
    assert (now["round"], now["label_budget"]) == (five.json()["round"], 5)
    client.patch("/v1/rounds/current", json={"label_budget": None}, headers=as_("admin"))

    feed(client, demo)
    (item,) = client.get("/v1/queries", params={"limit": 1}, headers=as_("alice")).json()["items"]
    body = {"labels": [{"item_id": item["item_id"], "label": 1}]}
    mine = client.post("/v1/feedback", json=body, headers={**as_("alice"), "Idempotency-Key": "F"})
    theirs = client.post("/v1/feedback", json=body, headers={**as_("bob"), "Idempotency-Key": "F"})
    assert mine.json()["results"][0]["outcome"] == "accepted"
    assert theirs.status_code == 422 and "another caller" in theirs.text
    audit = client.get(f"/v1/rounds/{now['round']}/labels", headers=as_("admin")).json()
    assert [(e["item_id"], e["by"]) for e in audit["labels"]] == [(item["item_id"], "alice")]


@pytest.mark.parametrize("tokens", ["[]", "file"])
def test_2_an_empty_token_list_is_no_tokens(tmp_path: Path, tokens: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PICKSERVE_STATE_DIR": str(tmp_path)}
    if tokens == "file":
        (tmp_path / "tokens.yaml").write_text("[]\n")
        env["PICKSERVE_TOKENS_FILE"] = str(tmp_path / "tokens.yaml")
    else:
        env["PICKSERVE_TOKENS"] = tokens
    result = subprocess.run([sys.executable, "-m", "service", "--host", "0.0.0.0"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: listening on 0.0.0.0 with no tokens")


def test_2_the_builder_refuses_it_too() -> None:
    from service.app import build
    from service.config.settings import Settings
    from service.http.auth import TokenError

    with pytest.raises(TokenError, match="with no tokens"):
        build(Settings(host="0.0.0.0", tokens="[]"))


class Traffic:
    """Predicts from a thread while something else happens; every status it saw."""

    def __init__(self, client: httpx.Client, demo: DemoData) -> None:
        self.client, self.rows = client, demo.stream_features[:4].tolist()
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with httpx.Client(base_url=self.client.base_url, timeout=30) as own:
            while not self.stop.is_set():
                answer = own.post(
                    "/v1/predict", json={"instances": self.rows}, headers=as_("infer")
                )
                self.statuses.append(answer.status_code)
                time.sleep(0.05)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize(
    ("name", "source", "reason"),
    [("boom", "aborts:make", "killed by SIGABRT"),
     ("hang", "hangs:make", "did not load and answer the probe within 15 s"),
     ("bye", "stops:make", "import of ray halted"),
     ("boom2", "os:abort", "is not in the pool folder"),
     ("bye2", "ray.serve:shutdown", "is not in the pool folder")],
)  # fmt: skip
def test_3_a_candidate_that_aborts_hangs_or_stops_serve_is_a_422_and_the_service_goes_on(
    client: httpx.Client, pool: Path, demo: DemoData, name: str, source: str, reason: str
) -> None:
    before = pool_names(pool)
    with Traffic(client, demo) as traffic:
        answer = client.post("/v1/candidates", json={"name": name, "python": source},
                             headers=as_("admin"), timeout=60)  # fmt: skip
        assert answer.status_code == 422 and reason in answer.json()["detail"], answer.text
        feed(client, demo)  # labels go on
        (item,) = client.get("/v1/queries", params={"limit": 1}, headers=as_("bob")).json()["items"]
        body = {"labels": [{"item_id": item["item_id"], "label": 2}]}
        labeled = client.post("/v1/feedback", json=body, headers=as_("bob"))
        assert labeled.json()["results"][0]["outcome"] == "accepted"
        # another candidate change answers at once (the failed one held nothing)
        added = client.post("/v1/candidates", json={"name": f"{name}-ok",
                            "sklearn": "models/tree.joblib"}, headers=as_("admin"),
                            timeout=60)  # loaded in a process of its own: slow under load  # fmt: skip
        assert added.status_code == 200, added.text
        assert client.delete(f"/v1/candidates/{name}-ok", headers=as_("admin")).status_code == 200
    assert traffic.statuses and set(traffic.statuses) == {200}
    assert pool_names(pool) == before and consistent(client, pool) == before


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../etc/passwd", "/proc/self/environ",
                                  "/no/such/place.joblib"])  # fmt: skip
def test_4_a_model_path_outside_the_pool_is_refused_alike(client: httpx.Client, path: str) -> None:
    answer = client.post("/v1/candidates", json={"name": "x", "sklearn": path},
                         headers=as_("admin"))  # fmt: skip
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "is outside the pool folder" in detail
    assert "no such file" not in detail and "not a file" not in detail
    for secret in TOKENS.values():
        assert secret not in detail
    assert "PATH=" not in detail and "root:" not in detail


def test_5_round_history_is_named_by_each_rounds_candidates(
    client: httpx.Client, pool: Path, demo: DemoData
) -> None:
    feed(client, demo)
    for item in client.get("/v1/queries", params={"limit": 3}, headers=as_("alice")).json()[
        "items"
    ]:
        client.post("/v1/feedback", json={"labels": [{"item_id": item["item_id"], "label": 0}]},
                    headers=as_("alice"))  # fmt: skip
    ended = client.get("/v1/selection", headers=as_("admin")).json()
    client.post("/v1/rounds", json={}, headers=as_("admin"))
    assert client.delete("/v1/candidates/svc-rbf", headers=as_("admin")).status_code == 200
    rounds = client.get("/v1/rounds", params={"limit": 2}, headers=as_("admin"))
    assert rounds.status_code == 200, rounds.text
    added = client.post("/v1/candidates", json={"name": "c6", "sklearn": "models/knn-3.joblib"},
                        headers=as_("admin"))  # fmt: skip
    assert added.status_code == 200, added.text
    current, old = client.get("/v1/rounds", params={"limit": 2}, headers=as_("admin")).json()[
        "rounds"
    ]
    assert old["round"] == ended["round"] and old["best_model"] == ended["best_model"]
    assert old["posterior"] == ended["posterior"] and "c6" not in old["posterior"]
    assert "svc-rbf" not in current["posterior"] and "c6" in current["posterior"]
    consistent(client, pool)


def test_6_labelers_and_anyone_cannot_learn_q(client: httpx.Client, demo: DemoData) -> None:
    feed(client, demo)
    (item,) = client.get("/v1/queries", params={"limit": 1, "include_predictions": True},
                         headers=as_("alice")).json()["items"]  # fmt: skip
    assert item["q"] is None
    client.post("/v1/feedback", json={"labels": [{"item_id": item["item_id"], "label": 3}]},
                headers=as_("alice"))  # fmt: skip
    seen = client.get("/v1/selection", headers=as_("alice")).json()
    assert (seen["posterior"], seen["losses"], seen["step"], seen["best_model"]) == (None,) * 4
    assert seen["served_model"] and seen["labels"] >= 1
    figures = ("pickserve_cumulative_loss", "pickserve_posterior_weight", "pickserve_best_model",
               "pickserve_picker_step")  # fmt: skip
    open_metrics = client.get("/metrics").text
    assert "pickserve_served_model" in open_metrics and "pickserve_round_labels" in open_metrics
    assert not any(f in open_metrics for f in figures)
    for who in ("scraper", "admin"):
        full = client.get("/metrics", headers=as_(who)).text
        assert all(f in full for f in figures), who
    assert (
        client.get(
            "/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}
        ).status_code
        == 401
    )
    # a labeler's token shows only the open set too
    assert not any(f in client.get("/metrics", headers=as_("alice")).text for f in figures)


def test_7_a_5000_character_path_is_a_422(client: httpx.Client) -> None:
    answer = client.post("/v1/candidates", json={"name": "long", "sklearn": "a" * 5000},
                         headers=as_("admin"))  # fmt: skip
    assert answer.status_code == 422


V2 = "/v2/models/router/infer"


def v2(datatype: str, value: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 64], "datatype": datatype, "data": [value] * 64}]}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [("POST", "/v1/candidates", {"name": "router", "sklearn": "models/logreg.joblib"}, 422),
     ("POST", "/v1/predict", {"instances": [[True] * 64]}, 422),
     ("POST", "/v1/predict", {"instances": [["1"] * 64]}, 422),
     ("PATCH", "/v1/rounds/current", {"label_budget": "5"}, 422),
     ("PATCH", "/v1/rounds/current", {"label_budget": True}, 422),
     ("PATCH", "/v1/rounds/current", {"label_budget": 2.0}, 422),
     ("POST", V2, v2("INT32", 0.5), 422),
     ("POST", V2, v2("FP32", 1e308), 422),
     ("POST", V2, v2("INT64", 2.0**64), 422),
     ("POST", V2, v2("INT32", 3.0), 200),
     ("POST", V2, v2("FP32", 1e30), 200)],
)  # fmt: skip
def test_8_strict_types(
    client: httpx.Client, method: str, path: str, body: dict[str, Any], status: int
) -> None:
    answer = client.request(method, path, json=body, headers=as_("admin"))
    assert answer.status_code == status, answer.text


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [(b'{"instances": [[1,', {}, 422),
     (b"[" * 100_000, {}, 422),
     (b"\xff\xfe not utf-8", {}, 422),
     (gzip.compress(json.dumps({"instances": [[0.0] * 64]}).encode(), mtime=0),
      {"content-encoding": "gzip"}, 415)],
)  # fmt: skip
def test_8_malformed_bodies_get_the_documented_status(
    client: httpx.Client, body: bytes, headers: dict[str, str], status: int
) -> None:
    answer = client.post("/v1/predict", content=body,
                         headers={**as_("infer"), "content-type": "application/json", **headers})  # fmt: skip
    assert answer.status_code == status, answer.text


def test_8_racing_new_rounds_answer_with_their_own_round(client: httpx.Client) -> None:
    answers: list[int] = []

    def start() -> None:
        with httpx.Client(base_url=client.base_url, timeout=30) as own:
            answers.append(own.post("/v1/rounds", json={}, headers=as_("admin")).json()["round"])

    for _ in range(3):
        answers.clear()
        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(answers)) == 2, answers  # two rounds started, each told its own


def test_8_a_lease_holds(client: httpx.Client, demo: DemoData) -> None:
    client.post("/v1/rounds", json={}, headers=as_("admin"))
    feed(client, demo)
    (item,) = client.get("/v1/queries", params={"limit": 1}, headers=as_("alice")).json()["items"]
    body = {"labels": [{"item_id": item["item_id"], "label": 0}]}
    bob = client.post("/v1/feedback", json=body, headers=as_("bob"))
    assert bob.status_code == 409 and bob.json()["results"][0]["outcome"] == "leased"
    alice = client.post("/v1/feedback", json=body, headers=as_("alice"))
    assert alice.json()["results"][0]["outcome"] == "accepted"
    # alice's next lease runs out and bob takes the item: bob's label counts, alice's is told
    wanted = client.get("/v1/queries", params={"limit": 1}, headers=as_("alice")).json()["items"]
    time.sleep(LEASE_S + 0.5)
    taken = client.get("/v1/queries", params={"limit": 500}, headers=as_("bob")).json()["items"]
    assert wanted[0]["item_id"] in {i["item_id"] for i in taken}
    late = {"labels": [{"item_id": wanted[0]["item_id"], "label": 1}]}
    assert (
        client.post("/v1/feedback", json=late, headers=as_("alice")).json()["results"][0]["outcome"]
        == "leased"
    )
    assert (
        client.post("/v1/feedback", json=late, headers=as_("bob")).json()["results"][0]["outcome"]
        == "accepted"
    )


def test_8_header_size_and_count_are_bounded(client: httpx.Client) -> None:
    row = {"instances": [[0.0] * 64]}
    huge = client.post(
        "/v1/predict", json=row, headers={"Authorization": "Bearer " + "a" * 8_000_000}
    )
    assert huge.status_code == 431
    many = [(f"x-h{i}", "a" * 1000) for i in range(4000)]
    assert (
        client.post("/v1/predict", json=row, headers=[*many, *as_("infer").items()]).status_code
        == 431
    )
    assert client.post("/v1/predict", json=row, headers=as_("infer")).status_code == 200


def test_8_a_body_that_trickles_is_cut(client: httpx.Client) -> None:
    """One byte every 0.5 s: the answer is a 408 once body_timeout_s (2 s here) is over."""
    host, port = client.base_url.host, client.base_url.port
    body = json.dumps({"instances": [[0.0] * 64]}).encode()
    with socket.create_connection((host, port), timeout=30) as sock:
        head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                f"{TOKENS['infer']}\r\nContent-Type: application/json\r\nContent-Length: "
                f"{len(body)}\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode())
        sock.settimeout(0.5)
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_a_round_key_repeated_after_its_round_left_the_history_is_a_410(
    client: httpx.Client,
) -> None:
    """The fuzzer found it: a repeat answers the round its key started, and once that
    round is no longer kept (rounds_kept) the answer was a 503. Now a 410 that says so,
    and the repeat changes nothing."""
    key = {**as_("admin"), "Idempotency-Key": f"old-round-{uuid.uuid4().hex[:8]}"}
    first = client.post("/v1/rounds", json={}, headers=key)
    assert first.status_code == 200, first.text
    for _ in range(ROUNDS_KEPT + 1):
        assert client.post("/v1/rounds", json={}, headers=as_("admin")).status_code == 200
    before = client.get("/v1/selection", headers=as_("admin")).json()
    repeat = client.post("/v1/rounds", json={}, headers=key)
    assert repeat.status_code == 410, repeat.text
    assert f"started round {first.json()['round']}" in repeat.json()["detail"]
    assert client.get("/v1/selection", headers=as_("admin")).json() == before


def test_1_after_all_that_a_restart_serves_the_same_pool(
    service: Service, client: httpx.Client, pool: Path
) -> None:
    """The review's restart failed ("the store holds state for the pool [...]"): here the
    app is deployed again on the same state and pool file, last in this module."""
    before = consistent(client, pool)
    restarted = service.deploy()
    assert consistent(restarted, pool) == before
