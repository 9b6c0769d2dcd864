"""Labelers measured over real Ray Serve and HTTP: three labelers with tokens of their own
label the demo's stream, one of them careless; overlap items and gold items give the
evidence, and GET /v1/labelers flags the careless one. Bad input changes nothing."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.models.demo_data import DemoData
from service.models.pool_file import read_pool_spec
from service.state.rules.labelers import chosen_for_overlap
from tests.integration.conftest import Deployer
from tests.redis_server import RedisServer

LABELERS = ("ann", "bob", "eve")  # eve answers a wrong class half the time
TOKENS = {name: f"{name}-token-0123456789abcdef" for name in (*LABELERS, "ops", "web", "studio")}
ROLES = {"ops": ["admin"], "web": ["infer"], "studio": ["bridge"]}
OVERLAP = 0.5  # more evidence per label than the default 0.1: a shorter test
# What the module's tests served and labeled (they share a deployment): each item's true
# class, and who gave its first (selection) label.
TRUTH: dict[str, int] = {}
FIRST: dict[str, str] = {}
GOLD: set[str] = set()
WHO: dict[str, list[str]] = {}  # every labeler of each item, in order


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture(scope="module")
def client(
    serve_port: int, state_dir: Path, demo: DemoData, redis_server: RedisServer
) -> Iterator[httpx.Client]:
    table = [{"name": n, "token": t, "roles": ROLES.get(n, ["label"])} for n, t in TOKENS.items()]
    deployer = Deployer(serve_port, state_dir, redis_server.url)
    yield deployer(settings={"tokens": json.dumps(table)}, shadow_rate=1.0, gamma=50.0,
                   overlap_rate=OVERLAP, gold_rate=0.2)  # fmt: skip
    deployer.close()


class Crowd:
    """The stream served to a client and labeled by LABELERS, each from the truth (eve:
    half of her answers are another class, at random)."""

    def __init__(self, client: httpx.Client, demo: DemoData) -> None:
        self.client, self.rng = client, np.random.default_rng(11)
        self.features, self.labels = demo.stream("today")
        self.n_classes = len(read_pool_spec(demo.pool_file).class_names)
        self.truth, self.first = TRUTH, FIRST

    def add_gold(self, rows: np.ndarray) -> list[str]:
        body = {"items": [{"instance": self.features[r].tolist(), "label": int(self.labels[r])}
                          for r in rows]}  # fmt: skip
        answer = self.client.post("/v1/gold", json=body, headers=bearer("ops"))
        assert answer.status_code == 200, answer.text
        ids: list[str] = answer.json()["item_ids"]
        GOLD.update(ids)
        self.truth.update(zip(ids, map(int, self.labels[rows]), strict=True))
        return ids

    def serve(self, n: int) -> None:
        rows = self.rng.choice(len(self.labels), n, replace=False)
        body = {"instances": self.features[rows].tolist()}
        answer = self.client.post("/v1/predict", json=body, headers=bearer("web"))
        answer.raise_for_status()
        for prediction, row in zip(answer.json()["predictions"], rows, strict=True):
            self.truth[prediction["item_id"]] = int(self.labels[row])

    def answer(self, name: str, item_id: str) -> int:
        truth = self.truth[item_id]
        if name == "eve" and self.rng.random() < 0.5:
            return int((truth + self.rng.integers(1, self.n_classes)) % self.n_classes)
        return truth

    def label(self, name: str, limit: int = 8) -> list[dict[str, str]]:
        items = self.client.get("/v1/queries", params={"limit": limit}, headers=bearer(name))
        items.raise_for_status()
        labels = [{"item_id": i["item_id"], "label": self.answer(name, i["item_id"])}
                  for i in items.json()["items"]]  # fmt: skip
        if not labels:
            return []
        posted = self.client.post("/v1/feedback", json={"labels": labels}, headers=bearer(name))
        assert posted.status_code in (200, 409), posted.text
        results: list[dict[str, str]] = posted.json()["results"]
        for result in results:
            assert result["outcome"] == "accepted", result  # never a duplicate of theirs
            self.first.setdefault(result["item_id"], name)
            WHO.setdefault(result["item_id"], []).append(name)
        return results


def labelers(client: httpx.Client) -> dict[str, dict[str, object]]:
    answer = client.get("/v1/labelers", headers=bearer("ops"))
    assert answer.status_code == 200, answer.text
    return {r["name"]: r for r in answer.json()["labelers"]}


def test_the_careless_labeler_is_flagged_from_overlaps_and_gold(
    client: httpx.Client, demo: DemoData
) -> None:
    crowd = Crowd(client, demo)
    crowd.add_gold(np.arange(40))
    for _ in range(300):
        crowd.serve(16)
        for name in LABELERS:
            crowd.label(name)
        found = labelers(client)
        if found.get("eve", {}).get("quarantined"):  # flagged, and so quarantined
            break
    found = labelers(client)
    print("\n" + "\n".join(f"{n}: {found[n]}" for n in LABELERS))
    assert set(found) == set(LABELERS)
    assert found["eve"]["flagged"] and not found["ann"]["flagged"] and not found["bob"]["flagged"]
    assert found["eve"]["accuracy"] < 0.7 < 0.9 < min(found["ann"]["accuracy"],
                                                       found["bob"]["accuracy"])  # fmt: skip
    assert all(found[n]["overlaps"] > 0 for n in LABELERS)
    # while her estimate was below the bar on too little evidence to flag her, she was
    # audited: items of hers the overlap rate alone would not have checked were checked
    audited = [i for i, names in WHO.items() if names[0] == "eve" and len(names) > 1
               and i not in GOLD and not chosen_for_overlap(i, OVERLAP)]  # fmt: skip
    assert audited
    assert sum(found[n]["gold"] for n in LABELERS) > 0
    # flagged, eve was quarantined at once (quarantine_flagged): none of her labels counts
    assert found["eve"]["quarantined"] and not found["ann"]["quarantined"]
    assert client.get("/v1/queries", headers=bearer("eve")).json()["items"] == []
    # gold answers and overlap labels are no selection labels: the round counts first labels
    selection = client.get("/v1/selection", headers=bearer("ops")).json()
    assert found["ann"]["labels"] + found["bob"]["labels"] == selection["labels"]
    metrics = client.get("/metrics", headers=bearer("ops")).text
    shown = dict(re.findall(r'pickserve_labeler_accuracy\{labeler="(\w+)"\} ([0-9.e-]+)', metrics))
    assert set(shown) == set(LABELERS)
    assert float(shown["eve"]) == pytest.approx(found["eve"]["accuracy"])
    # the open /metrics shows nobody's accuracy
    assert "pickserve_labeler_accuracy{" not in client.get("/metrics").text
    # her own figure counts evidence an hour old (agreement_lag_s): it never moved on an
    # item, so it never told her which items were checked
    mine = client.get("/v1/labelers/me", headers=bearer("eve"))
    assert mine.status_code == 200, mine.text
    assert mine.json() == {"name": "eve", "labels": found["eve"]["labels"], "checked": 0,
                           "accuracy": None, "accuracy_low": 0.0, "accuracy_high": 1.0,
                           "lag_s": 3600.0, "quarantined": True}  # fmt: skip
    # what each label weighed (weigh_labels): eve's fell as the evidence against her grew
    audit = client.get("/v1/rounds/0/labels", headers=bearer("ops")).json()["labels"]
    weights = {n: [e["weight"] for e in audit if e["by"] == n] for n in LABELERS}
    print(weights)  # ann may have none: the overlap items of eve's audit came first to her
    assert weights["eve"][0] == 1.0 and min(weights["eve"]) < 0.9
    assert min(weights["ann"] + weights["bob"]) > 0.9
    # an admin lets her go: flagged still, she is not quarantined again
    assert client.delete("/v1/labelers/eve/quarantine", headers=bearer("ops")).json()["changed"]
    crowd.serve(16)
    crowd.label("eve")
    crowd.label("ann")  # evidence may grow: eve is looked at again, and left alone
    assert not labelers(client)["eve"]["quarantined"] and labelers(client)["eve"]["flagged"]


def test_an_overlap_label_from_the_first_labeler_is_a_409_and_changes_nothing(
    client: httpx.Client, demo: DemoData
) -> None:
    crowd = Crowd(client, demo)
    for _ in range(50):
        crowd.serve(16)
        crowd.label("ann")
        mine = [i for i, name in FIRST.items()
                if name == "ann" and i not in GOLD and chosen_for_overlap(i, OVERLAP)]  # fmt: skip
        if mine:
            break
    item = mine[0]
    before = labelers(client)
    again = {"labels": [{"item_id": item, "label": crowd.truth[item]}]}
    answer = client.post("/v1/feedback", json=again, headers=bearer("ann"))
    assert answer.status_code == 409
    assert answer.json()["results"][0]["outcome"] == "duplicate"
    assert labelers(client) == before


def test_a_gold_answer_outside_the_classes_is_a_422_and_stores_nothing(
    client: httpx.Client, demo: DemoData
) -> None:
    before = client.get("/v1/labelers", headers=bearer("ops")).json()["gold_items"]
    row = demo.stream_features[0].tolist()
    classes = read_pool_spec(demo.pool_file).class_names
    for item in ({"instance": row, "label": len(classes)}, {"instance": row, "label":
                 "no-such-class"}, {"instance": row[:-1], "label": 0}):  # fmt: skip
        body = {"items": [{"instance": row, "label": 0}, item]}  # one bad item: none stored
        answer = client.post("/v1/gold", json=body, headers=bearer("ops"))
        assert answer.status_code == 422, answer.text
    assert client.post("/v1/gold", json=body, headers=bearer("ann")).status_code == 403
    after = client.get("/v1/labelers", headers=bearer("ops")).json()["gold_items"]
    assert after == before


def test_a_quarantine_takes_out_a_labelers_labels_and_lifting_it_puts_them_back(
    client: httpx.Client, demo: DemoData
) -> None:
    crowd = Crowd(client, demo)
    ops = bearer("ops")
    client.post("/v1/rounds", json={}, headers=ops)  # a round of its own
    for _ in range(12):
        crowd.serve(16)
        for name in LABELERS:
            crowd.label(name)
    before = client.get("/v1/selection", headers=ops).json()
    audit = client.get(f"/v1/rounds/{before['round']}/labels", params={"limit": 100_000},
                       headers=ops).json()["labels"]  # fmt: skip
    eves = {e["item_id"] for e in audit if e["by"] == "eve"}
    assert eves and len(audit) == before["labels"]
    answer = client.post("/v1/labelers/eve/quarantine", headers=ops)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"labeler": "eve", "quarantined": True, "changed": True,
                             "items": len(eves), "labels": len(audit) - len(eves)}  # fmt: skip
    during = client.get("/v1/selection", headers=ops).json()
    assert during["labels"] == len(audit) - len(eves) and during["losses"] != before["losses"]
    assert labelers(client)["eve"]["quarantined"] and not labelers(client)["ann"]["quarantined"]
    # eve gets nothing and applies nothing; her items wait for the others
    assert client.get("/v1/queries", headers=bearer("eve")).json()["items"] == []
    refused = client.post("/v1/feedback", json={"labels": [{"item_id": next(iter(eves)),
                          "label": 0}]}, headers=bearer("eve"))  # fmt: skip
    assert refused.status_code == 403 and "quarantined" in refused.text
    waiting = client.get("/v1/queries", params={"limit": 500}, headers=bearer("ann")).json()
    assert eves <= {i["item_id"] for i in waiting["items"]}
    assert client.get("/v1/selection", headers=ops).json()["losses"] == during["losses"]
    lifted = client.delete("/v1/labelers/eve/quarantine", headers=ops)
    assert lifted.status_code == 200 and lifted.json()["items"] == len(eves)
    after = client.get("/v1/selection", headers=ops).json()
    assert after["losses"] == before["losses"] and after["labels"] == before["labels"]
    again = client.delete("/v1/labelers/eve/quarantine", headers=ops).json()
    assert again["changed"] is False  # already lifted: nothing changed
    assert client.post("/v1/labelers/eve/quarantine", headers=bearer("ann")).status_code == 403
    assert client.post("/v1/labelers/bad%20name/quarantine", headers=ops).status_code == 422


def test_a_bridge_names_its_annotators_and_only_a_bridge_may(
    client: httpx.Client, demo: DemoData
) -> None:
    """A labeling tool with the bridge role labels for its annotators: each is a labeler
    of their own ('{annotator}@{token name}'), in the audit and in GET /v1/labelers. A
    label token naming someone is a 403, a name too long or malformed a 422: nothing
    changes."""
    crowd = Crowd(client, demo)
    crowd.serve(32)
    leased: list[str] = []
    deadline = time.monotonic() + 20
    while len(leased) < 2:  # shadow evaluation queues the items after the answers
        assert time.monotonic() < deadline, "no items to lease"
        time.sleep(0.2)
        items = client.get("/v1/queries", params={"limit": 20}, headers=bearer("studio"))
        fresh = set(crowd.truth) - GOLD - set(FIRST)  # neither gold nor labeled already
        leased += [i["item_id"] for i in items.json()["items"] if i["item_id"] in fresh]
    for ann, item_id in zip(("amy", "ben"), leased[:2], strict=True):
        before = labelers(client)
        body = {"labels": [{"item_id": item_id, "label": crowd.truth[item_id]}], "labeler": ann}
        refused = client.post("/v1/feedback", json=body, headers=bearer("ann"))
        assert refused.status_code == 403 and "bridge" in refused.text
        for bad in ("x" * 60, "amy smith"):
            wrong = client.post("/v1/feedback", json={**body, "labeler": bad},
                                headers=bearer("studio"))  # fmt: skip
            assert wrong.status_code == 422, wrong.text
        assert labelers(client) == before  # nothing changed
        posted = client.post("/v1/feedback", json=body, headers=bearer("studio"))
        assert posted.status_code == 200 and posted.json()["results"][0]["outcome"] == "accepted"
    found = labelers(client)
    assert found["amy@studio"]["labels"] == found["ben@studio"]["labels"] == 1
    assert "studio" not in found  # the tool itself gave no label
    number = client.get("/v1/selection", headers=bearer("ops")).json()["round"]
    audit = client.get(f"/v1/rounds/{number}/labels", headers=bearer("ops")).json()["labels"]
    assert {e["item_id"]: e["by"] for e in audit if e["item_id"] in leased[:2]} == {
        leased[0]: "amy@studio", leased[1]: "ben@studio"}  # fmt: skip
