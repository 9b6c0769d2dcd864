"""Round history and the label audit over HTTP, on both stores: two rounds, labels given
by two token holders, each label audited with its holder's name."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from service.models.demo_data import DemoData
from tests.integration.conftest import Deploy

TOKENS = [
    {"name": "alice", "token": "alice-token-0123456789", "roles": ["label"]},
    {"name": "ops", "token": "ops-token-0123456789ab", "roles": ["admin"]},
]
ALICE = {"Authorization": "Bearer alice-token-0123456789"}
OPS = {"Authorization": "Bearer ops-token-0123456789ab"}


def queued(client: httpx.Client, demo: DemoData, offset: int, n: int = 40) -> list[dict[str, Any]]:
    rows = demo.stream_features[offset : offset + n].tolist()
    step = client.get("/v1/selection", headers=OPS).json()["step"]
    assert client.post("/v1/predict", json={"instances": rows}, headers=OPS).is_success
    deadline = time.monotonic() + 20
    while client.get("/v1/selection", headers=OPS).json()["step"] < step + n:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the first two leased to alice, the rest to ops: a label counts from its lease holder
    items: list[dict[str, Any]] = [
        *client.get("/v1/queries", params={"limit": 2}, headers=ALICE).json()["items"],
        *client.get("/v1/queries", params={"limit": 500}, headers=OPS).json()["items"],
    ]
    assert len(items) >= 3
    return items


def post(client: httpx.Client, headers: dict[str, str], item: dict[str, Any], label: int) -> None:
    answer = client.post(
        "/v1/feedback", json={"labels": [{"item_id": item["item_id"], "label": label}]},
        headers=headers,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_rounds_and_the_label_audit_after_two_rounds(
    deploy: Deploy, demo: DemoData, store: str
) -> None:
    started = time.time()
    client = deploy(store=store, settings={"tokens": json.dumps(TOKENS)}, shadow_rate=1.0,
                    gamma=50.0, label_budget=30)  # fmt: skip
    first = queued(client, demo, 0)
    post(client, ALICE, first[0], 3)
    post(client, ALICE, first[1], 4)
    post(client, OPS, first[2], 5)
    round_zero = client.get("/v1/selection", headers=OPS).json()
    assert client.post("/v1/rounds", json={"label_budget": 12}, headers=OPS).status_code == 200
    second = queued(client, demo, 40)
    post(client, ALICE, second[0], 7)

    assert client.get("/v1/rounds", headers=ALICE).status_code == 403
    rounds = client.get("/v1/rounds", headers=OPS).json()["rounds"]
    assert [r["round"] for r in rounds] == [1, 0]
    now, old = rounds
    assert now["ended_at"] is None and old["ended_at"] is not None
    assert started <= old["started_at"] <= old["ended_at"] <= now["started_at"]
    assert (old["label_budget"], now["label_budget"]) == (30, 12)
    assert (old["labels"], now["labels"]) == (3, 1)
    assert old["posterior"] == round_zero["posterior"] and old["queries"] == round_zero["queries"]
    assert old["best_model"] == round_zero["best_model"]
    assert [s["to_model"] for s in old["swaps"]] == [s["to_model"] for s in round_zero["swaps"]]

    audit = client.get("/v1/rounds/0/labels", headers=OPS).json()
    assert [(e["item_id"], e["label"], e["class_name"], e["by"]) for e in audit["labels"]] == [
        (first[0]["item_id"], 3, "3", "alice"), (first[1]["item_id"], 4, "4", "alice"),
        (first[2]["item_id"], 5, "5", "ops")]  # fmt: skip
    assert all(started <= e["at"] <= time.time() for e in audit["labels"])
    latest = client.get("/v1/rounds/1/labels", headers=OPS).json()["labels"]
    assert [(e["item_id"], e["by"]) for e in latest] == [(second[0]["item_id"], "alice")]
    missing = client.get("/v1/rounds/9/labels", headers=OPS)
    assert missing.status_code == 404 and "round 9 is not kept" in missing.text
