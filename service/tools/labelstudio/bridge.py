"""`python -m service.tools.labelstudio.bridge`: Label Studio as pickserve's labeling team.

The bridge keeps a Label Studio project filled with the items pickserve asks about and
brings the annotations back as labels:

- **Project.** Created (or reused, by title) with a labeling config built from the pool's
  classes: the item as an image when the pool declares `image_shape`, else a table of
  features. Candidates' predictions are not shown unless `--show-predictions` (they anchor
  the annotators' judgement and bias the labels).
- **Tasks.** Items leased from `GET /v1/queries` are imported one task each, carrying the
  item id. A durable map (SQLite) from item to task is written before each import and
  completed after it, so a restart finds a task whose import was cut short instead of
  making a duplicate.
- **Leases.** While a task is open, the bridge renews its item's lease
  (`POST /v1/queries/renew`); a task whose item no longer waits (labeled elsewhere,
  expired, its round ended) is withdrawn from Label Studio.
- **Annotations** arrive by webhook (with a shared secret in a header) and by a periodic
  sweep of the project's tasks, since Label Studio sends each webhook once and never
  retries. Both post to `/v1/feedback` with the Idempotency-Key `ls-{project}-{task}`, so
  an annotation seen twice is applied once. A skipped task (`was_cancelled`) gives no
  label.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import io
import json
import logging
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import httpx
import numpy as np
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger("pickserve.labelstudio")
SECRET_HEADER = "X-Pickserve-Secret"
PAGE_SIZE = 100


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PICKSERVE_", populate_by_name=True)

    pickserve_url: str = Field(
        "http://127.0.0.1:8000", validation_alias=AliasChoices("pickserve_url", "PICKSERVE_URL")
    )
    pickserve_token: str | None = Field(
        None, repr=False, validation_alias=AliasChoices("pickserve_token", "PICKSERVE_TOKEN"),
        description="a pickserve token with the label role (none: pickserve has no tokens)",
    )  # fmt: skip
    label_studio_url: str = Field("http://127.0.0.1:8080")
    label_studio_token: str = Field(..., repr=False, description="Label Studio API token")
    project: str = Field("pickserve", min_length=1, max_length=50, description="project title")
    state: Path = Field(Path("var/labelstudio-bridge.sqlite3"), description="item → task map")
    open_tasks: int = Field(20, ge=1, le=500, description="unannotated tasks kept open")
    poll_s: float = Field(2.0, gt=0, le=600, description="how often leases are renewed/filled")
    sweep_s: float = Field(10.0, gt=0, le=3600, description="how often all tasks are read")
    webhook_host: str = Field("127.0.0.1", description="where the webhook receiver listens")
    webhook_port: int = Field(0, ge=0, le=65535, description="0: no webhook (sweep only)")
    webhook_url: str | None = Field(
        None, description="the receiver's URL as Label Studio reaches it (default: host:port)"
    )
    show_predictions: bool = Field(False, description="show candidates' predictions")


class LabelStudio:
    """The few Label Studio API calls the bridge makes."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Token {token}"}
        )

    def pages(self, path: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            answer = self.http.get(path, params={**params, "page": page, "page_size": PAGE_SIZE})
            if answer.status_code == 404 and page > 1:
                return  # past the last page
            answer.raise_for_status()
            body = answer.json()
            rows = body if isinstance(body, list) else body.get(key, [])
            yield from rows
            if isinstance(body, list) or len(rows) < PAGE_SIZE:
                return
            page += 1

    def project(self, title: str, label_config: str) -> int:
        for project in self.pages("/api/projects/", "results"):
            if project["title"] == title:
                return int(project["id"])
        created = self.http.post(
            "/api/projects/", json={"title": title, "label_config": label_config}
        )
        created.raise_for_status()
        return int(created.json()["id"])

    def webhook(self, project: int, url: str, secret: str) -> None:
        body = {"project": project, "url": url, "send_payload": True, "send_for_all_actions": False,
                "actions": ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
                "headers": {SECRET_HEADER: secret}, "is_active": True}  # fmt: skip
        for hook in self.pages("/api/webhooks/", "results", project=project):
            if hook.get("url") == url and hook.get("project") == project:
                self.http.patch(f"/api/webhooks/{hook['id']}/", json=body).raise_for_status()
                return
        self.http.post("/api/webhooks/", json=body).raise_for_status()

    def tasks(self, project: int) -> Iterator[dict[str, Any]]:
        return self.pages("/api/tasks/", "tasks", project=project, fields="all")

    def import_task(self, project: int, task: dict[str, Any]) -> int:
        answer = self.http.post(
            f"/api/projects/{project}/import", params={"return_task_ids": "true"}, json=[task]
        )
        answer.raise_for_status()
        return int(answer.json()["task_ids"][0])

    def delete_task(self, task_id: int) -> None:
        answer = self.http.delete(f"/api/tasks/{task_id}/")
        if answer.status_code != 404:
            answer.raise_for_status()


def label_config(classes: list[str], image_shape: list[int] | None) -> str:
    """Choices over the pool's classes, about the item shown as an image or a table."""
    shown = ('<Image name="item" value="$image" zoom="true"/>' if image_shape
             else '<Table name="item" value="$features"/>')  # fmt: skip
    choices = "".join(f"<Choice value={quoteattr(name)}/>" for name in classes)
    return (f'<View>{shown}<Choices name="label" toName="item" choice="single" '
            f'showInline="true">{choices}</Choices></View>')  # fmt: skip


def png_data_url(instance: list[float], image_shape: list[int]) -> str:
    """The instance as a PNG (dark = high), scaled up so annotators can see it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    values = np.asarray(instance, dtype=np.float64).reshape(image_shape)
    scale = max(1, 256 // max(image_shape[0], image_shape[1]))
    pixels = np.kron(values, np.ones((scale, scale, 1) if values.ndim == 3 else (scale, scale)))
    if pixels.ndim == 3:  # RGB: imsave wants values in 0..1
        low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) / ((high - low) or 1.0)
    buffer = io.BytesIO()
    pyplot.imsave(buffer, pixels, cmap="gray_r", format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def task_payload(
    item: dict[str, Any], classes: list[str], image_shape: list[int] | None, show: bool
) -> dict[str, Any]:
    """The Label Studio task for a queried item: its id, the item as an image or a table,
    and the candidates' predictions only when `show` (and pickserve gave them)."""
    data: dict[str, Any] = {"item_id": item["item_id"]}
    if image_shape:
        data["image"] = png_data_url(item["instance"], image_shape)
    else:
        data["features"] = {f"feature {i}": v for i, v in enumerate(item["instance"])}
    task: dict[str, Any] = {"data": data}
    if show and item.get("predictions"):
        task["predictions"] = [
            {"model_version": model, "result": [{
                "from_name": "label", "to_name": "item", "type": "choices",
                "value": {"choices": [classes[predicted]]}}]}
            for model, predicted in item["predictions"].items() if predicted >= 0
        ]  # fmt: skip
    return task


def chosen_class(result: list[dict[str, Any]], classes: list[str]) -> str | None:
    """The class an annotation chose (None: it chose none of the pool's classes)."""
    for region in result:
        choices = region.get("value", {}).get("choices") or []
        if region.get("from_name") == "label" and choices and choices[0] in classes:
            return str(choices[0])
    return None


class TaskMap:
    """The durable item → task map, and the bridge's own settings (project, secret)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS tasks (item_id TEXT PRIMARY KEY, round INTEGER, "
            "task_id INTEGER, status TEXT NOT NULL, detail TEXT)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")

    def setting(self, key: str, make: Any) -> str:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
            value = str(make())
            self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            return value

    def get(self, item_id: str) -> tuple[int | None, str] | None:
        with self.lock:
            row = self.db.execute(
                "SELECT task_id, status FROM tasks WHERE item_id = ?", (item_id,)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def put(self, item_id: str, round_number: int | None, task_id: int | None, status: str,
            detail: str | None = None) -> None:  # fmt: skip
        with self.lock:
            self.db.execute(
                "INSERT INTO tasks (item_id, round, task_id, status, detail) VALUES (?,?,?,?,?) "
                "ON CONFLICT (item_id) DO UPDATE SET round = COALESCE(excluded.round, round), "
                "task_id = COALESCE(excluded.task_id, task_id), status = excluded.status, "
                "detail = excluded.detail",
                (item_id, round_number, task_id, status, detail),
            )

    def with_status(self, *statuses: str) -> list[tuple[str, int | None]]:
        marks = ",".join("?" * len(statuses))
        with self.lock:
            rows = self.db.execute(
                f"SELECT item_id, task_id FROM tasks WHERE status IN ({marks})", statuses
            ).fetchall()
        return [(r[0], r[1]) for r in rows]


class Bridge:
    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        headers = {}
        if settings.pickserve_token:
            headers["Authorization"] = f"Bearer {settings.pickserve_token}"
        self.pickserve = httpx.Client(base_url=settings.pickserve_url, timeout=30, headers=headers)
        self.studio = LabelStudio(settings.label_studio_url, settings.label_studio_token)
        self.map = TaskMap(settings.state)
        self.secret = self.map.setting("webhook_secret", lambda: secrets.token_urlsafe(24))
        self.post_lock = threading.Lock()
        pool = self._get("/v1/pool")
        self.classes: list[str] = pool["classes"]
        self.image_shape: list[int] | None = pool.get("image_shape")
        config = label_config(self.classes, self.image_shape)
        self.project = self.studio.project(settings.project, config)
        self.stop = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    def _get(self, path: str, **params: Any) -> Any:
        answer = self.pickserve.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    # ---- tasks out ---------------------------------------------------------------------

    def resume(self) -> None:
        """Tasks whose import was cut short (the bridge died between writing the map and
        hearing from Label Studio): find them in the project, or mark them for re-import."""
        pending = dict(self.map.with_status("pending"))
        if not pending:
            return
        for task in self.studio.tasks(self.project):
            item_id = task.get("data", {}).get("item_id")
            if item_id in pending:
                self.map.put(item_id, None, int(task["id"]), "open")
                pending.pop(item_id)
        for item_id in pending:
            self.map.put(item_id, None, None, "withdrawn", "import did not happen")

    def fill(self) -> int:
        """Lease items for the free task slots and import each as a task."""
        open_now = len(self.map.with_status("open", "pending"))
        wanted = self.settings.open_tasks - open_now
        if wanted <= 0:
            return 0
        params: dict[str, Any] = {"limit": wanted}
        if self.settings.show_predictions:
            params["include_predictions"] = "true"
        imported = 0
        for item in self._get("/v1/queries", **params)["items"]:
            known = self.map.get(item["item_id"])
            if known is not None and known[1] in ("open", "pending", "posted", "skipped"):
                continue  # already a task (or answered): never a duplicate
            self.map.put(item["item_id"], item["round"], None, "pending")
            task_id = self.studio.import_task(
                self.project,
                task_payload(item, self.classes, self.image_shape, self.settings.show_predictions),
            )
            self.map.put(item["item_id"], item["round"], task_id, "open")
            logger.info("task %s: item %s imported", task_id, item["item_id"])
            imported += 1
        return imported

    def renew(self) -> int:
        """Renew the leases of open tasks; withdraw the tasks whose item no longer waits."""
        open_tasks = dict(self.map.with_status("open"))
        withdrawn = 0
        ids = list(open_tasks)
        for start in range(0, len(ids), 500):
            answer = self.pickserve.post(
                "/v1/queries/renew", json={"item_ids": ids[start : start + 500]}
            )
            answer.raise_for_status()
            for item_id in answer.json()["gone"]:
                self.withdraw(item_id, open_tasks[item_id])
                withdrawn += 1
        return withdrawn

    def withdraw(self, item_id: str, task_id: int | None) -> None:
        """Take the task out of Label Studio, unless an annotation reached it meanwhile (the
        sweep then posts it: pickserve answers whether it still counts)."""
        if task_id is not None:
            task = self.studio.http.get(f"/api/tasks/{task_id}/")
            if task.status_code == 200 and task.json().get("annotations"):
                return
            self.studio.delete_task(task_id)
        self.map.put(item_id, None, task_id, "withdrawn", "its item no longer waits")
        logger.info("withdrew task %s: item %s no longer waits for a label", task_id, item_id)

    # ---- annotations in ----------------------------------------------------------------

    def answer(self, task: dict[str, Any], annotations: list[dict[str, Any]]) -> str | None:
        """Post the task's newest annotation as a label, once (the Idempotency-Key is the
        task's); a skipped task is recorded and gives no label. Returns the outcome."""
        item_id = task.get("data", {}).get("item_id")
        if not item_id or not annotations:
            return None
        latest = max(annotations, key=lambda a: int(a.get("id", 0)))
        with self.post_lock:
            known = self.map.get(item_id)
            if known is not None and known[1] in ("posted", "skipped"):
                return known[1]
            if latest.get("was_cancelled"):
                self.map.put(item_id, None, int(task["id"]), "skipped", "skipped in Label Studio")
                return "skipped"
            label = chosen_class(latest.get("result") or [], self.classes)
            if label is None:
                return None
            answer = self.pickserve.post(
                "/v1/feedback", json={"labels": [{"item_id": item_id, "label": label}]},
                headers={"Idempotency-Key": f"ls-{self.project}-{task['id']}"},
            )  # fmt: skip
            if answer.status_code >= 500:
                answer.raise_for_status()  # unclear: the next sweep repeats it with the same key
            outcome = answer.json().get("results", [{}])[0].get("outcome", str(answer.status_code))
            self.map.put(item_id, None, int(task["id"]), "posted", outcome)
            logger.info("task %s: item %s labeled %r: %s", task["id"], item_id, label, outcome)
            return str(outcome)

    def sweep(self) -> int:
        """Read every task of the project and post the annotations not posted yet (a
        webhook that was lost, or sent while the bridge was down)."""
        posted = 0
        for task in self.studio.tasks(self.project):
            annotations = task.get("annotations") or []
            item_id = task.get("data", {}).get("item_id")
            known = self.map.get(item_id) if item_id else None
            if annotations and (known is None or known[1] not in ("posted", "skipped")):
                posted += self.answer(task, annotations) is not None
        return posted

    def serve_webhooks(self) -> str | None:
        if not self.settings.webhook_port:
            return None
        bridge = self

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                given = self.headers.get(SECRET_HEADER, "")
                if not hmac.compare_digest(given.encode(), bridge.secret.encode()):
                    self.send_response(403)
                    self.end_headers()
                    return
                length = min(int(self.headers.get("content-length", "0") or 0), 16 * 2**20)
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                    task = payload.get("task") or {}
                    annotation = payload.get("annotation")
                    if annotation is not None:
                        bridge.answer(task, [annotation])
                    self.send_response(200)
                except Exception as error:  # the sweep will catch what this missed
                    logger.warning("webhook not applied (the sweep will retry): %s", error)
                    self.send_response(500)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug(format, *args)

        self.server = ThreadingHTTPServer(
            (self.settings.webhook_host, self.settings.webhook_port), Receiver
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        url = self.settings.webhook_url or (
            f"http://{self.settings.webhook_host}:{self.server.server_address[1]}/"
        )
        self.studio.webhook(self.project, url, self.secret)
        return url

    # ---- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        self.resume()
        url = self.serve_webhooks()
        print(f"bridge: project {self.settings.project!r} (id {self.project}) in "
              f"{self.settings.label_studio_url}; webhook {url or 'off (sweep only)'}",
              flush=True)  # fmt: skip
        last_sweep = 0.0
        while not self.stop.is_set():
            try:
                if time.monotonic() - last_sweep >= self.settings.sweep_s:
                    self.sweep()
                    last_sweep = time.monotonic()
                self.renew()
                self.fill()
            except httpx.HTTPError as error:
                logger.warning("bridge step failed (retrying): %s", error)
            self.stop.wait(self.settings.poll_s)
        if self.server is not None:
            self.server.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.labelstudio.bridge", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--pickserve-url", help="PICKSERVE_URL")
    parser.add_argument("--pickserve-token", help="PICKSERVE_TOKEN (label role)")
    parser.add_argument("--label-studio-url", help="PICKSERVE_LABEL_STUDIO_URL")
    parser.add_argument("--token", dest="label_studio_token", help="Label Studio API token "
                        "(PICKSERVE_LABEL_STUDIO_TOKEN)")  # fmt: skip
    parser.add_argument("--project", help="project title (PICKSERVE_PROJECT)")
    parser.add_argument("--state", type=Path, help="the item → task map (PICKSERVE_STATE)")
    parser.add_argument("--webhook-host", help="PICKSERVE_WEBHOOK_HOST")
    parser.add_argument("--webhook-port", type=int, help="PICKSERVE_WEBHOOK_PORT (0: off)")
    parser.add_argument("--webhook-url", help="the receiver's URL as Label Studio reaches it")
    parser.add_argument("--open-tasks", type=int, help="unannotated tasks kept open")
    parser.add_argument("--poll-s", type=float, help="renew/fill interval")
    parser.add_argument("--sweep-s", type=float, help="sweep interval")
    parser.add_argument("--show-predictions", action="store_true", default=None)
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = BridgeSettings(**args)
    except Exception as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        bridge = Bridge(settings)
    except httpx.HTTPError as error:
        print(f"error: cannot reach pickserve or Label Studio: {error}", file=sys.stderr)
        return 2
    try:
        bridge.run()
    except KeyboardInterrupt:
        bridge.stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
