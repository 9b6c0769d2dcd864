"""The labeling page in a real browser (Debian's chromium driven by playwright) against
real Ray Serve: the browser asks for the token (HTTP Basic), shows the item as an image,
and labels by click and by keyboard; the labels land, audited under the token's name."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from service.models.demo_data import DemoData
from tests.integration.conftest import Deploy

ROOT = Path(__file__).resolve().parents[2]
TOKENS = [
    {"name": "alice", "token": "alice-page-token-0123456789", "roles": ["label"]},
    {"name": "ops", "token": "ops-page-token-0123456789ab", "roles": ["admin"]},
]
OPS = {"Authorization": "Bearer ops-page-token-0123456789ab"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def client(deploy: Deploy, demo: DemoData) -> httpx.Client:
    client = deploy(settings={"tokens": json.dumps(TOKENS)}, shadow_rate=1.0, gamma=50.0,
                    gold_rate=0.5, agreement_lag_s=0.0)  # fmt: skip
    rows = demo.stream_features[:64].tolist()
    assert client.post("/v1/predict", json={"instances": rows}, headers=OPS).is_success
    deadline = time.monotonic() + 20
    while client.get("/v1/selection", headers=OPS).json()["queries"] < 4:
        assert time.monotonic() < deadline, "no items were queued"
        time.sleep(0.1)
    return client


@pytest.fixture
def browser_page(client: httpx.Client, tmp_path: Path) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        context = browser.new_context(
            http_credentials={"username": "alice", "password": TOKENS[0]["token"]},
            viewport={"width": 1100, "height": 700},
        )
        yield context.new_page()
        context.close()
        browser.close()


def audited(client: httpx.Client, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        labels: list[dict[str, object]] = client.get("/v1/rounds/0/labels", headers=OPS).json()[
            "labels"
        ]
        if len(labels) >= count or time.monotonic() > deadline:
            return labels
        time.sleep(0.1)


def wait_for_status(page: Page, condition: str) -> None:
    """Until `#status` meets the JavaScript condition on `text`; the status shown if not."""
    try:
        page.wait_for_function(
            "() => { const text = document.querySelector('#status').textContent; "
            f"return {condition}; }}",
            timeout=15_000,
        )
    except Exception:
        raise AssertionError(f"status: {page.locator('#status').inner_text()!r}") from None


def answer_gold(client: httpx.Client, demo: DemoData) -> int:
    """Gold items from the stream's rows 100-109, answered (rightly) by alice among the
    items she leases: all ten (a lease of 100 at gold_rate 0.5 takes every gold item), so
    that none is left to come up on the page; returns how many she answered."""
    rows = range(100, 110)
    body = {"items": [{"instance": demo.stream_features[r].tolist(),
                       "label": int(demo.stream_labels[r])} for r in rows]}  # fmt: skip
    answer = client.post("/v1/gold", json=body, headers=OPS)
    assert answer.status_code == 200, answer.text
    truth = dict(zip(answer.json()["item_ids"], (int(demo.stream_labels[r]) for r in rows),
                     strict=True))  # fmt: skip
    alice = {"Authorization": f"Bearer {TOKENS[0]['token']}"}
    leased = client.get("/v1/queries", params={"limit": 100}, headers=alice).json()["items"]
    labels = [{"item_id": i["item_id"], "label": truth[i["item_id"]]}
              for i in leased if i["item_id"] in truth]  # fmt: skip
    assert len(labels) == len(truth), "a gold item was not among alice's items"
    posted = client.post("/v1/feedback", json={"labels": labels}, headers=alice)
    assert posted.status_code == 200, posted.text
    # she holds the queued items now: fresh traffic queues items for the page
    asked = client.get("/v1/selection", headers=OPS).json()["queries"]
    rows = demo.stream_features[200:264].tolist()
    assert client.post("/v1/predict", json={"instances": rows}, headers=OPS).is_success
    deadline = time.monotonic() + 20
    while client.get("/v1/selection", headers=OPS).json()["queries"] < asked + 4:
        assert time.monotonic() < deadline, "no items were queued"
        time.sleep(0.1)
    return len(labels)


def test_label_by_click_and_by_keyboard(
    client: httpx.Client, browser_page: Page, demo: DemoData
) -> None:
    page = browser_page
    checked = answer_gold(client, demo)  # no selection labels: the audit stays empty
    assert page.goto(f"{client.base_url}/label").status == 200
    page.wait_for_selector("canvas")  # the demo pool declares image_shape [8, 8]
    assert page.locator("#classes button").count() == 10
    # A labeler's page shows no posterior: q could be worked out from it (an admin's has it).
    page.wait_for_selector("#posterior .hidden-posterior")
    assert page.locator("#posterior .bar").count() == 0
    served = client.get("/v1/selection", headers=OPS).json()["served_model"]
    assert page.locator("#served").inner_text() == served

    page.locator("#classes button[data-label='3']").click()
    wait_for_status(page, "text.startsWith('3: accepted')")
    page.keyboard.press("5")
    wait_for_status(page, "text.startsWith('5: accepted')")
    page.keyboard.press("s")
    wait_for_status(page, "text === 'skipped'")
    page.locator("#classes button[data-label='0']").click()
    wait_for_status(page, "text.startsWith('0: accepted')")

    labels = audited(client, 3)
    assert [(e["label"], e["by"]) for e in labels] == [(3, "alice"), (5, "alice"), (0, "alice")]
    assert client.get("/v1/selection", headers=OPS).json()["labels"] == 3
    page.wait_for_function("document.querySelector('#progress').textContent.startsWith('3 labels')")
    # her own agreement (agreement_lag_s 0 here): the gold answers, all right; none of
    # the three labels was checked (no one else labeled those items)
    figure = page.locator("#agreement").inner_text()
    assert f"on {checked} checked labels" in figure and " right (95 %: " in figure, figure
    shown = client.get("/v1/labelers", headers=OPS).json()["labelers"]
    assert [(r["name"], r["gold"], r["labels"]) for r in shown] == [("alice", checked, 3)]
    page.screenshot(path=str(ROOT / "docs" / "label-page.png"))


def test_the_page_asks_a_browser_for_the_token(client: httpx.Client) -> None:
    answer = client.get("/label")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="pickserve"'
    page = client.get("/label", auth=("anyone", str(TOKENS[0]["token"])))
    assert page.status_code == 200 and "Which class is this item?" in page.text
