"""The bridge itself: the item → task map and the loop that fills, renews, sweeps
and receives webhooks."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from service.tools.labelstudio.client import LabelStudio
from service.tools.labelstudio.payloads import (
    annotations_made,
    annotator_id,
    annotator_name,
    chosen_class,
    label_config,
    task_payload,
)
from service.tools.labelstudio.settings import BridgeSettings

logger = logging.getLogger("pickserve.labelstudio")
SECRET_HEADER = "X-Pickserve-Secret"


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
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS answered (task_id INTEGER NOT NULL, annotation_id "
            "INTEGER NOT NULL, outcome TEXT, PRIMARY KEY (task_id, annotation_id))"
        )

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

    def answered(self, task_id: int) -> set[int]:
        """The task's annotations handled already (posted, or skipped)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT annotation_id FROM answered WHERE task_id = ?", (task_id,)
            ).fetchall()
        return {int(r[0]) for r in rows}

    def record(self, task_id: int, annotation_ids: list[int], outcome: str) -> None:
        with self.lock:
            self.db.executemany(
                "INSERT OR IGNORE INTO answered (task_id, annotation_id, outcome) VALUES (?,?,?)",
                [(task_id, a, outcome) for a in annotation_ids],
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
        self.annotators: dict[int, str] = {}  # Label Studio user id -> labeler name
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
        """Lease items for the free task slots and import each as a task. An item that
        comes back after its task was answered wants another annotator's label (an overlap
        item, or one whose first label stopped counting): its task is opened again."""
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
            if known is not None and known[1] == "posted" and known[0] is not None:
                if self.reopen(item["item_id"], known[0]):
                    imported += 1
                    continue  # else its task is gone from Label Studio: a new one
            elif known is not None and known[1] in ("open", "pending", "posted", "skipped"):
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

    def reopen(self, item_id: str, task_id: int) -> bool:
        """Ask Label Studio for one more annotation of the task, from an annotator who has
        not made one (its overlap one above the annotations it has; Label Studio hands a
        task to nobody twice). False when the task is gone."""
        task = self.studio.task(task_id)
        if task is None:
            return False
        annotations = task.get("annotations") or []
        self.map.record(task_id, [int(a["id"]) for a in annotations], "before")
        made = annotations_made(annotations)
        if not self.studio.set_overlap(task_id, made + 1, made):
            return False
        self.map.put(item_id, None, task_id, "open", "wants another annotator")
        logger.info("task %s: item %s wants another annotator", task_id, item_id)
        return True

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
        """Take the task out of Label Studio. A task with annotations stays: while one is
        not posted yet, as it is (the sweep posts it: pickserve answers whether it still
        counts); once all are, it is closed (no more annotations asked for)."""
        if task_id is not None:
            task = self.studio.task(task_id)
            annotations = [] if task is None else task.get("annotations") or []
            if annotations:
                if {int(a["id"]) for a in annotations} - self.map.answered(task_id):
                    return
                made = annotations_made(annotations)
                self.studio.set_overlap(task_id, max(1, made), made)
                self.map.put(item_id, None, task_id, "posted", "no more labels wanted")
                logger.info("task %s: item %s needs no more labels", task_id, item_id)
                return
            self.studio.delete_task(task_id)
        self.map.put(item_id, None, task_id, "withdrawn", "its item no longer waits")
        logger.info("withdrew task %s: item %s no longer waits for a label", task_id, item_id)

    # ---- annotations in ----------------------------------------------------------------

    def answer(self, task: dict[str, Any], annotations: list[dict[str, Any]]) -> str | None:
        """Post each annotation of an open task not posted yet, in the order they were
        made, as a label of its annotator, once: the Idempotency-Key is the task's for its
        first and `ls-{project}-{task}-{annotation}` for the others (an overlap item's
        second annotator). A task whose first annotation is a skip is recorded and gives
        no label; a later skip leaves the task open for someone else. Returns the last
        outcome."""
        item_id = task.get("data", {}).get("item_id")
        if not item_id or not annotations:
            return None
        task_id = int(task["id"])
        with self.post_lock:
            known = self.map.get(item_id)
            if known is not None and known[1] in ("posted", "skipped"):
                return known[1]
            done = self.map.answered(task_id)
            outcome = None
            for annotation in sorted(annotations, key=lambda a: int(a.get("id", 0))):
                number = int(annotation.get("id", 0))
                if number in done:
                    continue
                if annotation.get("was_cancelled"):
                    self.map.record(task_id, [number], "skipped")
                    if not done:
                        self.map.put(item_id, None, task_id, "skipped", "skipped in Label Studio")
                        return "skipped"
                    continue
                posted = self._post(task_id, item_id, annotation, first=not done)
                if posted is None:
                    return outcome
                outcome = posted
                done.add(number)
            return outcome

    def _post(self, task_id: int, item_id: str, annotation: dict[str, Any],
              first: bool) -> str | None:  # fmt: skip
        """One annotation as a label; its outcome, or None when it was not posted (no
        class chosen yet; pickserve refused the bridge: the next sweep tries again)."""
        label = chosen_class(annotation.get("result") or [], self.classes)
        if label is None:
            return None
        body: dict[str, Any] = {"labels": [{"item_id": item_id, "label": label}]}
        labeler = self.annotator(annotation) if self.settings.annotators else None
        if labeler is not None:
            body["labeler"] = labeler
        key = f"ls-{self.project}-{task_id}" + ("" if first else f"-{annotation['id']}")
        answer = self.pickserve.post("/v1/feedback", json=body, headers={"Idempotency-Key": key})
        if answer.status_code >= 500:
            answer.raise_for_status()  # unclear: the next sweep repeats it with the same key
        if answer.status_code == 403 and "quarantined" in answer.text:
            outcome = "quarantined"  # their labels do not count: someone else's are wanted
            self.map.record(task_id, [int(annotation["id"])], outcome)
            logger.info("task %s: %s is quarantined: the label was not applied", task_id,
                        labeler)  # fmt: skip
            self.reopen(item_id, task_id)
            return outcome
        if answer.status_code in (401, 403):  # not posted: the next sweep tries again
            logger.error("task %s: pickserve refused the label (%s): %s", task_id,
                         answer.status_code, answer.text[:300])  # fmt: skip
            return None
        outcome = str(answer.json().get("results", [{}])[0].get("outcome", answer.status_code))
        self.map.record(task_id, [int(annotation["id"])], outcome)
        self.map.put(item_id, None, task_id, "posted", outcome)
        logger.info("task %s: item %s labeled %r by %s: %s", task_id, item_id, label, labeler,
                    outcome)  # fmt: skip
        return outcome

    def annotator(self, annotation: dict[str, Any]) -> str | None:
        """The pickserve labeler name of the annotation's Label Studio user (`payloads.
        annotator_name`), looked up once per user; None when the annotation names none."""
        user_id = annotator_id(annotation)
        if user_id is None:
            return None
        if user_id not in self.annotators:
            self.annotators[user_id] = annotator_name(user_id, self.studio.user(user_id))
        return self.annotators[user_id]

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
